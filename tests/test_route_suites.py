import numpy as np
import pytest

from envs.route_suites import available_suites, load_suite
from envs.sumo.simulation import SumoSettings, SumoSimulation

pytestmark = pytest.mark.sim


def test_shipped_suites():
    assert {"nocrash_train", "nocrash_eval", "generated", "random"} <= set(available_suites())
    assert load_suite("nocrash_train").town == "Town01" and len(load_suite("nocrash_train")) == 25
    assert load_suite("nocrash_eval").town == "Town02" and len(load_suite("nocrash_eval")) == 25


def test_unknown_suite_lists_the_known_ones():
    with pytest.raises(ValueError, match="nocrash_train"):
        load_suite("leaderboard_v9")


@pytest.mark.parametrize(
    "suite,town_fixture", [("nocrash_train", "town01"), ("nocrash_eval", "town02"), ("generated", None)]
)
def test_every_route_plans_on_its_town(suite, town_fixture, request):
    town = request.getfixturevalue(town_fixture) if town_fixture else "Generated"
    routes = load_suite(suite)
    sim = SumoSimulation(SumoSettings(town=town, traffic="empty"))
    try:
        lengths = []
        for spec in routes.routes:
            route, snap = sim.reset(seed=0, route=spec)
            assert snap.on_drivable
            start = sim.network.from_carla(*spec.start)
            assert np.hypot(route.xy[0, 0] - start[0], route.xy[0, 1] - start[1]) < 0.5
            lengths.append(route.length)
        assert 250 <= min(lengths) and max(lengths) <= 800
    finally:
        sim.close()
