"""Limits that match the machine (runner/limits.py): a run whose fields cannot work together or
cannot fit the machine stops at start, naming the field, the limit and the fix, before a run
directory is made or Ray is started. Expectations come from the machine the tests run on (or a
Machine given to the check), never from this VM's numbers."""

import glob
import logging
import re
import sys

import numpy as np
import pytest

import collect
import train
from configs.loader import ConfigError, load_config
from runner import limits
from runner.limits import Machine, check_collection_limits, check_limits

GIB = 1 << 30
QUICKSTART = ["configs/quickstart.yaml", "configs/debug.yaml"]


def args(tmp_path, *extra):
    # run.ray_address=local: the cluster this run would start is its own, whatever else runs here.
    return [
        "--config",
        QUICKSTART[0],
        "--config",
        QUICKSTART[1],
        f"run.runs_dir={tmp_path}",
        "run.ray_address=local",
        *extra,
    ]


def config(*overrides, paths=QUICKSTART):
    return load_config(paths, ["run.ray_address=local", *overrides])


@pytest.fixture
def nothing_starts(monkeypatch):
    """The run must stop in preflight: building its runtime (Ray, the learner, workers) fails the test."""

    def make_runtime(*_):
        raise AssertionError("the run got past preflight and started its runtime")

    monkeypatch.setattr(train, "make_runtime", make_runtime)


def assert_nothing_started(tmp_path):
    assert not list(tmp_path.iterdir())  # no run directory
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def most_in(message: str, field: str) -> int:
    return int(re.search(rf"lower {re.escape(field)} to at most ([\d,]+)", message).group(1).replace(",", ""))


# ------------------------------------------------------------------------ the bug report, through train.main


def test_ten_thousand_workers_are_refused_before_ray_starts(tmp_path, caplog, nothing_starts):
    machine = Machine.this_one()
    assert 10_000 * limits.WORKER_BYTES > limits.budget(machine)  # holds on any machine under ~4 TiB
    assert train.main(args(tmp_path, "workers.num_workers=10000")) == 2
    assert "workers.num_workers = 10000 rollout workers" in caplog.text
    most = most_in(caplog.text, "workers.num_workers")
    assert f"this machine's {limits.gib(machine.memory_bytes)}" in caplog.text
    check_limits(config(f"workers.num_workers={most}"), machine)  # the largest that fits does fit
    with pytest.raises(ConfigError, match="workers.num_workers"):
        check_limits(config(f"workers.num_workers={most + 1}"), machine)
    assert_nothing_started(tmp_path)


def test_ten_thousand_environments_in_local_mode_are_refused(tmp_path, caplog, nothing_starts):
    assert 10_000 * limits.LOCAL_ENV_BYTES > limits.budget(Machine.this_one())
    assert train.main(args(tmp_path, "run.mode=local", "workers.num_workers=10000")) == 2
    assert "workers.num_workers = 10000 rollout workers (each beyond the first, a SUMO server" in caplog.text
    assert "lower workers.num_workers to at most" in caplog.text
    assert_nothing_started(tmp_path)


def test_a_batch_larger_than_the_replay_is_refused(tmp_path, caplog, nothing_starts):
    assert train.main(args(tmp_path, "learner.batch_size=1000000000")) == 2
    assert (
        "learner.batch_size = 1000000000 is larger than learner.replay_capacity = 5000: a batch is drawn from "
        "the replay"
    ) in caplog.text
    assert "lower learner.batch_size or raise learner.replay_capacity" in caplog.text
    assert_nothing_started(tmp_path)


