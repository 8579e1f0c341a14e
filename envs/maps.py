"""Finding CARLA town maps (OpenDRIVE files) without shipping them.

Search order: an explicit directory (config), then $MENTOR_MAPS_DIR, then a CARLA installation
under $CARLA_ROOT. The town "Generated" needs no files: SUMO's netgenerate builds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

GENERATED_TOWN = "Generated"
MAPS_ENV_VAR = "MENTOR_MAPS_DIR"
_CARLA_XODR_SUBDIR = Path("CarlaUE4/Content/Carla/Maps/OpenDrive")


class MapNotFoundError(FileNotFoundError):
    """A town was asked for that no searched directory holds."""


@dataclass(frozen=True)
class MapSearch:
    directories: tuple[Path, ...]

    @staticmethod
    def from_settings(maps_dir: str | os.PathLike | None = None) -> "MapSearch":
        candidates: list[Path] = []
        if maps_dir:
            candidates.append(Path(maps_dir).expanduser())
        if os.environ.get(MAPS_ENV_VAR):
            candidates.append(Path(os.environ[MAPS_ENV_VAR]).expanduser())
        if os.environ.get("CARLA_ROOT"):
            candidates.append(Path(os.environ["CARLA_ROOT"]).expanduser() / _CARLA_XODR_SUBDIR)
        return MapSearch(tuple(candidates))

    def available_towns(self) -> list[str]:
        towns = {p.stem for d in self.directories if d.is_dir() for p in d.glob("*.xodr")}
        return sorted(towns) + [GENERATED_TOWN]

    def xodr_path(self, town: str) -> Path:
        for directory in self.directories:
            path = directory / f"{town}.xodr"
            if path.is_file():
                return path
        searched = ", ".join(str(d) for d in self.directories) or "nothing (no directory configured)"
        raise MapNotFoundError(
            f"town {town!r} not found: looked in {searched}; available towns: "
            f"{', '.join(self.available_towns())}. Point the maps setting or ${MAPS_ENV_VAR} at a "
            f"directory of CARLA .xodr files, or use town={GENERATED_TOWN!r}, which needs none."
        )

    def default_town(self, preferred: str = "Town01") -> str:
        """The preferred town where its map exists, else the generated town."""
        return preferred if preferred in self.available_towns() else GENERATED_TOWN
