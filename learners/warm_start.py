"""Start an agent from another run's weights (agent.init_from): online fine-tuning from an offline
run. Modules are matched by name (encoder, actor, critic, targets); a target the checkpoint lacks
(TD3's actor target after BC) starts as a copy of its online module. Optimisers and counters are
not carried over: the new run's updates start at 0 with fresh Adam moments."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from core import Agent

logger = logging.getLogger(__name__)

AGENT_FILE = "agent.pt"
_CHECKPOINT_DIRS = ("checkpoint", "checkpoint.previous")  # runner/checkpoint.py's names


def agent_file(path: str | Path) -> Path:
    """The agent.pt of a checkpoint directory, or of a run directory's last complete checkpoint."""
    path = Path(path)
    for candidate in (path, *(path / name for name in _CHECKPOINT_DIRS)):
        if (candidate / AGENT_FILE).is_file() and (candidate == path or (candidate / "COMPLETE").is_file()):
            return candidate / AGENT_FILE
    raise FileNotFoundError(
        f"agent.init_from = {str(path)!r} holds no agent checkpoint ({AGENT_FILE} in it, or "
        "in a complete checkpoint/ of a run directory); give a run directory written by train.py"
    )


def warm_start(agent: Agent, path: str | Path) -> list[str]:
    """Load every module `agent.modules()` shares with the checkpoint; returns the names loaded."""
    file = agent_file(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise ValueError(f"{file} cannot be loaded as an agent checkpoint ({type(err).__name__}: {err})") from err
    if state.get("network") != agent.architecture:  # world models: world_model/<preset>
        raise ValueError(
            f"agent.init_from: {file} is a {state.get('network')!r} network, this agent "
            f"{agent.architecture!r}; set agent.network (agent.vlsafe.preset for a world model) to match"
        )
    modules = agent.modules()
    loaded = []
    for name, module in modules.items():
        source = name if name in state else name.removesuffix("_target")
        if source in state:
            module.load_state_dict(state[source])
            loaded.append(name)
    logger.info("agent starts from %s (%s): %s", file, state.get("algorithm"), ", ".join(loaded))
    return loaded
