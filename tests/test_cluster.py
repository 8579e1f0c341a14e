"""End to end on a real local Ray cluster: Serve feedback, learner on a logical GPU, workers on
CPUs, metrics on the Prometheus endpoint, a killed worker replaced without losing shipped data."""
import socket
import time
import urllib.request

import pytest

ray = pytest.importorskip("ray")

from cluster.feedback_service import APP_NAME  # noqa: E402
from cluster.launch import launch  # noqa: E402
from configs.loader import CONFIG_DIR, load_config  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_port():
    port = free_port()
    ray.init(address="local", num_cpus=6, num_gpus=1, include_dashboard=False, _metrics_export_port=port,
             log_to_driver=False)
    yield port
    ray.shutdown()


def quick_config(**extra):
    overrides = ["env.town=Generated", "env.traffic=regular", "workers.num_workers=2", "workers.random_steps=200",
                 "learner.learning_starts=200", "learner.batch_size=16", "learner.samples_per_insert=4",
                 "learner.publish_every_updates=2", "run.shutdown_ray=false", "eval.routes=[0]",
                 "eval.max_steps=100"] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(CONFIG_DIR / "quickstart.yaml", overrides)


def run_until(runtime, steps, timeout_s=240):
    started = time.monotonic()
    report = {}
    while runtime.env_steps < steps:
        assert time.monotonic() - started < timeout_s, f"stuck at {runtime.env_steps} env steps"
        report = runtime.step()
    return report


def test_training_on_ray_with_a_worker_killed_mid_run(metrics_port):
    runtime = launch(quick_config())
    try:
        assert runtime.use_gpu  # the learner asked for the (logical) GPU; workers run on CPUs
        assert ray.get_actor("mentor-learner") is not None
        from ray import serve

        assert APP_NAME in serve.status().applications
        report = run_until(runtime, 800)
        shipped_before = report["replay_inserted_total"]

        runtime.kill_worker(0)
        report = run_until(runtime, runtime.env_steps + 800)
        assert runtime.replaced_workers >= 1
        assert report["replay_inserted_total"] >= shipped_before  # nothing shipped was lost
        assert report["learner_updates"] > 0 and report["policy_version"] > 0
        assert report["feedback/availability"] > 0.9

        # A dead feedback replica: its items go unanswered (mask 0) until Serve replaces it; no hang.
        (replica,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
                      if "SERVE_REPLICA" in a["name"] and "mentor-feedback" in a["name"]]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=False)
        report = run_until(runtime, runtime.env_steps + 600)
        assert report["env_steps"] >= shipped_before + 1400

        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        for name in ("ray_mentor_env_steps", "ray_mentor_learner_updates", "ray_mentor_replay_size",
                     "ray_mentor_feedback_pending", "ray_mentor_policy_lag"):
            assert name in body, f"{name} missing from the metrics endpoint"
    finally:
        runtime.shutdown()
    from ray import serve

    assert APP_NAME not in serve.status().applications  # the app does not outlive the run


def test_clip_reward_through_the_serve_deployment(metrics_port, tmp_path):
    import torch

    from inference.clip_model import ClipModel, ClipSource

    torch.manual_seed(0)
    checkpoint = ClipModel.load(ClipSource("MentorCLIP-Tiny")).save(tmp_path / "clip")
    runtime = launch(quick_config(**{"feedback.model": "expert+clip", "feedback.wanted": "[vlm_action,clip_margin]",
                                     "feedback.clip.checkpoint": str(checkpoint), "learner.clip_reward_scale": 0.25}))
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
    config = quick_config(**{"env.backend": "carla", "env.carla.executable": str(script), "env.carla.port": 0,
                             "env.carla.ready_timeout_s": 2, "env.carla.log_dir": str(tmp_path / "logs"),
                             "workers.num_workers": 1, "workers.max_failures_in_a_row": 2, "feedback.mode": "off"})
    runtime = launch(config)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)failed 2 times in a row.*not ready within 2 s.*last log lines"):
            run_until(runtime, 1, timeout_s=120)
        assert runtime.replaced_workers == 1
        assert len(list((tmp_path / "logs").glob("carla-*.log"))) == 2  # one log per launch, kept
    finally:
        runtime.shutdown()
