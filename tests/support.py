"""Helpers shared by the integration tests (import as ``tests.support``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipelines.stack.kafka import read_json_records as read_alerts  # noqa: F401 - the tests read alert events with it
from simulator.runbook import RunbookSimulator
from simulator.serve import push_remote_write


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




async def push_live_scenario(write_url: str, scenario: str, pushed_ms: int, step_ms: int = 15_000) -> int:
    """Push ``pushed_ms`` of the runbook simulator's ``scenario`` (seed 0) to a remote-write URL, 600 times faster
    than real time, stamped on the ``step_ms`` grid so that its last sample is one step before now (the data is
    live: the worker notifies, and Alertmanager's clock agrees); asserts nothing was rejected and returns the
    first sample's time."""
    start_ms = (int(time.time() * 1000) - pushed_ms - step_ms) // step_ms * step_ms
    sim = RunbookSimulator(scenario, seed=0, start_ms=start_ms)
    stats = await push_remote_write(sim, write_url, start_ms=start_ms, step_ms=step_ms, speed=600.0,
                                    duration_s=pushed_ms / 1000 + 1)
    assert stats.rejected == 0
    return start_ms
