"""Stopping a run and what it leaves behind (cluster/): a stop whose drain is bounded with a slow
feedback model, the Serve app deleted by the run's janitor after its driver is SIGKILLed, and a local
cluster started by Mentor that listens on loopback only, keeps its auth token owner-only and does
not outlive a killed driver."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from workers.pending import PendingTransitions

ROOT = Path(__file__).resolve().parents[1]
REAPER = ROOT / "cluster" / "local_reaper.py"
SLOW_MODEL_S = 1.0  # per batch: the bug report's model
STOP_BOUND_S = 10.0  # finish() with that model; sequential drains of whole run() calls took 20 s and more
CLEANUP_BOUND_S = 15.0  # a killed driver's cluster processes are gone by then (the agents took 60 s)
APP_GONE_BOUND_S = 90.0  # a killed driver's Serve app is deleted by then
# Processes of a local cluster that listen (names as ss shows them, cut to 15 characters by Linux).
EXPECTED_LISTENERS = {"gcs_server", "raylet", "ray::DashboardA", "ray::RuntimeEnv"}


# ------------------------------------------------------------------------------- helpers


def descendants(root: int) -> dict[int, str]:
    """pid -> name of `root` and every process under it (from /proc)."""
    children, names = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if rest[0] != "Z":
            children.setdefault(int(rest[1]), []).append(int(entry))
            names[int(entry)] = name
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in names:
            found[pid] = names[pid]
            todo.extend(children.get(pid, []))
    return found


def listening(pids) -> dict[str, str]:
    """Listening TCP address -> process name, for the sockets of `pids` (ss -ltnp)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        owner = re.search(r'\("([^"]+)",pid=(\d+)', line)
        if owner and int(owner.group(2)) in pids:
            found[line.split()[3]] = owner.group(1)
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition, timeout_s: float, poll_s: float = 0.25) -> float:
    """Seconds until `condition()` held; fails after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s:g} s"
        time.sleep(poll_s)
    return time.monotonic() - started


def quick_config(*extra):
    from configs.loader import CONFIG_DIR, load_config

    return load_config(
        [CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"],
        ["learner.batch_size=16", "run.shutdown_ray=false", "run.total_env_steps=1000000", *extra],
    )


# -------------------------------------------------------------------- pieces without Ray


def test_expire_all_ships_unanswered_rows_unavailable_in_step_order():
    pending = PendingTransitions(deadline_s=100.0)
    for step in range(3):
        pending.add(0, step, {"step": step}, ("vlm_action",))
    pending.complete_env(0, 0, reward=1.0)
    pending.complete_env(0, 1, reward=1.0)  # step 2's env outcome is not known yet: it stays
    assert pending.pop_ready() == []  # deadlines far off
    rows = pending.pop_ready(expire_all=True)
    assert [r["step"] for r in rows] == [0, 1] and all(r["vlm_action_mask"] == 0.0 for r in rows)
    assert pending.counters.expired == 2 and len(pending) == 1


def test_a_token_file_is_created_and_kept_owner_only(tmp_path, monkeypatch):
    from cluster.launch import secure_token_file, token_path

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    secure_token_file(starts_cluster=True)  # what Ray would otherwise write with mode 0644
    path = token_path()
    assert path == tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    path.chmod(0o644)  # e.g. `ray get-auth-token --generate`
    secure_token_file(starts_cluster=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")
@pytest.mark.parametrize("driver_dies", [True, False])
def test_the_reaper_ends_a_dead_drivers_orphans_and_nothing_after_a_clean_shutdown(driver_dies):
    """A node process (bash) with two children (the agents); the node process dies first, as the
    raylet does with its driver, then the driver's pipe closes (death) or speaks (clean shutdown)."""
    node = subprocess.Popen(["bash", "-c", "sleep 300 & sleep 300 & wait"])
    read_end, write_end = os.pipe()
    reaper = subprocess.Popen([sys.executable, str(REAPER), str(node.pid)], stdin=read_end, stderr=subprocess.DEVNULL)
    os.close(read_end)
    orphans = []
    try:
        wait_until(lambda: len(descendants(node.pid)) == 3, 10)
        orphans = [pid for pid in descendants(node.pid) if pid != node.pid]
        time.sleep(1.5)  # a scan has seen them
        node.kill()
        node.wait()
        if not driver_dies:
            os.write(write_end, b"q")
        os.close(write_end)
        reaper.wait(timeout=10)
        if driver_dies:
            wait_until(lambda: not any(alive(pid) for pid in orphans), 5)
        else:
            assert all(alive(pid) for pid in orphans)
    finally:
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.sim
def test_a_stopping_worker_leaves_its_run_and_drains_unanswered_rows_unavailable():
    """A model that never answers holds the worker in backpressure; request_stop (from another
    thread, as the actor's control call does) ends run() at once, and a short drain ships every row."""
    from learners.replay import ReplayBuffer
    from tests.test_rollout_worker import config, worker
    from workers.feedback_client import FeedbackClient

    class Unanswered:
        def __init__(self):
            self.released = threading.Event()

        def send(self, items):
            return lambda timeout_s: (self.released.wait(timeout_s), [])[1]

    transport, replay = Unanswered(), ReplayBuffer(4096)
    cfg = config(bundle_steps=4, deadline_s=60.0, max_pending_age_s=30.0)
    w = worker(cfg, FeedbackClient(transport.send, "async", timeout_s=60.0), replay)
    try:
        runner = threading.Thread(target=w.run, args=(10_000,))
        runner.start()
        wait_until(lambda: w.stats.backpressure_waits > 0, 60)
        stopped = time.monotonic()
        w.request_stop()
        runner.join(timeout=5)
        assert not runner.is_alive() and time.monotonic() - stopped < 2.0
        held = w.feedback_report()["pending"]
        started = time.monotonic()
        w.drain(timeout_s=0.2)
        assert time.monotonic() - started < 2.0
    finally:
        transport.released.set()
        w.close()
    n = len(replay)
    assert held > 0 and n == w.stats.shipped_rows == w.stats.env_steps + w.stats.episodes
    assert w.feedback_report()["pending"] == 0
    assert np.all(replay.arrays["vlm_action_mask"][:n] == 0.0)


