"""The SUMO backend on the real CARLA towns (component tier: real libsumo, real nets)."""

import math

import numpy as np
import pytest

from envs.maps import MapSearch
from envs.route_suites import load_suite
from envs.sumo.netbuild import build_net
from envs.sumo.simulation import SimulationInUseError, SimulatorError, SumoSettings, SumoSimulation
from envs.types import Control, RouteCommand

pytestmark = pytest.mark.sim


@pytest.fixture
def town01_sim(town01):
    sim = SumoSimulation(SumoSettings(town=town01, traffic="regular"))
    yield sim
    sim.close()


def test_net_from_xodr_has_sidewalks_crossings_and_lights(town01):
    text = build_net(town01, MapSearch.from_settings()).read_text()
    assert text.count('function="crossing"') >= 20
    assert text.count("<tlLogic") >= 10
    assert 'allow="pedestrian"' in text


def test_unknown_town_is_refused_with_the_towns_that_exist(town01):
    with pytest.raises(FileNotFoundError, match="Town01"):
        SumoSimulation(SumoSettings(town="Town99"))


def test_unknown_traffic_preset_is_refused():
    with pytest.raises(ValueError, match="regular"):
        SumoSimulation(SumoSettings(town="Generated", traffic="rush-hour"))


def test_a_second_simulation_asking_for_libsumo_is_refused(town01_sim):
    assert town01_sim.transport == "libsumo"
    with pytest.raises(SimulationInUseError, match="one per process"):
        SumoSimulation(SumoSettings(town="Generated", transport="libsumo"))


def test_reset_spawns_the_preset_traffic_and_is_deterministic(town01_sim):
    spec = load_suite("nocrash_train").routes[0]
    runs = []
    for _ in range(2):
        route, snap = town01_sim.reset(seed=7, route=spec)
        for _ in range(30):
            snap = town01_sim.step(Control(throttle=0.5))
        runs.append((snap.ego.x, snap.ego.y, snap.vehicles.copy(), snap.walkers.copy()))
    # NoCrash regular Town01: 20 vehicles, each running or waiting (pending) for a free insertion spot.
    # Not `running == 20`: the step at which a pending vehicle gets its spot follows the traffic's exact
    # trajectory (seed 2 still has one pending at step 30), which may round differently on another CPU.
    s = town01_sim._sumo
    assert s.vehicle.getIDCount() - 1 + len(s.simulation.getPendingVehicles()) == 20
    assert s.person.getIDCount() == 50  # and 50 pedestrians (counted from their person.add on)
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    np.testing.assert_array_equal(runs[0][3], runs[1][3])


def test_route_follows_lanes_and_announces_turns(town01_sim):
    for spec in load_suite("nocrash_train").routes[:5]:
        route, snap = town01_sim.reset(seed=1, route=spec)
        gaps = np.linalg.norm(np.diff(route.xy, axis=0), axis=1)
        assert gaps.max() < 1.6  # dense and continuous
        assert snap.on_drivable
    commands = {
        int(c) for spec in load_suite("nocrash_train").routes for c in town01_sim.reset(seed=1, route=spec)[0].commands
    }
    assert {RouteCommand.LANE_FOLLOW, RouteCommand.LEFT, RouteCommand.RIGHT} <= commands


def test_collision_with_a_stopped_vehicle_is_detected_once(town01_sim):
    route, snap = town01_sim.reset(seed=3, route=load_suite("nocrash_train").routes[0])
    s = town01_sim._sumo
    # park a vehicle 15 m ahead on the ego's own route and drive into it
    ahead = route.xy[np.searchsorted(route.s, 15.0)]
    heading = route.yaw[np.searchsorted(route.s, 15.0)]
    s.route.add("blocker_route", [s.vehicle.getRoadID("ego")])
    s.vehicle.add("blocker", "blocker_route", typeID="background")
    s.vehicle.moveToXY(
        "blocker",
        "",
        -1,
        ahead[0] + 2.3 * math.cos(heading),
        ahead[1] + 2.3 * math.sin(heading),
        90 - math.degrees(heading),
        keepRoute=2,
    )
    s.vehicle.setSpeed("blocker", 0.0)
    events = []
    for _ in range(60):
        snap = town01_sim.step(Control(throttle=0.6))
        events.extend(snap.collisions)
    assert [e.other_id for e in events] == ["blocker"] and events[0].kind == "vehicle"


def test_crashed_sumo_surfaces_with_context_and_reset_recovers(town01_sim):
    spec = load_suite("nocrash_train").routes[0]
    town01_sim.reset(seed=1, route=spec)
    town01_sim._sumo.vehicle.remove("ego")  # SUMO loses the ego: the next step fails inside libsumo
    with pytest.raises(SimulatorError, match="town=Town01.*seed=1"):
        town01_sim.step(Control())
    _, snap = town01_sim.reset(seed=1, route=spec)
    assert town01_sim.step(Control(throttle=1.0)).ego.speed > 0


def test_lights_cycle_and_running_a_red_light_is_detected(town01):
    import gymnasium as gym

    import envs
    from envs.expert import expert_action

    env = gym.make(envs.ENV_ID, town=town01, traffic="empty", render_bev=False)
    try:
        env.reset(seed=0, options={"route": 0})
        sim = env.unwrapped.sim
        tls = sim._sumo.trafficlight.getIDList()[0]
        states = {sim._sumo.trafficlight.getRedYellowGreenState(tls)}
        for _ in range(600):  # 60 s: every program has switched by then
            env.step(np.array([0.0, 0.0], np.float32))
            states.add(sim._sumo.trafficlight.getRedYellowGreenState(tls))
        assert len(states) >= 2

        env.reset(seed=0, options={"route": 0})
        for light in sim._sumo.trafficlight.getIDList():  # every light red, for good
            program = sim._sumo.trafficlight.getRedYellowGreenState(light)
            sim._sumo.trafficlight.setRedYellowGreenState(light, "r" * len(program))
        infractions, done = [], False
        while not done:  # steer like the expert, but never brake
            steer = expert_action(*env.unwrapped.ground_truth())[1]
            _, _, terminated, truncated, info = env.step(np.array([0.6, steer], np.float32))
            infractions += info["infractions"]
            done = terminated or truncated
        assert infractions == ["red_light"] and terminated
    finally:
        env.close()