@pytest.mark.parametrize("mode", ["ray", "local"])
def test_a_replay_larger_than_the_machine_is_refused_with_the_capacity_that_fits(
    tmp_path, caplog, nothing_starts, mode
):
    machine = Machine.this_one()
    assert train.main(args(tmp_path, f"run.mode={mode}", "learner.replay_capacity=1000000000000")) == 2
    assert "learner.replay_capacity = 1000000000000 rows need ~" in caplog.text
    assert f"a BEV block allowance of {limits.BEV_BLOCK_BYTES:,}" in caplog.text
    most = most_in(caplog.text, "learner.replay_capacity")
    check_limits(config(f"run.mode={mode}", f"learner.replay_capacity={most}"), machine)
    with pytest.raises(ConfigError, match="learner.replay_capacity"):
        check_limits(config(f"run.mode={mode}", f"learner.replay_capacity={most + 1}"), machine)
    assert_nothing_started(tmp_path)


def test_an_offline_run_is_refused_its_unused_online_replay_of_a_trillion_rows():
    # The online replay's link and block-slot arrays are written even when nothing is stored: 16 TB.
    c = config(
        "run.mode=offline", "run.total_updates=5", "data.dataset=somewhere", "learner.replay_capacity=1000000000000"
    )
    with pytest.raises(
        ConfigError, match=r"learner.replay_capacity = 1000000000000 rows need .*\(16 bytes a row even unused"
    ):
        check_limits(c, Machine(64 * GIB, 8))


# --------------------------------------------------------------------------------------- fields together


def test_a_batch_larger_than_the_datasets_replay_is_refused():
    c = config("data.dataset=somewhere", "data.capacity=100", "learner.batch_size=128", "learner.replay_capacity=5000")
    with pytest.raises(
        ConfigError,
        match=r"learner.batch_size = 128 is larger than data.capacity = 100: .* lower "
        r"learner.batch_size or raise data.capacity",
    ):
        check_limits(c, Machine(64 * GIB, 8))


def test_a_world_models_batch_is_sequences_of_rows():
    c = config(
        "agent.algorithm=vlsafe",
        "agent.vlsafe.sequence_length=32",
        "learner.batch_size=8",
        "learner.replay_capacity=200",
        "feedback.wanted=[vlm_action]",
    )
    with pytest.raises(
        ConfigError,
        match=r"learner.batch_size x agent.vlsafe.sequence_length = 8 x 32 = 256 rows is "
        r"larger than learner.replay_capacity = 200",
    ):
        check_limits(c, Machine(64 * GIB, 8))


def test_a_chunk_larger_than_the_replay_is_refused():
    with pytest.raises(ConfigError, match="workers.chunk_size = 64 is larger than learner.replay_capacity = 32"):
        check_limits(config("workers.chunk_size=64", "learner.replay_capacity=32"), Machine(64 * GIB, 8))


def test_a_run_that_can_make_no_update_is_warned(caplog):
    check_limits(config("run.total_env_steps=400", "learner.learning_starts=1000"), Machine(64 * GIB, 8))
    assert "this run makes no update: the first needs 1000 env steps" in caplog.text


# ---------------------------------------------------------------------------------------------- memory


def test_a_cpu_batch_past_the_memory_is_refused_but_not_on_a_gpu():
    c = config("learner.batch_size=4000", "learner.replay_capacity=150000")
    with pytest.raises(
        ConfigError,
        match=r"learner.batch_size = 4000: a CPU update holds ~2.8 MB .* lower "
        r"learner.batch_size to at most",
    ):
        check_limits(c, Machine(8 * GIB, 8))
    check_limits(c, Machine(8 * GIB, 8, has_gpu=True))


def test_the_replay_estimate_follows_the_row_layout():
    from dataset.rows import ARRAY_KEYS, ROW_SPEC

    fields = sum(ROW_SPEC[key][1].itemsize * int(np.prod(ROW_SPEC[key][0])) for key in ARRAY_KEYS)
    assert limits.replay_row_bytes() == fields + 16 + limits.BEV_BLOCK_OVERHEAD_BYTES + limits.BEV_BLOCK_BYTES
    # docs/results.md measured 1.73 GiB resident for 1M rows of 1,981-byte blocks: the estimate is above it
    assert 1.73 * GIB < limits.replay_row_bytes() * 1_000_000 < 3 * GIB


