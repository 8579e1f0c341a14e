"""configs.schema is a package of one module per section; its __init__ re-exports every name, each
section module imports on its own (no cycle through the package), and the type hints the loader
reads resolve in every section's own module."""

import dataclasses
import subprocess
import sys
import typing

import pytest

import configs.schema as schema

SECTIONS = ("fields", "env", "feedback", "workers", "algorithms", "learner", "run", "config")


def test_every_exported_name_is_there():
    missing = [name for name in schema.__all__ if not hasattr(schema, name)]
    assert not missing
    assert len(set(schema.__all__)) == len(schema.__all__)
    for name in ("Config", "MOVED", "cross_checks", "model_fields", "algorithm_names", "SAFE_PROMPTS", "Range"):
        assert name in schema.__all__


@pytest.mark.parametrize("module", SECTIONS)
def test_each_section_module_imports_first_in_a_fresh_process(module):
    done = subprocess.run(
        [sys.executable, "-c", f"import configs.schema.{module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_type_hints_resolve_across_the_whole_config():
    def walk(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                yield from walk(hints[f.name])
        yield cls

    classes = set(walk(schema.Config))
    assert {c.__module__ for c in classes} == {f"configs.schema.{m}" for m in SECTIONS if m != "fields"}
    for name in schema.algorithm_names():
        section = getattr(schema.AgentConfig(), name)
        assert "implementation" not in {f.name for f in dataclasses.fields(section)}  # a ClassVar, not a field
