"""The typed experiment configuration: frozen dataclasses, validated on load.

A run is described by YAML files (configs/*.yaml, overlays such as configs/debug.yaml) plus
`key=value` overrides with dotted paths (`learner.batch_size=128`). Every numeric field declares
its unit and its allowed range (`num`); anything invalid stops the run at start with the field's
full path and what is allowed.

The algorithms are the sections of `AgentConfig`: a section's dataclass names the module that
implements it (`implementation`), and `agent.algorithm` picks one by its field name. Adding an
algorithm adds its files and one section line there (learners/registry.py resolves it).

One module per section (env, feedback, workers, algorithms for `agent`, learner for learner/data/
collect/eval, run), the field helpers (fields) and the whole `Config` with its cross-section checks
(config); every name is re-exported here, so `from configs.schema import Config` is the way in.
"""

from configs.schema.algorithms import (
    NETWORK_PRESETS,
    WORLD_MODEL_PRESETS,
    AgentConfig,
    BcConfig,
    DrQv2Config,
    GuidanceConfig,
    IqlConfig,
    SacConfig,
    Td3BcConfig,
    Td3Config,
    VlSafeConfig,
    algorithm_names,
)
from configs.schema.config import MOVED, Config, cross_checks
from configs.schema.env import TRAFFIC_PRESETS, CarlaConfig, EnvConfig
from configs.schema.feedback import (
    FEEDBACK_FIELDS,
    FEEDBACK_MODES,
    SAFE_PROMPTS,
    UNSAFE_PROMPTS,
    ClipConfig,
    DriveVlmConfig,
    FeedbackConfig,
    VlmConfig,
    model_fields,
)
from configs.schema.fields import Range, check, num, section
from configs.schema.learner import CollectConfig, DataConfig, EvalConfig, LearnerConfig
from configs.schema.run import RunConfig
from configs.schema.workers import WorkerConfig

__all__ = [
    "AgentConfig",
    "BcConfig",
    "CarlaConfig",
    "ClipConfig",
    "CollectConfig",
    "Config",
    "DataConfig",
    "DrQv2Config",
    "DriveVlmConfig",
    "EnvConfig",
    "EvalConfig",
    "FEEDBACK_FIELDS",
    "FEEDBACK_MODES",
    "FeedbackConfig",
    "GuidanceConfig",
    "IqlConfig",
    "LearnerConfig",
    "MOVED",
    "NETWORK_PRESETS",
    "Range",
    "RunConfig",
    "SAFE_PROMPTS",
    "SacConfig",
    "TRAFFIC_PRESETS",
    "Td3BcConfig",
    "Td3Config",
    "UNSAFE_PROMPTS",
    "VlSafeConfig",
    "VlmConfig",
    "WORLD_MODEL_PRESETS",
    "WorkerConfig",
    "algorithm_names",
    "check",
    "cross_checks",
    "model_fields",
    "num",
    "section",
]
