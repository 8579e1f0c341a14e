"""Export a Mentor transition dataset (collect.py, dataset/parquet.py) as a Minari dataset, the
Farama offline-RL standard that d3rlpy, TorchRL and others load.

    python -m integrations.minari_export runs/datasets/town01-expert-dart --id mentor/town01-expert-v0 --out data/minari
    MINARI_DATASETS_PATH=data/minari python -m integrations.minari_export DIR --id mentor/town01-expert-v0

and then, in Python: `MINARI_DATASETS_PATH=data/minari` + `minari.load_dataset("mentor/town01-expert-v0")`.

One Minari episode per Mentor episode: `observations` {"bev", "state"} of all its T + 1 rows (the
last is the final observation), `actions`, `rewards`, `terminations`, `truncations` of its T
transitions. `infos` hold Mentor's other columns row for row with the observations (T + 1 values:
`infos[k][:-1]` lines up with actions and rewards): cost, policy_version, step, the expert's action
and the feedback labels with their masks (label files merged), and command where collected. An
episode the collection stopped inside (the last one of each stream, no final row) is exported as
truncated at its last stored observation, the rule of Minari's own DataCollector (`--unfinished
drop` leaves it out); its episode metadata says `mentor_unfinished`. The environment spec is
mentor/Driving-v0 with the dataset's town, traffic, route suite and backend, so
`dataset.recover_environment()` makes the env it was collected on (Mentor installed, maps found).

The destination is --out, else $MINARI_DATASETS_PATH; Minari's own default (~/.minari/datasets) is
used only when named. The dataset is built in a hidden directory beside its place and renamed into
it whole; the source dataset is only read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dataset.parquet import DatasetError, ParquetDataset, Shard
from dataset.schema import SchemaMismatch

logger = logging.getLogger(__name__)

# Minari storages: parquet (compressed) and arrow (uncompressed IPC) need only pyarrow; hdf5 (uncompressed, the
# one TorchRL's MinariExperienceReplay reads) needs h5py.
DATA_FORMATS = ("parquet", "arrow", "hdf5")
UNFINISHED_POLICIES = ("truncate", "drop")
OBSERVATION_KEYS = ("bev", "state")
INFO_KEYS = (
    "cost",
    "policy_version",
    "step",
    "expert_action",
    "expert_action_mask",
    "vlm_action",
    "vlm_action_mask",
    "clip_margin",
    "clip_margin_mask",
    "safety",
    "safety_mask",
)
OPTIONAL_INFO_KEYS = ("command",)  # collections have it; datasets written by other tools may not
REQUIRED_METADATA = ("town", "traffic")  # what the environment spec needs from dataset.json
INSTALL_HINT = 'pip install "minari[arrow]==0.5.4"  (or: pip install -e ".[minari]")'


class MinariExportError(ValueError):
    """The dataset cannot be exported as asked; the message names the reason and the fix."""


@dataclasses.dataclass(frozen=True)
class MentorEpisode:
    """The rows of one episode of one stream, in step order; `finished` when its final row (is_last) is there."""

    stream_id: int
    episode_id: int
    rows: dict[str, np.ndarray]
    finished: bool

    @property
    def transitions(self) -> int:
        """Transitions Minari gets: one per row but the last (whose successor, if any, is not stored)."""
        return len(self.rows["step"]) - 1


@dataclasses.dataclass
class ExportReport:
    dataset_id: str
    root: Path  # MINARI_DATASETS_PATH to load it with
    path: Path
    episodes: int = 0
    steps: int = 0
    unfinished_truncated: int = 0
    skipped_pieces: int = 0
    skipped_rows: int = 0
    seconds: float = 0.0
    per_episode: list[dict] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "root": str(self.root),
            "path": str(self.path),
            "steps_per_s": self.steps / self.seconds if self.seconds else 0.0,
        }


# ------------------------------------------------------------------------------- reading episodes


def read_episodes(data: ParquetDataset, report: ExportReport) -> Iterator[MentorEpisode]:
    """The dataset's episodes, stream by stream, joined across shards. A piece of rows that does not
    start an episode (is_first) cannot be an episode and is counted in `report.skipped_*`."""
    pending: dict[str, np.ndarray] | None = None
    pending_stream = None
    for shard in data.shards:
        rows = _shard_rows(data, shard)
        if not len(rows["step"]):
            continue
        if pending is not None and pending_stream == shard.stream_id:  # (a column only some shards have is left out)
            rows = {key: np.concatenate([pending[key], rows[key]]) for key in rows if key in pending}
        elif pending is not None:
            yield from _episode_or_skip(pending, finished=False, report=report)
        pending, pending_stream = None, shard.stream_id
        bounds = _piece_bounds(rows)
        for start, end in bounds[:-1]:
            yield from _episode_or_skip(
                _slice(rows, start, end), finished=bool(rows["is_last"][end - 1]), report=report
            )
        start, end = bounds[-1]
        last = _slice(rows, start, end)
        if rows["is_last"][end - 1]:
            yield from _episode_or_skip(last, finished=True, report=report)
        else:
            pending = last  # the episode goes on in this stream's next shard
    if pending is not None:
        yield from _episode_or_skip(pending, finished=False, report=report)


def _shard_rows(data: ParquetDataset, shard: Shard) -> dict[str, np.ndarray]:
    rows = data.read_shard(shard)  # the replay columns, with label files merged
    if "command" in pq.read_schema(shard.path).names:
        rows["command"] = pq.read_table(shard.path, columns=["command"]).column("command").to_numpy()
    return rows


def _piece_bounds(rows: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """[start, end) of each run of rows that may be one episode: a new one after an is_last row, where
    episode_id changes, and where the step counter jumps (rows missing between them)."""
    n = len(rows["step"])
    starts = np.zeros(n, bool)
    starts[0] = True
    starts[1:] = (
        rows["is_last"][:-1] | (rows["episode_id"][1:] != rows["episode_id"][:-1]) | (np.diff(rows["step"]) != 1)
    )
    first = np.flatnonzero(starts)
    return list(zip(first.tolist(), [*first[1:].tolist(), n]))


def _slice(rows: dict[str, np.ndarray], start: int, end: int) -> dict[str, np.ndarray]:
    return {key: value[start:end] for key, value in rows.items()}


def _episode_or_skip(rows: dict[str, np.ndarray], finished: bool, report: ExportReport) -> Iterator[MentorEpisode]:
    n = len(rows["step"])
    if not rows["is_first"][0] or n < 2:
        why = (
            "does not start an episode (is_first is false: rows before it are missing)"
            if not rows["is_first"][0]
            else "holds no transition"
        )
        logger.warning(
            "stream %d, episode %d, steps %d-%d: %s; not exported",
            rows["stream_id"][0],
            rows["episode_id"][0],
            rows["step"][0],
            rows["step"][-1],
            why,
        )
        report.skipped_pieces += 1
        report.skipped_rows += n
        return
    yield MentorEpisode(int(rows["stream_id"][0]), int(rows["episode_id"][0]), rows, finished)


# ------------------------------------------------------------------------------- minari episodes


def episode_buffer(episode: MentorEpisode, index: int):
    """The Minari EpisodeBuffer of one Mentor episode (see the module's docstring for the layout)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    rows, t = episode.rows, episode.transitions
    terminations = rows["terminated"][:t].copy()
    truncations = rows["truncated"][:t].copy()
    if not episode.finished and not terminations[-1]:
        truncations[-1] = True  # what Minari's DataCollector does with an episode it did not see end
    # Minari 0.5.4 stores a 1-D numpy info with an empty shape it cannot read back: scalars go as lists
    # (of numpy scalars, so that their dtype is kept).
    infos = {
        key: list(rows[key]) if rows[key].ndim == 1 else rows[key]
        for key in (*INFO_KEYS, *OPTIONAL_INFO_KEYS)
        if key in rows
    }
    return EpisodeBuffer(
        id=index,
        observations={key: rows[key] for key in OBSERVATION_KEYS},
        actions=rows["action"][:t],
        rewards=rows["reward"][:t],
        terminations=terminations,
        truncations=truncations,
        infos=infos,
    )


def env_spec(metadata: dict, source: Path):
    """mentor/Driving-v0 with the dataset's town, traffic, route suite and backend as its kwargs."""
    import gymnasium as gym

    import envs

    missing = [key for key in REQUIRED_METADATA if metadata.get(key) is None]
    if missing:
        raise MinariExportError(
            f"{source / 'dataset.json'} lacks {', '.join(missing)}: the Minari dataset's "
            f"environment spec needs them. Add them to dataset.json (the town and traffic it "
            f"was collected on) or recollect with collect.py"
        )
    kwargs = {"town": metadata["town"], "traffic": metadata["traffic"]}
    kwargs.update({key: metadata[key] for key in ("route_suite", "backend") if metadata.get(key) is not None})
    return dataclasses.replace(gym.spec(envs.ENV_ID), kwargs=kwargs)


def minari_root(out: str | Path | None) -> Path:
    """Where Minari datasets go: `out`, else $MINARI_DATASETS_PATH; never the home directory unasked."""
    if out is not None:
        return Path(out)
    if os.environ.get("MINARI_DATASETS_PATH"):
        return Path(os.environ["MINARI_DATASETS_PATH"])
    raise MinariExportError(
        "no destination: pass --out DIR (load it with MINARI_DATASETS_PATH=DIR) or set "
        "MINARI_DATASETS_PATH; Minari's own default ~/.minari/datasets is used only when named "
        "(--out ~/.minari/datasets)"
    )


def _import_minari():
    try:
        import minari
        from minari.dataset.minari_dataset import parse_dataset_id
        from minari.dataset.minari_storage import MinariStorage
    except ImportError as err:
        raise MinariExportError(
            f"the Minari export needs minari, which is not installed ({err}): {INSTALL_HINT}"
        ) from err
    return minari, parse_dataset_id, MinariStorage


def _require_h5py() -> None:
    try:
        import h5py  # noqa: F401
    except ImportError as err:
        raise MinariExportError(
            f"--format hdf5 needs h5py, which cannot be imported ({err}): "
            'pip install "minari[hdf5]==0.5.4"; or use --format parquet'
        ) from err


def _destination(root: Path, dataset_id: str, source: Path, parse_dataset_id) -> Path:
    try:
        parse_dataset_id(dataset_id)
    except ValueError as err:
        raise MinariExportError(f"--id {dataset_id!r}: {err} e.g. mentor/town01-expert-v0") from err
    path = root / dataset_id
    if path.resolve().is_relative_to(source.resolve()):
        raise MinariExportError(
            f"the destination {path} is inside the source dataset {source}, which is only read: choose --out outside it"
        )
    if path.exists():
        raise MinariExportError(
            f"a Minari dataset {dataset_id!r} is already at {path}: delete it "
            f"(MINARI_DATASETS_PATH={root} minari delete {dataset_id}) or export under a new "
            "version (-v1)"
        )
    return path


def _write_namespace_metadata(root: Path, dataset_id: str) -> None:
    """The namespace_metadata.json Minari lists namespaces by (an empty one where none is there)."""
    from minari.namespace import NAMESPACE_METADATA_FILENAME

    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        path = root.joinpath(*parts[:depth]) / NAMESPACE_METADATA_FILENAME
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")


# --------------------------------------------------------------------------------------- export


def export_to_minari(
    dataset_dir: str | Path,
    dataset_id: str,
    out: str | Path | None = None,
    data_format: str = "parquet",
    unfinished: str = "truncate",
) -> ExportReport:
    """Write the Mentor dataset at `dataset_dir` as the Minari dataset `dataset_id` under `out` (else
    $MINARI_DATASETS_PATH). Raises MinariExportError (or DatasetError for a damaged source) naming the
    problem; on any failure nothing is left at the destination."""
    if data_format not in DATA_FORMATS:
        raise MinariExportError(f"--format {data_format!r}: must be one of {', '.join(DATA_FORMATS)}")
    if unfinished not in UNFINISHED_POLICIES:
        raise MinariExportError(f"--unfinished {unfinished!r}: must be one of {', '.join(UNFINISHED_POLICIES)}")
    minari, parse_dataset_id, MinariStorage = _import_minari()
    if data_format == "hdf5":
        _require_h5py()
    source = Path(dataset_dir)
    data = ParquetDataset(source)  # DatasetError when it is not a dataset or holds no shards
    spec = env_spec(data.metadata, source)
    root = minari_root(out)
    path = _destination(root, dataset_id, source, parse_dataset_id)
    building = path.with_name(f".{path.name}.partial-{os.getpid()}")  # hidden: Minari lists skip it
    building.mkdir(parents=True)
    started = time.monotonic()
    report = ExportReport(dataset_id, root, path)
    try:
        from envs.spaces import action_space, observation_space

        storage = MinariStorage.new(
            building / "data",
            observation_space=observation_space(),
            action_space=action_space(),
            env_spec=spec,
            data_format=data_format,
            jpeg_encoding=False,
        )  # BEV masks stay exact
        _write_episodes(storage, data, unfinished, report)
        if report.episodes == 0:
            raise MinariExportError(
                f"{source} has no episode to export ({report.skipped_pieces} pieces of rows "
                f"skipped, see the warnings; --unfinished {unfinished}): collect more steps"
            )
        storage.update_metadata(_dataset_metadata(dataset_id, data, source, unfinished, minari.__version__))
        _write_namespace_metadata(root, dataset_id)
        os.replace(building, path)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    report.seconds = time.monotonic() - started
    logger.info(
        "exported %d episodes, %d steps of %s to %s in %.1f s (%.0f steps/s)",
        report.episodes,
        report.steps,
        source,
        path,
        report.seconds,
        report.steps / max(report.seconds, 1e-9),
    )
    return report


def _write_episodes(storage, data: ParquetDataset, unfinished: str, report: ExportReport) -> None:
    episode_metadata = []
    for episode in read_episodes(data, report):
        if not episode.finished and unfinished == "drop":
            logger.info(
                "stream %d, episode %d: unfinished (%d rows), dropped (--unfinished drop)",
                episode.stream_id,
                episode.episode_id,
                episode.transitions + 1,
            )
            report.skipped_pieces += 1
            report.skipped_rows += episode.transitions + 1
            continue
        index = report.episodes
        storage.update_episodes([episode_buffer(episode, index)])
        report.episodes += 1
        report.steps += episode.transitions
        report.unfinished_truncated += int(not episode.finished)
        entry = {
            "mentor_stream_id": episode.stream_id,
            "mentor_episode_id": episode.episode_id,
            "mentor_first_step": int(episode.rows["step"][0]),
            "mentor_unfinished": not episode.finished,
        }
        episode_metadata.append(entry)
        report.per_episode.append({"minari_episode": index, "steps": episode.transitions, **entry})
    if episode_metadata:
        storage.update_episode_metadata(episode_metadata, range(len(episode_metadata)))


def _dataset_metadata(
    dataset_id: str, data: ParquetDataset, source: Path, unfinished: str, minari_version: str
) -> dict:
    meta = data.metadata
    return {
        "dataset_id": dataset_id,
        "minari_version": minari_version,
        "algorithm_name": str(meta.get("policy", "unknown")),
        "description": (
            f"Mentor driving data: policy {meta.get('policy')} on {meta.get('town')} "
            f"({meta.get('traffic')} traffic), exported from {source.resolve()}. Observations: "
            "bev uint8 [15,96,96] masks and state float32 [10]; actions [acc, steer] in [-1,1]; infos "
            "row for row with the observations (cost, labels with masks, expert_action, command)."
        ),
        "requirements": ["mentor"],
        "mentor_source": json.loads(
            json.dumps(
                {
                    "directory": str(source.resolve()),
                    "dataset": meta,
                    "label_sets": data.label_sets(),
                    "unfinished": unfinished,
                }
            )
        ),
    }


# ------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="a Mentor transition dataset (collect.py)")
    parser.add_argument(
        "--id",
        required=True,
        dest="dataset_id",
        help="Minari dataset id, (namespace/)name-vN, e.g. mentor/town01-expert-v0",
    )
    parser.add_argument("--out", help="root of the Minari datasets (default: $MINARI_DATASETS_PATH)")
    parser.add_argument(
        "--format",
        default="parquet",
        choices=DATA_FORMATS,
        help="Minari storage format (default parquet: compressed; arrow: uncompressed IPC; hdf5: "
        "uncompressed, needs h5py, what TorchRL's MinariExperienceReplay reads)",
    )
    parser.add_argument(
        "--unfinished",
        default="truncate",
        choices=UNFINISHED_POLICIES,
        help="an episode the collection stopped inside: export it truncated (default) or drop it",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = export_to_minari(args.directory, args.dataset_id, args.out, args.format, args.unfinished)
    except (MinariExportError, DatasetError, SchemaMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(
            f"{report.dataset_id}: {report.episodes} episodes ({report.unfinished_truncated} unfinished, truncated), "
            f"{report.steps} steps at {report.path} in {report.seconds:.1f} s; load it with "
            f"MINARI_DATASETS_PATH={report.root} and "
            f"minari.load_dataset({report.dataset_id!r})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
