"""benchmarks/cluster_scale.py's measurements at tiny scale on a two-node Cluster of this test's
own: two synthetic workers ship to the real learner through the real driver loop, two clients
drive the real feedback app with one replica; nothing is lost on either path."""

import pytest

ray = pytest.importorskip("ray")

from benchmarks.cluster_scale import (  # noqa: E402
    ProcessCpu,
    delete_feedback_app,
    measure_feedback,
    measure_ingest,
    scale_config,
    start_cluster,
    start_worker_pool,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster(nodes=1, slots_per_node=2, head_cpus=2)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_every_shipped_transition_reaches_the_learner(cluster, tmp_path):
    pool = start_worker_pool(2)
    result = measure_ingest(scale_config(2, train=False), pool, 1.0, tmp_path, ProcessCpu())
    assert result["shipped_transitions"] == result["learner_transitions"] > 0
    assert result["shipped_rows"] == result["learner_rows"] >= result["shipped_transitions"]  # + final rows
    assert result["transitions_per_s"] > 0 and result["driver_steps"] > 0
    assert result["cpu"]["cpu_s"]["learner"] > 0 and result["cpu"]["cpu_s"]["workers"] > 0
    for actor in pool:
        ray.kill(actor)  # their slots go to the feedback clients


def test_every_feedback_item_is_answered(cluster):
    try:
        rows, _ = measure_feedback(
            scale_config(2, train=False), replicas=1, client_counts=[2], seconds=1.0, cpu=ProcessCpu(), warmup_s=0.5
        )
    finally:
        delete_feedback_app()
    row = rows[0]
    assert row["sent"] == row["answered"] > 0
    assert row["failed_calls"] == 0 and row["unanswered"] == 0
    assert row["items_per_s"] > 0 and row["cpu"]["cpu_s"]["feedback_replicas"] > 0
