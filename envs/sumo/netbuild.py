"""Building SUMO nets: from CARLA OpenDRIVE files with netconvert, or a grid town with netgenerate.

Nets are cached by a hash of the input file and the options, so each is built once per machine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path

from envs.maps import GENERATED_TOWN, MapSearch

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "MENTOR_CACHE_DIR"

_NETCONVERT_OPTIONS = (
    "--crossings.guess",
    "--walkingareas",
    "--opendrive.ignore-misplaced-signals",
    "--opendrive.internal-shapes",
    "--junctions.corner-detail",
    "5",
    "--no-turnarounds.except-deadend",
    "--tls.yellow.time",
    "3",
)
_NETGENERATE_OPTIONS = (
    "--grid",
    "--grid.number",
    "4",
    "--grid.length",
    "120",
    "--default.lanenumber",
    "1",
    "--default.lanewidth",
    "4",
    "--default-junction-type",
    "traffic_light",
    "--sidewalks.guess",
    "--crossings.guess",
    "--walkingareas",
    "--no-turnarounds",
)


def sumo_home() -> Path:
    import sumo  # the eclipse-sumo wheel carries the binaries and typemaps

    return Path(sumo.SUMO_HOME)


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "mentor")
    path = Path(root) / "nets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n{tail}")


def _cached(key: str, name: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}.net.xml"


def build_net(town: str, maps: MapSearch) -> Path:
    """Path to a SUMO net for `town`, built on first use."""
    if town == GENERATED_TOWN:
        return _generated_net()
    xodr = maps.xodr_path(town)
    typemaps = sumo_home() / "data" / "typemap"
    types = f"{typemaps / 'opendriveNetconvert.typ.xml'},{typemaps / 'opendriveNetconvertPedestrians.typ.xml'}"
    key = hashlib.sha256(xodr.read_bytes()).hexdigest() + " ".join(_NETCONVERT_OPTIONS)
    out = _cached(key, town)
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        logger.info("building SUMO net for %s from %s", town, xodr)
        _run(
            [
                str(sumo_home() / "bin" / "netconvert"),
                "--opendrive-files",
                str(xodr),
                "--type-files",
                types,
                *_NETCONVERT_OPTIONS,
                "--no-warnings",
                "-o",
                str(tmp),
            ],
            f"netconvert of {xodr}",
        )
        tmp.replace(out)  # atomic: parallel workers may build the same net
    return out


def _generated_net() -> Path:
    out = _cached(" ".join(_NETGENERATE_OPTIONS), GENERATED_TOWN)
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        logger.info("generating the fallback town with netgenerate")
        _run(
            [str(sumo_home() / "bin" / "netgenerate"), *_NETGENERATE_OPTIONS, "--seed", "0", "-o", str(tmp)],
            "netgenerate",
        )
        tmp.replace(out)
    return out
