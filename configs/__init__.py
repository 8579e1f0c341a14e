"""The configuration: frozen dataclasses, a file per section (schema/), and their YAML loader."""
