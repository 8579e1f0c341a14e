"""Shared fixtures. Tests that need the CARLA town maps find them through $MENTOR_MAPS_DIR
(`.ci/run` points it at ../shared/maps/carla); without maps they skip locally and fail in CI."""

import os

import pytest

from envs.maps import MapSearch


def _require_town(town: str) -> str:
    if town in MapSearch.from_settings().available_towns():
        return town
    message = f"{town} map not found: set $MENTOR_MAPS_DIR to a directory of CARLA .xodr files"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def town01() -> str:
    return _require_town("Town01")


@pytest.fixture
def town02() -> str:
    return _require_town("Town02")


@pytest.fixture
def local_ray():
    """A Ray cluster of this test's own (never one already running on the machine), 4 CPUs."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def pytest_configure(config):
    # Small models on a 2-core machine: one intra-op thread is several times faster than two
    # competing with the simulators and Ray workers of the same run.
    import torch

    torch.set_num_threads(1)
