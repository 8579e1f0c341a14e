"""The `workers` section: the rollout workers."""

from __future__ import annotations

from dataclasses import dataclass

from configs.schema.fields import num

# -------------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class WorkerConfig:
    num_workers: int = num(2, 1, unit="workers")  # one environment each (run.mode=local: all in one process, in turn)
    chunk_size: int = num(64, 1, unit="rows")  # rows shipped to the learner per call
    pull_weights_every_steps: int = num(200, 1, unit="env steps")  # a worker's own steps between pulls
    random_steps: int = num(1000, 0, unit="env steps")  # uniform random actions until the GLOBAL clock passes this
    # A custom resource each rollout actor asks for one unit of (e.g. "carla_server", declared per node
    # in ray_cluster.yaml as the number of CARLA servers it can host): the scheduler then spreads them.
    server_resource: str | None = None
    # A worker slot whose workers fail this many times in a row without a report stops the run.
    max_failures_in_a_row: int = num(5, 1, unit="failures")
    # Store the privileged expert's action at every step (expert_action, a label for BC and datasets).
    record_expert_action: bool = True