def test_feedback_replicas_count_against_the_memory():
    machine = Machine(8 * GIB, 64)
    with pytest.raises(
        ConfigError,
        match=r"feedback.replicas = 40 .* lower feedback.replicas to at most \d+ \(with "
        r"workers.num_workers = 1\)",
    ):
        check_limits(config("workers.num_workers=1", "feedback.replicas=40"), machine)


def test_joining_a_cluster_only_warns(caplog, monkeypatch):
    c = load_config(QUICKSTART, ["learner.replay_capacity=1000000000000", "run.ray_address=auto"])
    check_limits(c)  # the learner's node is not known here
    assert "joining a Ray cluster whose learner node is not known here" in caplog.text
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not limits.starts_own_cluster(load_config(QUICKSTART, []))
    assert limits.starts_own_cluster(load_config(QUICKSTART, ["run.mode=local"]))


# ----------------------------------------------------------------------------------------------- cores


def test_workers_past_four_processes_a_core_are_warned(caplog):
    with caplog.at_level(logging.WARNING):
        check_limits(config("workers.num_workers=2"), Machine(64 * GIB, 1))  # 4 processes: at the limit
        assert "a core" not in caplog.text
        check_limits(config("workers.num_workers=8"), Machine(64 * GIB, 1))
    assert (
        "workers.num_workers = 8 with the learner and the feedback replicas (2 CPU(s)) make 10 busy processes on "
        "1 core(s), 10.0 a core (more than 4)" in caplog.text
    )
    assert "feedback.deadline_s = 5 s" in caplog.text and "use workers.num_workers <= 2" in caplog.text


def test_local_mode_is_never_warned_about_cores(caplog):
    check_limits(config("run.mode=local", "workers.num_workers=8"), Machine(64 * GIB, 1))
    assert "a core" not in caplog.text


# ---------------------------------------------------------------------------------------------- collect


def test_collect_refuses_more_collectors_than_its_local_cluster_has_cpus():
    c = load_config(["configs/collect/expert.yaml"], ["run.ray_address=local", "workers.num_workers=3"])
    with pytest.raises(
        ConfigError,
        match=r"workers.num_workers = 3 collectors .* 2 CPUs .* 1 would never start .* "
        r"lower workers.num_workers to at most 2",
    ):
        check_collection_limits(c, Machine(64 * GIB, 2))
    check_collection_limits(
        load_config(["configs/collect/expert.yaml"], ["run.mode=local", "workers.num_workers=3"]), Machine(64 * GIB, 2)
    )


def test_collect_refuses_shards_past_the_memory():
    c = load_config(["configs/collect/expert.yaml"], ["run.ray_address=local", "collect.rows_per_shard=100000"])
    with pytest.raises(ConfigError, match="collect.rows_per_shard = 100000: a collector buffers up to"):
        check_collection_limits(c, Machine(64 * GIB, 16))


def test_collect_with_ten_thousand_workers_stops_before_anything(tmp_path, caplog):
    output = tmp_path / "dataset"
    for mode in ("ray", "local"):
        assert (
            collect.main(
                [
                    "--config",
                    "configs/collect/expert.yaml",
                    f"run.mode={mode}",
                    "run.ray_address=local",
                    "workers.num_workers=10000",
                    f"collect.output={output}",
                    "env.town=Generated",
                ]
            )
            == 2
        )
        assert "workers.num_workers = 10000 collectors" in caplog.text
        assert not output.exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


# ----------------------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize(
    "path",
    sorted(p for p in glob.glob("configs/**/*.yaml", recursive=True) if "/rllib/" not in p and "/variants/" not in p),
)
def test_every_shipped_config_fits_the_cluster_head_of_docs_cluster_md(path):
    """g5.4xlarge: 64 GB, 16 vCPU, a GPU (docs/cluster.md); the CPU configs also fit 8 GiB, 4 cores."""
    c = load_config([path], ["run.ray_address=local"])
    check = check_collection_limits if "collect" in path else check_limits
    check(c, Machine(64 * 10**9, 16, has_gpu=True))
    if "/gpu/" not in path:
        check(c, Machine(8 * GIB, 4))
