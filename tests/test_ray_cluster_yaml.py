"""ray_cluster.yaml is a valid `ray up` config, checked offline with Ray's own schema and the
same preparation `ray up` does before it talks to the cloud; plus the layout Mentor relies on:
a GPU head for the learner, rollout nodes that declare `carla_server`, token auth on every node."""

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
jsonschema = pytest.importorskip("jsonschema")

from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture(scope="module")
def config() -> dict:
    data = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(data, dict)
    return data


def worker_types(config):
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def ray_start(commands: list[str]) -> list[str]:
    """The argv of every `ray start` in a list of shell commands."""
    found = []
    for command in commands:
        for part in command.split(";"):
            words = shlex.split(part)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words = words[1:]  # leading VAR=value assignments
            if words[:2] == ["ray", "start"]:
                found.append(part)
    return found


def flag(command: str, name: str) -> str | None:
    for word in shlex.split(command):
        if word.startswith(f"--{name}="):
            return word.split("=", 1)[1]
    return None


def test_valid_per_rays_schema(config):
    jsonschema.validate(config, json.loads(SCHEMA.read_text()))


def test_valid_after_ray_up_preparation(config):
    # What `ray up` runs before any cloud call: merge the provider's defaults, docker checks,
    # min/max workers per type, then validate_config (the schema again plus cross-field checks).
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["cluster_name"] == "mentor"
    assert prepared["provider"]["type"] == "aws"


def test_validation_is_not_vacuous(config):
    broken = copy.deepcopy(config)
    broken["available_node_types"][broken["head_node_type"]]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    broken = copy.deepcopy(config)
    broken["docker"]["gpus"] = True  # not a field of the docker section
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))


def test_gpu_head_hosts_the_learner(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) >= 1, "the learner asks for a GPU: the head must have one"
    assert "carla_server" not in head["resources"], "no rollout actor should land on the head"
    (start,) = ray_start(config["head_start_ray_commands"])
    assert "--head" in shlex.split(start)
    assert flag(start, "autoscaling-config") == "~/ray_bootstrap_config.yaml"
    assert float(flag(start, "num-gpus")) == head["resources"]["GPU"]
    assert float(flag(start, "num-cpus")) == head["resources"]["CPU"]


def test_rollout_nodes_declare_carla_servers(config):
    workers = worker_types(config)
    assert workers, "a worker node type for CARLA rollouts"
    starts = ray_start(config["worker_start_ray_commands"])
    assert len(starts) == 1
    (start,) = starts
    assert flag(start, "address") == "$RAY_HEAD_IP:6379"
    cli_resources = json.loads(flag(start, "resources"))
    for name, node_type in workers.items():
        resources = node_type["resources"]
        assert resources.get("carla_server", 0) >= 1, name
        # GPU 0: the GPU is the CARLA servers'; GPU-asking actors (learner, feedback) stay on the head.
        assert resources.get("GPU", 0) == 0, name
        assert resources["CPU"] >= resources["carla_server"], "one CPU per rollout actor"
        # The autoscaler's RAY_OVERRIDE_RESOURCES and the command line must agree.
        assert cli_resources == {"carla_server": resources["carla_server"]}
        assert float(flag(start, "num-cpus")) == resources["CPU"]
        assert float(flag(start, "num-gpus")) == resources["GPU"]
        assert node_type.get("min_workers", 0) <= node_type["max_workers"] <= config["max_workers"]


def test_node_labels_are_valid(config):
    from ray._private.label_utils import validate_node_label_syntax

    for node_type in config["available_node_types"].values():
        validate_node_label_syntax(node_type.get("labels", {}))


def test_docker_image_has_carla_and_gpus(config):
    docker = config["docker"]
    assert docker["image"] and not docker["image"].startswith("rayproject/")
    assert docker["image"].endswith(":0.9.16")
    options = " ".join(docker["run_options"])
    assert "--gpus all" in options and "--shm-size" in options
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM carlasim/carla:0\.9\.16\b", dockerfile, re.MULTILINE)
    assert "scripts/bootstrap.sh" in dockerfile and "CARLA_ROOT=/home/carla" in dockerfile
    # The image's Ray is the one this config (and the laptop running `ray up`) is written for.
    assert any(f"'{ray.__version__}'" in command for command in config["setup_commands"])


def test_auth_token_reaches_every_node(config):
    token_path = None
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" not in command:
            continue
        assert "RAY_AUTH_MODE=token" in command, command
        match = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", command)
        assert match, f"`ray start` without the token path: {command}"
        assert token_path in (None, match.group(1))
        token_path = match.group(1)
    # The token file is shipped to that path on every node from the launching machine.
    assert token_path in config["file_mounts"]
    assert config["file_mounts"][token_path] == "~/.ray/auth_token"
    # Every process in the containers (job drivers, `ray status`) sees the same settings.
    options = config["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in options
    assert f"--env RAY_AUTH_TOKEN_PATH={token_path}" in options
    assert any(token_path in command for command in config["setup_commands"]), "a missing token fails at setup"
