"""The field helpers every section uses: `num` (a number with its unit and `Range`), `check` (a rule
beyond the type) and `section` (a nested section with its defaults). configs/loader.py enforces them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field: [low, high], either end open or absent."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self, kind: str) -> str:
        if self.low is not None and self.high is not None:
            return (
                f"{kind} in {'(' if self.low_open else '['}{_num(self.low)}, "
                f"{_num(self.high)}{')' if self.high_open else ']'}"
            )
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        return kind


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def num(
    default: float | int | None,
    low: float | None = None,
    high: float | None = None,
    *,
    unit: str,
    low_open: bool = False,
    high_open: bool = False,
):
    """A numeric field with its unit and allowed range (checked by configs/loader.py)."""
    return field(default=default, metadata={"range": Range(low, high, low_open, high_open), "unit": unit})


def check(default: Any, predicate: Callable[[Any], bool], allowed: str, factory: bool = False):
    """A non-numeric field with a rule beyond its type."""
    meta = {"check": (predicate, allowed)}
    return field(default_factory=default, metadata=meta) if factory else field(default=default, metadata=meta)


def section(cls):
    return field(default_factory=cls)
