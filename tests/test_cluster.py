"""End to end on a real local Ray cluster: Serve feedback, learner on a logical GPU, workers on
CPUs, metrics on the Prometheus endpoint, a killed worker replaced without losing shipped data."""

import socket
import time
import urllib.request

import pytest

ray = pytest.importorskip("ray")

from configs.loader import CONFIG_DIR, load_config  # noqa: E402
from learners.replay import ReplayBuffer  # noqa: E402
from learners.replay_journal import ReplayJournal  # noqa: E402
from runner.checkpoint import find_checkpoint, write_checkpoint  # noqa: E402
from runtimes.registry import make_runtime  # noqa: E402

pytestmark = pytest.mark.ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_port():
    port = free_port()
    ray.init(
        address="local", num_cpus=6, num_gpus=1, include_dashboard=False, _metrics_export_port=port, log_to_driver=False
    )
    yield port
    ray.shutdown()


def quick_config(*extra, **overrides):
    return load_config(
        [CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"],
        [
            "workers.num_workers=2",
            "workers.random_steps=200",
            "learner.learning_starts=200",
            "learner.batch_size=16",
            "learner.samples_per_insert=4",
            "run.shutdown_ray=false",
            "run.total_env_steps=1000000",  # the tests step the runtime to their own counts
            "eval.max_steps=100",
            *extra,
            *(f"{k}={v}" for k, v in overrides.items()),
        ],
    )


def run_until(runtime, steps, timeout_s=240):
    started = time.monotonic()
    report = {}
    while runtime.env_steps < steps:
        assert time.monotonic() - started < timeout_s, f"stuck at {runtime.env_steps} env steps"
        report = runtime.step().metrics
    return report


def until_workers_reported(runtime, report):
    """Rows reach the learner before the workers' first report does: wait for that report."""
    while report["worker_env_steps"] == 0:
        report = runtime.step().metrics
    return report


def rows_by_stream(run_dir) -> dict[int, list[int]]:
    """Steps of each stream in the run's replay, rebuilt from its journal on disk."""
    journal = ReplayJournal(run_dir / "replay")
    replay = ReplayBuffer(max(16, sum(segment.rows for segment in journal.segments)))
    journal.rebuild(replay)
    streams, steps = replay.arrays["stream_id"][: len(replay)], replay.arrays["step"][: len(replay)]
    return {int(s): sorted(steps[streams == s].tolist()) for s in set(streams.tolist())}


def assert_same_metric_names_as_local_mode(ray_keys: set[str], run_dir) -> None:
    from runtimes.registry import make_runtime

    local = make_runtime(quick_config("run.mode=local", "workers.num_workers=1"), run_dir)
    try:
        keys = set()
        while "loss/critic_loss" not in keys:
            keys = set(local.step().metrics)
    finally:
        local.shutdown()
    sometimes = {"episode_return", "route_completion", "driving_score"}  # once an episode has finished
    assert keys - sometimes == ray_keys - sometimes


def test_training_on_ray_with_a_worker_killed_mid_run(metrics_port, tmp_path):
    runtime = make_runtime(quick_config(), tmp_path / "killed", transport="ray")
    try:
        assert runtime.transport.use_gpu  # the learner asked for the (logical) GPU; workers run on CPUs
        assert ray.get_actor("mentor-learner-killed") is not None
        from ray import serve

        assert (
            runtime.transport.app_name == "mentor-feedback-killed"
            and runtime.transport.app_name in serve.status().applications
        )
        ray_keys = set(run_until(runtime, 800))
        assert_same_metric_names_as_local_mode(ray_keys, tmp_path / "local")
        killed = runtime.slots[0].stream_id
        runtime.kill_worker(0)
        report = run_until(runtime, runtime.env_steps + 800)
        assert runtime.counters.replaced_workers >= 1
        assert report["learner_updates"] > 0 and report["policy_version"] > 0
        assert report["feedback/availability"] > 0.9

        # A dead feedback replica: its items go unanswered (mask 0) until Serve replaces it; no hang.
        (replica,) = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if "SERVE_REPLICA" in a["name"] and runtime.transport.app_name in a["name"]
        ]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=False)
        run_until(runtime, runtime.env_steps + 600)

        # Nothing shipped was lost: drain the workers, then count rows per stream in the replay.
        runtime.finish()
        stored = rows_by_stream(tmp_path / "killed")
        reports = runtime.worker_reports()
        for stream, report in reports.items():
            assert stored[stream] == list(range(len(stored[stream]))), f"stream {stream} has a gap"
            if stream == killed:  # what it shipped before its last report arrived, and maybe more
                assert len(stored[stream]) >= report["shipped_rows"]
            else:  # drained: every row it shipped is in the replay, and nothing else
                assert len(stored[stream]) == report["shipped_rows"], stream
        assert set(stored) == set(reports)

        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        for name in (
            "ray_mentor_env_steps",
            "ray_mentor_learner_updates",
            "ray_mentor_replay_size",
            "ray_mentor_feedback_pending",
            "ray_mentor_policy_lag",
            "ray_mentor_feedback_latency_s_bucket",
            # counters that may still be 0 exist from the start, so a dashboard shows 0, not "no data"
            "ray_mentor_backpressure_waits",
            "ray_mentor_simulator_failures",
            "ray_mentor_feedback_failed_calls",
        ):
            assert name in body, f"{name} missing from the metrics endpoint"
    finally:
        runtime.shutdown()
    from ray import serve

    assert "mentor-feedback-killed" not in serve.status().applications  # the app does not outlive the run


