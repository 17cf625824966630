"""Helpers shared by the integration tests (import as ``tests.support``)."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.stack.kafka import read_json_records as read_alerts  # noqa: F401 - the tests read alert events with it


# Tests that replay fixed timestamps (2023) through a real receiver open its
# accepted time window that far back; the default (2 h plus the rules' reach)
# would refuse them.
OLD_TIMESTAMPS_ENV = {"HEADROOM_CATCH_UP_WINDOW": "10y"}
STAGING_OFF_ENV = {"HEADROOM_STAGED_RULES": "false"}
"""For tests of the global lane and its state partition: they stay right whatever the default of staged rules."""


def write_rules(directory: Path, rules: list[dict], interval: str = "1s", name: str = "rules.yml") -> Path:
    """A rule file with one group holding ``rules``."""
    path = directory / name
    path.write_text(json.dumps({"groups": [{"name": "test", "interval": interval, "rules": rules}]}))
    return path


