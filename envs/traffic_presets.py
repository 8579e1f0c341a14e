"""Background traffic presets, shared by both backends: NoCrash's vehicle and walker counts."""

from __future__ import annotations

from dataclasses import dataclass

TRAFFIC_PRESETS = ("empty", "regular", "dense")

# NoCrash (Codevilla et al., 2019): vehicles and pedestrians per town and traffic level.
_NOCRASH_COUNTS = {
    "Town01": {"empty": (0, 0), "regular": (20, 50), "dense": (100, 250)},
    "Town02": {"empty": (0, 0), "regular": (15, 50), "dense": (70, 150)},
}


@dataclass(frozen=True)
class TrafficCounts:
    vehicles: int
    walkers: int


def traffic_counts(town: str, preset: str) -> TrafficCounts:
    """NoCrash counts for Town01/Town02; other towns use Town02's (the smaller town)."""
    if preset not in TRAFFIC_PRESETS:
        raise ValueError(f"unknown traffic preset {preset!r}; choose one of {', '.join(TRAFFIC_PRESETS)}")
    table = _NOCRASH_COUNTS.get(town, _NOCRASH_COUNTS["Town02"])
    return TrafficCounts(*table[preset])
