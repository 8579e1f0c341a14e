"""Mentor's roles, as narrow interfaces (in the style of DeepMind Acme's core.py).

How they are used together (train.py through runner/loop.py):

    runtime = make_runtime(config, run_dir)     # runtimes/registry.py: a mode on a transport
    runtime.load(checkpoint)                    # optional; before the first step, nothing runs yet
    while not runtime.done():                   # env-step budget online, update budget offline
        report = runtime.step()                 # collect and learn for a while; metrics + episodes
    runtime.save(checkpoint); runtime.evaluate(); runtime.shutdown()

Inside every runtime, the same roles (workers/assembly.py builds the workers):

    # a rollout worker (workers/rollout_worker.py), one environment, acting only
    carry = policy.initial_carry(1)
    carry, action = policy.act(carry, obs, is_first, explore=True, step=clock)  # clock: global env steps
    ... env.step(action); feedback items go out, answers come back, rows are shipped to the learner

    # the learner (learners/learner.py), owning the replay and the agent
    batch, shaping = agent.batch.sample(replay, batch_size, shaper)   # the agent says what it samples
    metrics = agent.update(batch, step=env_steps)
    weights = agent.policy_weights()   # published; workers pull and call policy.load_weights(weights)

    # the feedback service (feedback/, cluster/feedback_service.py)
    results = feedback_model(items)    # a batch of FeedbackItem in, FeedbackResult out, any order

`make_agent`, `make_policy` (learners/registry.py) and `make_runtime` (runtimes/registry.py) are the
only places that construct agents, policies and runtimes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

    from core.feedback import FeedbackItem, FeedbackResult

Observation = Mapping[str, np.ndarray]  # {"bev": uint8 [B, 15, 96, 96], "state": float32 [B, 10]}
Carry = Any  # a policy's per-environment state between steps (None for feed-forward policies)
Weights = dict[str, "torch.Tensor"]  # what acting needs, on the CPU
Batch = dict[str, np.ndarray]
Chunk = dict[str, np.ndarray]  # rows of learners.replay.ROW_SPEC with a common leading dimension


@dataclass(frozen=True)
class PolicySnapshot:
    """Acting weights as the learner published them, with their version (workers record it)."""

    version: int
    weights: Weights


@runtime_checkable
class Policy(Protocol):
    """Acting only: no critic, no optimiser. Rollout and evaluation workers hold one each."""

    def initial_carry(self, batch_size: int) -> Carry:
        """The carry before the first step of every environment."""

    def act(
        self, carry: Carry, obs: Observation, is_first: np.ndarray, *, explore: bool, step: int
    ) -> tuple[Carry, np.ndarray]:
        """Actions float32 [B, 2] in [-1, 1] for a batch of observations. `is_first` [B] marks the
        first observation of an episode (a recurrent policy resets its carry there); `step` is the
        run's global env-step clock, which drives the exploration schedules."""

    def load_weights(self, weights: Weights) -> None:
        """Replace the acting weights with a published snapshot of the agent's."""


class BatchSpec(Protocol):
    """What an agent samples from the replay (learners/batches.py: TransitionBatch, SequenceBatch)."""

    def can_sample(self, replay: Any, batch_size: int) -> bool: ...

    def sample(self, replay: Any, batch_size: int, shaping: Any = None) -> tuple[Batch, dict[str, float]]:
        """A batch, with per-step reward-shaping terms already added, and what each term added."""


@runtime_checkable
class Agent(Protocol):
    """The learning side of an algorithm: networks, optimisers and one gradient step."""

    name: str  # the algorithm (agent.algorithm), recorded in its checkpoints
    architecture: str  # the networks' preset (agent.network; world models: world_model/<preset>), ditto
    required_labels: tuple[str, ...]  # feedback fields its objective cannot do without (VL-SAFE: "safety")
    batch: BatchSpec  # what update() consumes

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every network by name (targets included): what a warm start copies by name."""

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        """One gradient step; `step` is the global env-step clock (schedules). Returns scalar metrics."""

    def policy_weights(self) -> Weights:
        """CPU copies of the weights a Policy of this algorithm acts with."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (tensors only: loadable with weights_only)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Episode:
    """A finished training episode, as the run directory's episodes.csv records it."""

    stream_id: int
    env_steps: int  # the global clock when it was reported
    episode_return: float
    route_completion: float
    driving_score: float


@dataclass(frozen=True)
class StepReport:
    """What one Runtime.step() did: scalar metrics (the same names in every mode) and the episodes
    that finished since the last report."""

    metrics: dict[str, float]
    episodes: list[Episode] = field(default_factory=list)


class CannotStart(RuntimeError):
    """The run cannot start as configured (the cluster cannot hold it, a file it needs is bad); the
    message says what and how to fix it."""


class RoleFailed(RuntimeError):
    """A role the run cannot go on without (the learner, the feedback service) failed; the message
    names the role and the cause. Rollout workers are replaced instead."""

    def __init__(self, role: str, cause: str):
        super().__init__(f"the {role} failed: {cause}")
        self.role, self.cause = role, cause


@runtime_checkable
class Runtime(Protocol):
    """Drives collection and learning: one skeleton (runtimes/skeleton.py) with a mode (online,
    offline, collection) and a transport (this process, or a Ray cluster)."""

    @property
    def env_steps(self) -> int: ...

    @property
    def updates(self) -> int: ...

    def step(self) -> StepReport:
        """Collect and learn for a short while (seconds); starts the roles on the first call.
        Raises RoleFailed when a role the run needs has failed."""

    def done(self) -> bool:
        """The run's budget is spent: run.total_env_steps env steps taken by the workers, or
        run.total_updates updates, whichever is set and comes first."""

    def request_stop(self) -> None:
        """Make a step() in progress return soon (a stop signal arrived). Called from a signal handler:
        it only sets a flag. Runtimes whose steps are short do nothing."""

    def finish(self) -> StepReport:
        """Stop collecting: every worker ships what it holds; the last metrics and episodes."""

    def save(self, directory: Path) -> None:
        """A complete checkpoint (learner, replay, counters) into a new directory."""

    def load(self, directory: Path) -> None:
        """Restore a checkpoint. Only before the first step(): nothing may run while it loads."""

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Stop collecting and drive the evaluation suite with the latest weights."""

    def evaluation_steps(self) -> list[dict]:
        """Every step of the last evaluation, one record each (route, pose, action, reward terms,
        infractions): what `evaluation_steps.parquet` holds."""

    def shutdown(self) -> None: ...


class FeedbackModel(Protocol):
    """A batch of feedback items in, a batch of results out, in any order (feedback/)."""

    inputs: frozenset[str]  # which optional item parts it reads: "image", "privileged"

    def __call__(self, items: list[FeedbackItem]) -> list[FeedbackResult]: ...


class DatasetSource(Protocol):
    """Recorded rows to learn from offline, in the replay's row layout."""

    def chunks(self) -> Iterator[Chunk]:
        """Chunks in insertion order: each stream's rows in step order (replay links follow them)."""

    def rows(self) -> int:
        """How many rows chunks() yields (what a replay needs to hold all of them)."""


class DatasetSink(Protocol):
    """Where collected rows go besides (or instead of) the replay."""

    def write(self, chunk: Chunk) -> None: ...

    def close(self) -> None: ...
