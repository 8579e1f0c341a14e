"""Multi-node placement on one machine (`ray.cluster_utils.Cluster`), the way `ray_cluster.yaml`
lays a real cluster out: a GPU head that hosts the learner, and rollout nodes that declare a
custom `carla_server` resource (one unit per CARLA server their GPU can hold).

Mentor's own wiring (`cluster.launch.launch`) runs against it with
`workers.server_resource=carla_server`; the test checks where every role landed and that the
run trains.
"""

import json
import time
import urllib.request

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from configs.loader import CONFIG_DIR, load_config  # noqa: E402
from runtimes.registry import make_runtime  # noqa: E402

pytestmark = pytest.mark.ray

SERVERS_PER_NODE = 2
ROLLOUT_NODES = 2
NUM_WORKERS = SERVERS_PER_NODE * ROLLOUT_NODES


@pytest.fixture
def cluster():
    # One GPU head (logical GPU) and two CPU-only rollout nodes, as in ray_cluster.yaml where the
    # worker type declares GPU 0 (its GPU belongs to the CARLA servers) and carla_server K.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "num_gpus": 1,
            "include_dashboard": True,
            "dashboard_port": 0,
            "object_store_memory": 200 * 1024 * 1024,
        },
    )
    for _ in range(ROLLOUT_NODES):
        cluster.add_node(
            num_cpus=3, num_gpus=0, resources={"carla_server": SERVERS_PER_NODE}, object_store_memory=200 * 1024 * 1024
        )
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def multinode_config(address: str):
    overrides = [
        "env.town=Generated",
        "env.traffic=regular",
        f"workers.num_workers={NUM_WORKERS}",
        "workers.server_resource=carla_server",
        "workers.random_steps=100",
        "learner.learning_starts=100",
        "learner.batch_size=16",
        "learner.samples_per_insert=4",
        "learner.publish_every_updates=2",
        "run.shutdown_ray=false",
        "run.total_env_steps=1000000",  # the test steps the runtime to its own counts
        f"run.ray_address={address}",
    ]
    return load_config(CONFIG_DIR / "quickstart.yaml", overrides)


def wait_for_workers(expected: int, timeout_s: float = 60.0) -> list:
    from ray.util.state import list_actors

    deadline = time.monotonic() + timeout_s
    while True:
        actors = list_actors(
            filters=[("class_name", "=", "WorkerActor"), ("state", "=", "ALIVE")],
            detail=True,
            raise_on_missing_output=False,
        )
        if len(actors) >= expected or time.monotonic() > deadline:
            return actors
        time.sleep(0.5)


def scrape_metrics(timeout_s: float = 30.0, wanted: tuple[str, ...] = ()) -> tuple[set[str], list[str]]:
    """Mentor's metric names and sample lines on every node's Prometheus endpoint (each node
    exports the metrics of the actors it runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        names, lines = set(), []
        for node in ray.nodes():
            port = node.get("MetricsExportPort")
            if not node["Alive"] or not port:
                continue
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                continue
            lines += [line for line in body.splitlines() if line.startswith("ray_mentor_")]
            names |= {line.split("{")[0].split(" ")[0] for line in lines}
        if all(w in names for w in wanted) or time.monotonic() > deadline:
            return names, lines
        time.sleep(1.0)


@pytest.mark.slow
def test_learner_on_gpu_head_and_rollouts_spread_by_carla_server(cluster, tmp_path):
    started = time.monotonic()
    head_id = cluster.head_node.node_id
    rollout_ids = {node.node_id for node in cluster.worker_nodes}
    runtime = make_runtime(multinode_config(cluster.address), tmp_path / "multinode", transport="ray")
    try:
        assert runtime.transport.use_gpu
        runtime.step()  # the workers start with the first step

        # The learner holds the only (logical) GPU, which is on the head.
        from ray.util.state import list_actors

        (learner,) = list_actors(filters=[("name", "=", "mentor-learner-multinode")], detail=True)
        assert learner.node_id == head_id, "the learner should run on the GPU head"

        # Four rollout actors, two per rollout node: each holds one carla_server unit.
        workers = wait_for_workers(NUM_WORKERS)
        placement = {}
        for actor in workers:
            placement[actor.node_id] = placement.get(actor.node_id, 0) + 1
        assert len(workers) == NUM_WORKERS, f"only {len(workers)} rollout actors started"
        assert set(placement) == rollout_ids, f"rollout actors on {placement}, expected the rollout nodes"
        assert sorted(placement.values()) == [SERVERS_PER_NODE] * ROLLOUT_NODES, placement
        assert head_id not in placement  # the head declares no carla_server
        # Every carla_server unit is taken: a fifth rollout actor could not be placed.
        assert ray.available_resources().get("carla_server", 0.0) == 0.0
        assert ray.cluster_resources()["carla_server"] == NUM_WORKERS

        # It trains: env steps flow from the rollout nodes into the learner on the head.
        report = {}
        deadline = time.monotonic() + 75
        while runtime.env_steps < 400 or report.get("learner_updates", 0) <= 0:
            assert time.monotonic() < deadline, f"stuck at {runtime.env_steps} env steps, report {report}"
            report = runtime.step().metrics
        assert report["env_steps"] >= 400 and report["learner_updates"] > 0
        assert report["replay_size"] > 0

        # The metrics the Grafana dashboard reads exist under these exact names (counters get _total).
        core = (
            "ray_mentor_env_steps_total",
            "ray_mentor_learner_updates_total",
            "ray_mentor_replay_size",
            "ray_mentor_feedback_pending",
            "ray_mentor_policy_lag",
        )
        names, lines = scrape_metrics(wanted=core)
        missing = [name for name in core if name not in names]
        assert not missing, f"{missing} not exported; found {sorted(names)}"
        # The dashboard filters on SessionName and groups worker metrics by `worker`.
        steps = [line for line in lines if line.startswith("ray_mentor_env_steps_total{")]
        assert steps and all('SessionName="' in line and 'worker="' in line for line in steps), steps[:2]
        print(
            json.dumps(
                {
                    "placement": {("head" if k == head_id else k[:8]): v for k, v in placement.items()},
                    "env_steps": report["env_steps"],
                    "learner_updates": report["learner_updates"],
                    "metrics": sorted(names),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
        )
    finally:
        runtime.shutdown()
