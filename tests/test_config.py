import re
from pathlib import Path

import pytest

from configs.loader import CONFIG_DIR, ConfigError, load_config, save_config
from configs.schema import Config


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), Config)


def test_overrides_with_dotted_paths():
    config = load_config(
        CONFIG_DIR / "quickstart.yaml",
        [
            "learner.batch_size=32",
            "agent.guidance.vmr_weight=1.0",
            "feedback.model=expert+clip",
            "feedback.wanted=[vlm_action, safety]",
            "env.town=Generated",
            "run.mode=local",
            "workers.num_workers=1",
            "agent.lr=3e-4",
            "agent.drqv2.std_steps=500",
        ],
    )
    assert config.learner.batch_size == 32 and config.agent.guidance.vmr_weight == 1.0
    assert config.feedback.wanted == ("vlm_action", "safety") and config.env.town == "Generated"
    assert config.run.mode == "local" and config.agent.lr == 3e-4  # e-notation is a number, not a string
    assert config.agent.params.std_steps == 500 and config.agent.params is config.agent.drqv2


def test_whole_numbers_in_e_notation_are_integers():
    config = load_config(CONFIG_DIR / "quickstart.yaml", ["learner.replay_capacity=1e5", "run.total_env_steps=2.0e4"])
    assert config.learner.replay_capacity == 100_000 and isinstance(config.learner.replay_capacity, int)
    assert config.run.total_env_steps == 20_000 and isinstance(config.run.total_env_steps, int)


@pytest.mark.parametrize(
    "override,message",
    [
        ("agent.algorithm=ppo", "agent.algorithm = 'ppo' is invalid: must be one of drqv2, sac, td3"),
        ("learner.batch_size=0", "learner.batch_size = 0 is invalid: must be an integer >= 1"),
        ("learner.batch_size=1.5", "learner.batch_size = 1.5 is invalid: must be a whole number"),
        ("agent.gamma=1.5", "agent.gamma = 1.5 is invalid: must be a number in [0, 1)"),
        ("agent.guidance.vmr_wieght=1", "unknown field agent.guidance.vmr_wieght"),
        ("feedback.wanted=[vlm_action, mood]", "feedback.wanted"),
        ("learner", "must look like section.field=value"),
        ("env.backend=unreal", "env.backend = 'unreal' is invalid: must be one of sumo, carla"),
        ("env.carla.port=70000", "env.carla.port = 70000 is invalid: must be an integer in [0, 65535] (port)"),
        ("env.carla.tick_timeout_s=0", "env.carla.tick_timeout_s = 0.0 is invalid: must be a number > 0 (s)"),
        # Values that used to crash or hang the run at its first update or tick:
        ("learner.publish_every_updates=0", "learner.publish_every_updates = 0 is invalid: must be an integer >= 1"),
        ("agent.td3.policy_delay=0", "agent.td3.policy_delay = 0 is invalid: must be an integer >= 1"),
        (
            "workers.pull_weights_every_steps=0",
            "workers.pull_weights_every_steps = 0 is invalid: must be an integer >= 1",
        ),
        ("eval.routes=[]", "eval.routes = () is invalid: must be a non-empty list"),
        # Fields that moved tell where they went:
        ("agent.std_steps=5", "agent.std_steps has moved: it is now agent.drqv2.std_steps"),
        ("run.local=true", "run.local has moved: it is now run.mode (local or ray)"),
    ],
)
def test_invalid_values_name_the_field_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / "quickstart.yaml", [override])
    assert message in str(err.value)


def test_bare_off_is_the_string_not_a_boolean():
    assert load_config(None, ["feedback.mode=off"]).feedback.mode == "off"


