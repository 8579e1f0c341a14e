"""Road-load energy model against hand-computed numbers (m=1847, g=9.81, Cr=0.01, Cd=0.23, rho=1.226, A=2.2)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from envs.energy import (
    BatteryParams,
    VehicleEnergyParams,
    battery_cell_current,
    battery_power,
    cell_current,
    fuel_rate,
    road_load_force,
)

# Rolling resistance: 1847 * 9.81 * 0.01 = 181.1907 N
ROLLING = 181.1907
# Drag at 5 m/s: 0.5 * 1.226 * 0.23 * 2.2 * 5^2 = 7.75445 N
DRAG_5 = 7.75445


def test_defaults():
    p = VehicleEnergyParams()
    assert (p.mass, p.g, p.rolling_coeff, p.drag_coeff, p.air_density, p.frontal_area) == (
        1847.0,
        9.81,
        0.01,
        0.23,
        1.226,
        2.2,
    )
    b = BatteryParams()
    assert b.max_cell_current == pytest.approx(1850.0)  # 370 / (2 * 0.1)
    assert b.cells == 1000  # 100 in series x 10 in parallel


def test_road_load_force_cruise():
    # 181.1907 + 7.75445 = 188.94515 N, independent of delta when a = 0
    assert road_load_force(5.0, 0.0) == pytest.approx(ROLLING + DRAG_5)
    assert road_load_force(5.0, 0.0) == pytest.approx(188.94515)
    assert road_load_force(5.0, 0.0, delta=1.1) == pytest.approx(188.94515)
    assert isinstance(road_load_force(5.0, 0.0), float)


def test_road_load_force_accel_and_brake():
    # a = +1, delta = 1.05: 188.94515 + 1.05 * 1847 * 1 = 188.94515 + 1939.35 = 2128.29515 N
    assert road_load_force(5.0, 1.0, delta=1.05) == pytest.approx(2128.29515)
    # a = -2, delta = 1.1: 188.94515 - 1.1 * 1847 * 2 = 188.94515 - 4063.4 = -3874.45485 N
    assert road_load_force(5.0, -2.0, delta=1.1) == pytest.approx(-3874.45485)
    # standing still: only rolling resistance remains, 181.1907 N
    assert road_load_force(0.0, 0.0) == pytest.approx(ROLLING)


def test_fuel_rate_values():
    # cruise: 188.94515 N * 5 m/s = 944.72575 W; / 0.3 / 44e6 = 7.157013e-5 kg/s
    assert fuel_rate(5.0, 0.0) == pytest.approx(7.157013257575758e-05, rel=1e-9)
    # a = +1: 2128.29515 N * 5 = 10641.47575 W; / 0.3 / 44e6 = 8.061724e-4 kg/s
    assert fuel_rate(5.0, 1.0) == pytest.approx(8.061724053030303e-04, rel=1e-9)
    # a = -2: F = 188.94515 - 1.05*1847*2 = -3689.75485 N -> negative power, no fuel
    assert fuel_rate(5.0, -2.0) == 0.0
    # v = 0: P = F * 0 = 0 even when accelerating
    assert fuel_rate(0.0, 0.0) == 0.0
    assert fuel_rate(0.0, 1.0) == 0.0


# Battery: Found-RL's published compute_Icell. P_EM = P_mech / 0.9 (driving) or P_mech * 0.9
# (regenerating); P_cell = P_EM / 0.95 / (100 * 10 cells); I solves I (370 - 0.1 I) = P_cell.


def test_battery_cell_current_cruise():
    # P_mech = 188.94515 * 5 = 944.72575 W; P_EM / 0.95 = 944.72575 / 0.9 / 0.95 = 1104.9423977 W
    assert battery_power(5.0, 0.0) == pytest.approx(1104.9423976608186)
    # P_cell = 1.1049424 W; I = 2 P / (370 + sqrt(370^2 - 0.4 P)) = 0.0029863332 A
    assert battery_cell_current(5.0, 0.0) == pytest.approx(0.002986333214809258, rel=1e-9)


def test_battery_cell_current_accelerating():
    # F = 188.94515 + 1.1*1847*1 = 2220.64515 N; P_mech = 11103.22575 W; / 0.9 / 0.95 = 12986.2289 W
    assert battery_power(5.0, 1.0) == pytest.approx(12986.228947368423)
    # P_cell = 12.986229 W -> I = 0.035098249 A (the 0.035 A; the paper reports 0.04-0.11 A)
    assert battery_cell_current(5.0, 1.0) == pytest.approx(0.035098249016423846, rel=1e-9)


def test_battery_cell_current_regenerating():
    # F = -3874.45485 N; P_mech = -19372.27425 W; regen P_EM = P_mech * 0.9 = -17435.04683 W,
    # divided (not multiplied) by the battery efficiency: -17435.04683 / 0.95 = -18352.68087 W
    assert battery_power(5.0, -2.0) == pytest.approx(-18352.680868421055)
    # P_cell = -18.3526809 W -> I = 2 P / (370 + sqrt(136900 + 0.4 * 18.3527)) = -0.049601175 A
    assert battery_cell_current(5.0, -2.0) == pytest.approx(-0.04960117524530401, rel=1e-9)


def test_battery_at_standstill_draws_nothing():
    # P = F * v = 0 at v = 0, so I = 0 whatever the acceleration
    assert battery_cell_current(0.0, 0.0) == 0.0
    assert battery_cell_current(0.0, 1.0) == 0.0


def test_cell_current_clamps_beyond_max_power(caplog):
    # Voc^2 / (4 Rint) = 342250 W per cell: beyond it there is no real root -> clamp to 1850 A
    with caplog.at_level(logging.DEBUG, logger="envs.energy"):
        assert cell_current(400_000.0) == pytest.approx(1850.0)
    assert sum("clamping" in r.message for r in caplog.records) == 1
    # exactly at max power the root is Voc / (2 Rint) = 1850 A
    assert cell_current(342250.0) == pytest.approx(1850.0)
    # v=30, a=5 draws 372591.26 W from the battery, 372.59 W per cell: far from the limit
    assert battery_cell_current(30.0, 5.0) == pytest.approx(1.0072776228921103, rel=1e-9)


def test_cell_current_satisfies_power_equation():
    p = np.array([-50_000.0, -1.0, 0.0, 1e-3, 1.0, 1e4, 3e5])
    i = cell_current(p)
    assert np.allclose(i * (370.0 - 0.1 * i), p, rtol=1e-12, atol=1e-9)


def test_array_inputs_broadcast():
    speeds = np.array([0.0, 5.0, 5.0])
    accels = np.array([[0.0], [1.0]])  # shape (2, 1) x (3,) -> (2, 3)
    force = road_load_force(speeds, accels, delta=1.05)
    assert isinstance(force, np.ndarray) and force.shape == (2, 3)
    assert force[1, 1] == pytest.approx(2128.29515)

    fuel = fuel_rate(speeds, accels)
    assert fuel.shape == (2, 3)
    assert fuel[:, 0].tolist() == [0.0, 0.0]
    assert fuel[0, 1] == pytest.approx(7.157013257575758e-05, rel=1e-9)
    assert fuel[1, 2] == pytest.approx(8.061724053030303e-04, rel=1e-9)

    cell = battery_cell_current(np.array([5.0, 5.0, 5.0, 0.0]), np.array([0.0, 1.0, -2.0, 0.0]))
    assert cell == pytest.approx([0.002986333214809258, 0.035098249016423846, -0.04960117524530401, 0.0])