# --------------------------------------------------------------- a local cluster of its own

_DRIVER = """
import json, sys, time
import ray
from cluster.launch import connect
from configs.loader import CONFIG_DIR, load_config
connect(load_config([CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"], ["run.ray_address=local"]))
print(json.dumps({"node_ip": ray.util.get_node_ip_address()}), flush=True)
time.sleep(600)
"""


@pytest.mark.ray
@pytest.mark.skipif(shutil.which("ss") is None or not sys.platform.startswith("linux"), reason="needs ss and /proc")
def test_a_local_cluster_listens_on_loopback_keeps_its_token_private_and_dies_with_its_driver(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "MENTOR_RAY"))}
    env["HOME"] = str(home)  # no token yet: Ray's default for a new local cluster would write one, 0644
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    cluster = {}
    try:
        assert json.loads(driver.stdout.readline())["node_ip"] == "127.0.0.1"
        # The agents and metrics exporters start beside the raylet: wait until they listen too.
        wait_until(lambda: EXPECTED_LISTENERS <= set(listening(set(descendants(driver.pid))).values()), 60, poll_s=1.0)
        time.sleep(2.0)  # the agents' other listeners
        cluster = descendants(driver.pid)
        sockets = listening(set(cluster))
        assert EXPECTED_LISTENERS <= set(sockets.values()), sockets
        assert all(is_loopback(address) for address in sockets), sockets
        token = home / ".ray" / "auth_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        driver.kill()  # SIGKILL: nothing of the driver's own clean-up runs
        driver.wait()
        left = [pid for pid in cluster if pid != driver.pid]
        wait_until(lambda: not any(alive(pid) for pid in left), CLEANUP_BOUND_S)
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in cluster:
            if pid != driver.pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------ a cluster that the runs join


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


