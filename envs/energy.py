"""Longitudinal road-load energy model used for the Found-RL energy metrics.

The vehicle is a point mass on a flat road. The tractive force it needs is

    F = m g Cr + 0.5 rho Cd A v^2 + delta m a

(rolling resistance + aerodynamic drag + inertia, delta being the rotating-mass factor).
Two consumers turn that force into a per-step cost:

* a combustion engine (`fuel_rate`, kg/s): only positive power burns fuel, no engine braking credit;
* a battery-electric drivetrain (`battery_cell_current`, A per cell, exactly Found-RL's published
  `compute_Icell`): positive power draws current, negative power (braking) regenerates and gives a
  negative current.

All functions accept floats or numpy arrays (broadcast together) and return a float for scalar
inputs, an array otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Union

import numpy as np

logger = logging.getLogger(__name__)

ArrayLike = Union[float, np.ndarray]

# Rotating-mass factors: the combustion drivetrain (engine, gearbox) and the electric one
# (motor rotor, single reduction) add a different effective mass on top of the vehicle's.
FUEL_ROTATING_MASS_FACTOR = 1.05
BATTERY_ROTATING_MASS_FACTOR = 1.1


@dataclass(frozen=True)
class VehicleEnergyParams:
    """Vehicle body constants of the road-load equation (SI units)."""

    mass: float = 1847.0  # kg
    g: float = 9.81  # m/s^2
    rolling_coeff: float = 0.01  # Cr, dimensionless
    drag_coeff: float = 0.23  # Cd, dimensionless
    air_density: float = 1.226  # rho, kg/m^3
    frontal_area: float = 2.2  # A, m^2


@dataclass(frozen=True)
class FuelParams:
    """Combustion engine constants: tank-to-wheel efficiency and fuel lower heating value."""

    engine_efficiency: float = 0.3
    lower_heating_value: float = 44e6  # J/kg
    rotating_mass_factor: float = FUEL_ROTATING_MASS_FACTOR


@dataclass(frozen=True)
class BatteryParams:
    """Battery and electric drivetrain constants of Found-RL's published `compute_Icell`.

    The published metric applies `open_circuit_voltage` and `internal_resistance` to a single cell
    (physically they are pack values); Mentor follows it so that its tables compare with the paper's.
    """

    cells_series: int = 100
    strings_parallel: int = 10  # the motor power is shared by cells_series * strings_parallel cells
    open_circuit_voltage: float = 370.0  # Voc, V, applied per cell as in the published metric
    internal_resistance: float = 0.1  # Rint, ohm, applied per cell as in the published metric
    motor_efficiency: float = 0.9
    battery_efficiency: float = 0.95
    wheel_radius: float = 0.33  # m
    gear_ratio: float = 9.0  # motor revolutions per wheel revolution
    rotating_mass_factor: float = BATTERY_ROTATING_MASS_FACTOR

    @property
    def cells(self) -> int:
        return self.cells_series * self.strings_parallel

    @property
    def max_cell_current(self) -> float:
        """Current at which a cell delivers its maximum power Voc^2 / (4 Rint)."""
        return self.open_circuit_voltage / (2.0 * self.internal_resistance)


DEFAULT_VEHICLE = VehicleEnergyParams()
DEFAULT_FUEL = FuelParams()
DEFAULT_BATTERY = BatteryParams()


def _as_output(value: np.ndarray) -> ArrayLike:
    """Scalars in, float out; arrays in, array out."""
    return float(value) if np.ndim(value) == 0 else value


def road_load_force(
    speed: ArrayLike,
    accel: ArrayLike,
    params: VehicleEnergyParams = DEFAULT_VEHICLE,
    delta: float = 1.0,
) -> ArrayLike:
    """Tractive force (N) needed at `speed` (m/s) and `accel` (m/s^2); negative when braking."""
    v = np.asarray(speed, dtype=np.float64)
    a = np.asarray(accel, dtype=np.float64)
    rolling = params.mass * params.g * params.rolling_coeff
    drag = 0.5 * params.air_density * params.drag_coeff * params.frontal_area * v**2
    inertia = delta * params.mass * a
    return _as_output(rolling + drag + inertia)


def fuel_rate(
    speed: ArrayLike,
    accel: ArrayLike,
    params: VehicleEnergyParams = DEFAULT_VEHICLE,
    fuel: FuelParams = DEFAULT_FUEL,
) -> ArrayLike:
    """Fuel mass flow (kg/s). Braking power is lost (clamped to 0), not recovered."""
    v = np.asarray(speed, dtype=np.float64)
    force = np.asarray(road_load_force(v, accel, params, fuel.rotating_mass_factor))
    power = np.maximum(force * v, 0.0)
    return _as_output(power / fuel.engine_efficiency / fuel.lower_heating_value)


def battery_power(
    speed: ArrayLike,
    accel: ArrayLike,
    params: VehicleEnergyParams = DEFAULT_VEHICLE,
    battery: BatteryParams = DEFAULT_BATTERY,
) -> ArrayLike:
    """Electrical power drawn from the battery (W), as in Found-RL's `compute_Icell`:
    P_EM = P_mech / eta_motor when driving, P_mech * eta_motor when regenerating, then / eta_battery
    in both cases (the published metric divides by the battery efficiency whatever the sign)."""
    v = np.asarray(speed, dtype=np.float64)
    force = np.asarray(road_load_force(v, accel, params, battery.rotating_mass_factor))
    # Spelled out through the drivetrain (P_mech = omega T) so the gear/wheel constants stay
    # meaningful; the product reduces to F v.
    wheel_torque = force * battery.wheel_radius
    motor_torque = wheel_torque / battery.gear_ratio
    motor_speed = v / battery.wheel_radius * battery.gear_ratio  # rad/s
    mech_power = motor_torque * motor_speed
    motor_power = np.where(
        mech_power >= 0.0, mech_power / battery.motor_efficiency, mech_power * battery.motor_efficiency
    )
    return _as_output(motor_power / battery.battery_efficiency)


def cell_current(cell_power: ArrayLike, battery: BatteryParams = DEFAULT_BATTERY) -> ArrayLike:
    """Cell current (A) solving I (Voc - I Rint) = P_cell on the physical (low-current) branch.

    Beyond the maximum power Voc^2 / (4 Rint) there is no solution; the current is clamped to
    the max-power current Voc / (2 Rint).
    """
    p = np.asarray(cell_power, dtype=np.float64)
    voc, rint = battery.open_circuit_voltage, battery.internal_resistance
    disc = voc**2 - 4.0 * rint * p
    infeasible = disc < 0.0
    if np.any(infeasible):
        logger.debug(
            "cell power above its maximum %.0f W at %d sample(s); clamping current to %.1f A",
            voc**2 / (4.0 * rint),
            int(np.count_nonzero(infeasible)),
            battery.max_cell_current,
        )
    root = np.sqrt(np.maximum(disc, 0.0))
    # 2P / (Voc + sqrt(disc)) equals (Voc - sqrt(disc)) / (2 Rint) but does not cancel
    # catastrophically at small P; at disc = 0 both give Voc / (2 Rint).
    current = np.where(infeasible, battery.max_cell_current, 2.0 * p / (voc + root))
    return _as_output(current)


def battery_cell_current(
    speed: ArrayLike,
    accel: ArrayLike,
    params: VehicleEnergyParams = DEFAULT_VEHICLE,
    battery: BatteryParams = DEFAULT_BATTERY,
) -> ArrayLike:
    """Found-RL's Icell (A): the battery power shared by all n_ser x n_par cells, then
    I (Voc - I Rint) = P_cell; negative when regenerating."""
    cell_power = np.asarray(battery_power(speed, accel, params, battery)) / battery.cells
    return _as_output(np.asarray(cell_current(cell_power, battery)))
