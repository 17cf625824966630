"""Shared fixtures: real services, started by the suite itself.

Integration tests never skip for a missing service: the Kafka broker's jars
are resolved from Maven Central and Debian packages are installed on first use.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from pipelines.stack.kafka import KafkaBroker

_names = itertools.count()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One real Kafka broker for the whole session (tests that stop Kafka start their own)."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def app_id(request: pytest.FixtureRequest) -> str:
    """A fresh app id (so fresh topics and consumer group) per test."""
    return f"t{next(_names)}-{request.node.name[:30].replace('[', '-').replace(']', '')}".lower()


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool of Prometheus 2.x, installed with apt-get if the machine has none."""
    from tests.promtool_oracle import promtool_binary

    return promtool_binary()
