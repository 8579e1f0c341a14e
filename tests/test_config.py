from pathlib import Path

import pytest

from configs.loader import CONFIG_DIR, ConfigError, load_config, save_config
from configs.schema import Config


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), Config)


def test_overrides_with_dotted_paths():
    config = load_config(CONFIG_DIR / "quickstart.yaml",
                         ["learner.batch_size=32", "agent.guidance.vmr_weight=1.0", "feedback.wanted=[vlm_action, safety]",
                          "env.town=Generated", "run.local=true"])
    assert config.learner.batch_size == 32 and config.agent.guidance.vmr_weight == 1.0
    assert config.feedback.wanted == ("vlm_action", "safety") and config.env.town == "Generated" and config.run.local


@pytest.mark.parametrize("override,message", [
    ("agent.algorithm=ppo", "agent.algorithm = 'ppo' is invalid: must be one of drqv2, sac, td3"),
    ("learner.batch_size=0", "learner.batch_size = 0 is invalid: must be an integer >= 1"),
    ("learner.batch_size=1.5", "learner.batch_size = 1.5 is invalid: must be an integer"),
    ("agent.gamma=1.5", "agent.gamma = 1.5 is invalid: must be a number in [0, 1)"),
    ("agent.guidance.vmr_wieght=1", "unknown field agent.guidance.vmr_wieght"),
    ("feedback.wanted=[vlm_action, mood]", "feedback.wanted"),
    ("learner", "must look like section.field=value"),
])
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
