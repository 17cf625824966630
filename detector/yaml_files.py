"""Reading the small YAML configuration files (model catalog, forecast specs) the same way.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x.yml"
>>> _ = path.write_text("- just a list")
>>> read_mapping(path, "a mapping with 'models'")
Traceback (most recent call last):
...
detector.yaml_files.YamlFileError: ...x.yml: expected a mapping with 'models'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from detector.errors import HeadroomError


class YamlFileError(HeadroomError):
    """A configuration file that cannot be read, or is not a mapping; the message names the file."""


def read_mapping(path: str | Path, expected: str) -> Mapping | None:
    """The top-level mapping of a YAML file (None for an empty file); ``expected`` says what it should hold."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise YamlFileError(f"{path}: cannot read: {exc}") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise YamlFileError(f"{path}: expected {expected}")
    return raw
