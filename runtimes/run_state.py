"""The runtime's own counters (beside the learner's): saved in every checkpoint, so a resumed run
gives its workers new stream ids (a stream's steps must never restart inside the replay) and keeps
counting episodes and replacements where it left off. The budget rule lives here too: the same in
every mode."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from configs.schema import RunConfig

RUNTIME_FILE = "runtime.json"
REPLAY_DIR = "replay"  # the replay's journal, inside the run directory (learners/replay_journal.py)


@dataclass
class RunCounters:
    next_stream_id: int = 0  # every worker, replacements and resumed ones included, gets a new stream
    episodes: int = 0  # finished training episodes
    replaced_workers: int = 0

    def new_stream(self) -> int:
        stream, self.next_stream_id = self.next_stream_id, self.next_stream_id + 1
        return stream

    def save(self, directory: Path) -> None:
        (Path(directory) / RUNTIME_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, directory: Path) -> RunCounters:
        path = Path(directory) / RUNTIME_FILE
        try:
            values = json.loads(path.read_text())
            return cls(**{key: int(values[key]) for key in asdict(cls())})
        except FileNotFoundError as err:
            raise FileNotFoundError(f"checkpoint {directory} is incomplete: missing {RUNTIME_FILE}") from err
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} cannot be read as the runtime's counters ({err})") from err


def budget_spent(run: RunConfig, env_steps: int, updates: int) -> bool:
    """The run ends at run.total_env_steps env steps or run.total_updates updates, whichever is set
    and comes first (0: that budget is not used)."""
    return bool(
        (run.total_env_steps and env_steps >= run.total_env_steps)
        or (run.total_updates and updates >= run.total_updates)
    )