_JOINED_DRIVER = """
import sys, time
from pathlib import Path
from runtimes.registry import make_runtime
from configs.loader import CONFIG_DIR, load_config
config = load_config([CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"],
                     ["workers.num_workers=1", "run.ray_address=" + sys.argv[1]])
runtime = make_runtime(config, Path(sys.argv[2]), transport="ray")
print(runtime.transport.app_name, flush=True)
time.sleep(600)
"""


@pytest.mark.ray
def test_the_janitor_deletes_a_killed_drivers_serve_app_and_no_other(cluster, tmp_path):
    from ray import serve

    from cluster.feedback_service import APP_PREFIX, JANITOR_NAMESPACE, janitor_name

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Bystander:
        def __call__(self):
            return "still here"

    other = f"{APP_PREFIX}-another-run"
    serve.run(Bystander.bind(), name=other, route_prefix=None)
    address = cluster.get_runtime_context().gcs_address
    run_dir = tmp_path / "killed-driver"
    driver = subprocess.Popen(
        [sys.executable, "-c", _JOINED_DRIVER, address, str(run_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        app = driver.stdout.readline().strip()
        assert app == f"{APP_PREFIX}-killed-driver", "the driver did not start"
        assert app in serve.status().applications
        cluster.get_actor(janitor_name("killed-driver"), namespace=JANITOR_NAMESPACE)
        driver.kill()
        driver.wait()
        took = wait_until(lambda: app not in serve.status().applications, APP_GONE_BOUND_S, poll_s=1.0)
        print(f"the killed driver's app was deleted {took:.1f} s after the kill")
    finally:
        if driver.poll() is None:
            driver.kill()
    assert other in serve.status().applications  # another run's app is not touched
    wait_until(
        lambda: not [a for a in cluster.util.list_named_actors(all_namespaces=True) if "killed-driver" in a["name"]], 30
    )  # learner and janitor gone too
    serve.delete(other)


@pytest.mark.ray
def test_a_second_janitor_of_a_run_retires_the_first(cluster):
    from cluster.feedback_service import start_janitor

    @cluster.remote(num_cpus=0)
    class Learner:
        pass

    learner = Learner.remote()
    first = start_janitor("resumed-run", "no-such-app", learner)
    cluster.get(first.__ray_ready__.remote())
    second = start_janitor("resumed-run", "no-such-app", learner)  # a resumed run keeps its id
    with pytest.raises(cluster.exceptions.RayActorError):
        cluster.get(first.__ray_ready__.remote(), timeout=30)
    cluster.get(second.__ray_ready__.remote(), timeout=30)
    cluster.kill(second)
    cluster.kill(learner)


@pytest.mark.ray
def test_a_stop_with_a_slow_model_is_bounded_and_keeps_every_shipped_row(cluster, tmp_path):
    """Workers behind a 1 s/batch model, each in a long run() call (1000 ticks): finish() ends the
    calls at the next tick and drains all workers at once, in a bounded time."""
    from runtimes.registry import make_runtime
    from tests.test_cluster import rows_by_stream, run_until

    config = quick_config(
        "workers.num_workers=2",
        "feedback.model=slow",
        f"feedback.slow_model_delay_s={SLOW_MODEL_S}",
        "workers.pull_weights_every_steps=1000",
    )
    runtime = make_runtime(config, tmp_path / "slow", transport="ray")
    try:
        run_until(runtime, 200)
        threading.Timer(0.2, runtime.request_stop).start()  # what the loop's SIGTERM handler may call
        started = time.monotonic()
        runtime.step()  # returns then, not after its whole wait for reports (the long run() calls report rarely)
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        runtime.finish()
        took = time.monotonic() - started
        print(f"finish() took {took:.1f} s")
        assert took < STOP_BOUND_S
        stored, reports = rows_by_stream(tmp_path / "slow"), runtime.worker_reports()
        assert set(stored) == set(reports) and len(reports) == 2
        for stream, report in reports.items():
            assert len(stored[stream]) == report["shipped_rows"]  # drained: all it shipped is stored
            assert stored[stream] == list(range(len(stored[stream])))
            assert report["feedback"]["pending"] == 0
    finally:
        runtime.shutdown()
    from ray import serve

    assert runtime.transport.app_name not in serve.status().applications
