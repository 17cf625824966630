"""The metadata topic, read whole by every worker: metric family types for the scorers.

The receiver produces one record per metric family whose declared type is new
or changed (key: family name, value: ``{"type": ...}``) to a compacted
one-partition topic. Every worker, not just one of a consumer group, needs
every type, since any partition may hold a series of any family; so the
topic is read without a group, from the beginning, and followed for as long
as the worker runs: the "global table" pattern, with a compacted topic as the
table's log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from detector.wire.metadata import MetricTypes, decode_type

log = logging.getLogger("headroom.metadata")


FETCH_WAIT_MS = 5000
"""How long the broker holds a fetch of the (mostly quiet) metadata topic open. A record
ends the wait at once, so this costs no delay; aiokafka's 500 ms default made the idle
worker's broker spend about 9 CPU-ms/s more (39-41 against 30-32.5 ms/s, three interleaved
pairs, 2026-12-06), the largest part of Kafka's CPU per sample at the runbook's rate."""


class MetadataFeed:
    """Follows the metadata topic into ``types``; ``on_change`` gets the families learned or changed."""

    def __init__(self, bootstrap: str, topic: str, types: MetricTypes, on_change: Callable[[set[str]], None]) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.types = types
        self.on_change = on_change
        self.records = 0
        self.unreadable = 0

    def apply(self, records: list[tuple[bytes | None, bytes | None]]) -> set[str]:
        """Fold (key, value) records into the types; returns what changed. Bad records are logged and skipped."""
        learned: dict[str, str] = {}
        for key, value in records:
            self.records += 1
            kind = decode_type(value)
            if not key or kind is None:
                self.unreadable += 1
                log.error("skipping unreadable metadata record key=%r value=%r", key, (value or b"")[:100])
                continue
            learned[key.decode("utf-8", "replace")] = kind
        changed = self.types.update(learned)
        if changed:
            self.on_change(changed)
        return changed

    async def run(self) -> None:
        """Read from the start and follow, until cancelled; reconnects on errors."""
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                        fetch_max_wait_ms=FETCH_WAIT_MS)
            try:
                await consumer.start()
                partition = TopicPartition(self.topic, 0)
                consumer.assign([partition])
                await consumer.seek_to_beginning(partition)
                delay = 0.5
                while True:
                    batches = await consumer.getmany(timeout_ms=1000)
                    for messages in batches.values():
                        self.apply([(m.key, m.value) for m in messages])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker restart: read again from the start, types are idempotent
                log.warning("metadata topic %s unavailable (%s: %s); retrying in %.1fs", self.topic, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)
            finally:
                await consumer.stop()