def test_missing_file_lists_the_shipped_configs(tmp_path):
    with pytest.raises(ConfigError, match="quickstart.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path: Path):
    config = load_config(CONFIG_DIR / "sac.yaml", ["learner.batch_size=99"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_every_shipped_config_and_variant_loads():
    # configs/rllib/ add an `rllib` section: baselines/rllib/config.py loads them (tests/test_rllib_baselines.py)
    paths = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "rllib" not in p.relative_to(CONFIG_DIR).parts)
    assert len([p for p in paths if p.parent.name == "variants"]) == 16
    for path in paths:
        load_config(path)


def test_variants_turn_on_what_their_name_says():
    clip = load_config(CONFIG_DIR / "variants" / "sac-clip.yaml")
    assert clip.agent.algorithm == "sac" and clip.learner.clip_reward_scale == 0.25
    assert clip.feedback.model == "clip" and clip.feedback.wanted == ("clip_margin",)
    assert clip.learner.batch_size == 256  # inherited from sac.yaml through `extends`
    vmr = load_config(CONFIG_DIR / "variants" / "td3-vmr.yaml")
    assert vmr.agent.guidance.vmr_weight == 1.0 and vmr.agent.guidance.awag_weight == 0.0
    plain = load_config(CONFIG_DIR / "variants" / "drqv2-plain.yaml")
    assert plain.feedback.mode == "off" and plain.agent.guidance.vmr_weight == 0.0
    semantic = load_config(CONFIG_DIR / "variants" / "drqv2-semantic.yaml")
    assert semantic.learner.semantic_reward_scale > 0 and "collided" in semantic.feedback.clip.unsafe_prompts[0]


def test_extends_merges_sections_and_refuses_loops(tmp_path):
    (tmp_path / "base.yaml").write_text("learner: {batch_size: 16, learning_starts: 7}\n")
    (tmp_path / "top.yaml").write_text("extends: base.yaml\nlearner: {batch_size: 32}\n")
    config = load_config(tmp_path / "top.yaml")
    assert config.learner.batch_size == 32 and config.learner.learning_starts == 7
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["learner.clip_reward_scale=0.25"], "learner.clip_reward_scale needs the clip_margin feedback"),
        (["feedback.model=clip", "feedback.wanted=[clip_margin]"], "agent.guidance (VMR/AWAG) needs the vlm_action"),
        (["feedback.wanted=[vlm_action, safety]"], "feedback.model = 'expert' answers ['vlm_action']"),
        (["learner.semantic_reward_scale=0.5", "feedback.model=expert+clip"], "semantic_reward_scale needs the safety"),
    ],
)
def test_feedback_a_loss_needs_must_be_asked_for(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(CONFIG_DIR / "quickstart.yaml", overrides)


def test_carla_backend_settings():
    config = load_config(
        CONFIG_DIR / "quickstart.yaml",
        ["env.backend=carla", "env.carla.carla_root=carla-0.9.16", "workers.server_resource=carla_server"],
    )
    assert config.env.backend == "carla" and config.env.carla.launch and config.env.carla.nullrhi
    assert config.env.carla.carla_root == "carla-0.9.16"
    with pytest.raises(ConfigError, match=re.escape("env.carla.launch=false connects every worker to 127.0.0.1:2000")):
        load_config(
            CONFIG_DIR / "quickstart.yaml", ["env.backend=carla", "env.carla.launch=false", "workers.num_workers=2"]
        )


def test_every_numeric_field_declares_its_unit_and_range():
    import dataclasses
    import typing

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                yield from walk(hint, f"{prefix}{f.name}.")
            elif hint in (int, float) or set(typing.get_args(hint)) in ({int, type(None)}, {float, type(None)}):
                yield f"{prefix}{f.name}", f

    missing = [path for path, f in walk(Config, "") if "range" not in f.metadata or not f.metadata.get("unit")]
    assert not missing, f"numeric fields without a unit and range: {missing}"


def test_debug_overlay_goes_on_top_of_any_experiment():
    config = load_config([CONFIG_DIR / "quickstart.yaml", CONFIG_DIR / "debug.yaml"], ["learner.batch_size=4"])
    assert config.run.total_env_steps == 400 and config.env.town == "Generated"
    assert config.learner.batch_size == 4 and config.agent.algorithm == "drqv2"  # overrides come last
    assert load_config([CONFIG_DIR / "sac.yaml", CONFIG_DIR / "debug.yaml"]).agent.algorithm == "sac"


def test_yaml_syntax_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("learner:\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(bad)


def test_a_run_needs_a_budget():
    with pytest.raises(ConfigError, match="give the run a budget"):
        load_config(None, ["run.total_env_steps=0"])
    assert load_config(None, ["run.total_env_steps=0", "run.total_updates=100"]).run.total_updates == 100
