"""Helpers shared by the integration tests (import as ``tests.support``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiokafka import AIOKafkaConsumer


# Tests that replay fixed timestamps (2023) through a real receiver open its
# accepted time window that far back; the default (2 h plus the rules' reach)
# would refuse them.
OLD_TIMESTAMPS_ENV = {"HEADROOM_CATCH_UP_WINDOW": "10y"}


def write_rules(directory: Path, rules: list[dict], interval: str = "1s", name: str = "rules.yml") -> Path:
    """A rule file with one group holding ``rules``."""
    path = directory / name
    path.write_text(json.dumps({"groups": [{"name": "test", "interval": interval, "rules": rules}]}))
    return path


async def read_alerts(bootstrap: str, topic: str, until, timeout: float = 60.0) -> list[dict]:
    """Alert events from the start of ``topic`` until ``until(events)`` is true or the timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    events: list[dict] = []
    try:
        async with asyncio.timeout(timeout):
            while not until(events):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    events += [json.loads(r.value) for r in records]
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return events