def test_resume_on_ray_continues_with_the_same_counters_replay_and_clock(metrics_port, tmp_path):
    run_dir = tmp_path / "resume"
    first = make_runtime(quick_config("learner.max_insert_lead=200"), run_dir, transport="ray")
    try:
        report = run_until(first, 600)
        # The workers waited for the learner: at most the lead (plus the chunks in flight) ahead of
        # the inserts the ratio expects for the updates done (debug overlay: batch 16, ratio 4, starts 200).
        # In flight per worker: 4 unanswered chunks, the one just shipped, and one more that lands while
        # the worker reads the credit of an earlier add (measured once: 12 rows past 5 chunks a worker).
        # Without backpressure the lead is thousands of rows.
        expected = 200 + max(0, -(-report["learner_updates"] * 16 // 4) - 16)
        assert report["env_steps"] - expected <= 200 + 2 * 6 * 16
        saved = first.finish().metrics  # every worker's rows are in the replay now
        write_checkpoint(run_dir, first)
    finally:
        first.shutdown()
    second = make_runtime(quick_config(), run_dir, transport="ray")
    try:
        second.load(find_checkpoint(run_dir))  # before anything runs
        assert (second.env_steps, second.updates) == (saved["env_steps"], saved["learner_updates"])
        report = second.step().metrics
        assert report["policy_version"] >= saved["policy_version"]
        assert report["replay_inserted_total"] >= saved["replay_inserted_total"]  # nothing dropped by the load
        report = until_workers_reported(second, run_until(second, saved["env_steps"] + 400))
        assert report["random_actions"] == 0  # the clock was past random_steps: no second warm-up
        assert min(second.worker_reports()) >= 2  # new streams: 0 and 1 were the first run's
        assert second.counters.next_stream_id >= 4
    finally:
        second.shutdown()


def test_a_killed_learner_stops_the_run_by_name_and_the_resume_keeps_every_stored_row(metrics_port, tmp_path):
    from core import RoleFailed

    run_dir = tmp_path / "learner-killed"
    first = make_runtime(quick_config(), run_dir, transport="ray")
    try:
        run_until(first, 400)
        write_checkpoint(run_dir, first)
        saved = first.env_steps
        report = run_until(first, saved + 400)
        stored, at_kill = report["replay_inserted_total"], report["env_steps"]  # stored (and journaled)
        ray.kill(first.transport.learner_actor, no_restart=True)
        with pytest.raises(RoleFailed, match="the learner failed: its process died"):
            for _ in range(30):  # the workers' next ships fail; the learner, not a worker, is named
                first.step()
        assert first.counters.replaced_workers == 0
    finally:
        first.shutdown()
    second = make_runtime(quick_config(), run_dir, transport="ray")
    try:
        second.load(find_checkpoint(run_dir))
        assert second.env_steps >= at_kill > saved  # rows after the checkpoint came back from the journal
        report = second.step().metrics
        assert report["replay_inserted_total"] >= stored
        report = until_workers_reported(second, run_until(second, second.env_steps + 200))
        assert report["random_actions"] == 0
    finally:
        second.shutdown()


def test_two_runs_on_one_cluster_keep_their_own_feedback_apps(metrics_port, tmp_path):
    from ray import serve

    shared = ("workers.num_workers=1", "learner.gpu_fraction=0.5")  # the one (logical) GPU, shared
    first = make_runtime(quick_config(*shared), tmp_path / "two-a", transport="ray")
    second = make_runtime(quick_config(*shared), tmp_path / "two-b", transport="ray")
    try:
        assert {"mentor-feedback-two-a", "mentor-feedback-two-b"} <= set(serve.status().applications)
        started = time.monotonic()
        while min(first.env_steps, second.env_steps) < 300:  # both collect, side by side
            assert time.monotonic() - started < 240
            first.step(), second.step()
        first.shutdown()  # deletes its own app only
        assert "mentor-feedback-two-b" in serve.status().applications
        assert "mentor-feedback-two-a" not in serve.status().applications
        report = run_until(second, second.env_steps + 400)
        assert report["feedback/availability"] >= 0.95 and report["feedback/availability_total"] >= 0.95
    finally:
        first.shutdown()  # a second call does nothing
        second.shutdown()


def test_clip_reward_through_the_serve_deployment(metrics_port, tmp_path):
    import torch

    from feedback.clip_model import ClipModel, ClipSource

    torch.manual_seed(0)
    checkpoint = ClipModel.load(ClipSource("MentorCLIP-Tiny")).save(tmp_path / "clip")
    runtime = make_runtime(
        quick_config(
            **{
                "feedback.model": "expert+clip",
                "feedback.wanted": "[vlm_action,clip_margin]",
                "feedback.clip.checkpoint": str(checkpoint),
                "learner.clip_reward_scale": 0.25,
            }
        ),
        tmp_path / "clip",
        transport="ray",
    )
    try:
        report = run_until(runtime, 700)
        assert report["replay_feedback_clip_margin"] > 0.5 and report["replay_feedback_vlm_action"] > 0.5
        assert "loss/clip_bonus" in report  # the learner shaped the sampled rewards
    finally:
        runtime.shutdown()


def test_a_carla_server_that_never_gets_ready_fails_its_actor_and_then_the_run(metrics_port, tmp_path):
    """Each rollout actor launches its own server (env.carla.launch). The stand-in program (NOT
    CARLA; tests/standin_carla_server.py) hangs without opening its port, as a wedged UE4 does:
    the actor fails with the server's log, the driver replaces it, and a slot that keeps failing
    stops the run with the cause instead of retrying forever."""
    import sys
    from pathlib import Path

    script = tmp_path / "CarlaUE4.sh"
    standin = Path(__file__).with_name("standin_carla_server.py")
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{standin}" --mode hang "$@"\n')
    script.chmod(0o755)
    config = quick_config(
        **{
            "env.backend": "carla",
            "env.carla.executable": str(script),
            "env.carla.port": 0,
            "env.carla.ready_timeout_s": 2,
            "env.carla.log_dir": str(tmp_path / "logs"),
            "workers.num_workers": 1,
            "workers.max_failures_in_a_row": 2,
            "feedback.mode": "off",
        }
    )
    runtime = make_runtime(config, tmp_path / "carla", transport="ray")
    try:
        with pytest.raises(RuntimeError, match=r"(?s)failed 2 times in a row.*not ready within 2 s.*last log lines"):
            run_until(runtime, 1, timeout_s=120)
        assert runtime.counters.replaced_workers == 1
        assert len(list((tmp_path / "logs").glob("carla-*.log"))) == 2  # one log per launch, kept
    finally:
        runtime.shutdown()


def test_local_and_ray_stop_at_the_same_env_step_for_the_same_budget(metrics_port, tmp_path):
    """One runtime skeleton: the budget is granted call by call, so both transports take exactly
    run.total_env_steps env steps (the old Ray driver overshot by up to workers x pull interval),
    and after finish() the learner holds every one of them."""
    budget = ("run.total_env_steps=300", "workers.pull_weights_every_steps=64")
    taken = {}
    for transport in ("local", "ray"):
        runtime = make_runtime(quick_config(*budget), tmp_path / transport, transport=transport)
        try:
            while not runtime.done():
                runtime.step()
            report = runtime.finish().metrics
            taken[transport] = (sum(r["env_steps"] for r in runtime.worker_reports().values()), report["env_steps"])
        finally:
            runtime.shutdown()
    assert taken == {"local": (300, 300), "ray": (300, 300)}
