"""Committing a chosen samples offset through Faust's consumer: the worker's one use of a private Faust API.

Why: offsets are committed only up to what a snapshot covers (:mod:`pipelines.state`),
so the worker reads the samples topics with acks off (Faust then commits nothing
of them) and commits ``offset + 1`` itself once the snapshot at ``offset`` is in
Kafka. Faust has no public call to commit a given offset: its ``Consumer.commit``
commits what its streams acknowledged. ``Consumer._commit_offsets`` is where that
public call ends: it skips partitions no longer assigned (a late commit after a
revoke), flushes the producer, commits in the group, and records the committed
offset. Written against faust-streaming 0.15.3 (pyproject.toml allows <0.16);
if it changes, only this module does.
"""

from __future__ import annotations

import faust
from faust.types import TP


async def commit_offset(app: faust.App, topic: str, partition: int, next_offset: int) -> bool:
    """Commit ``next_offset`` (the next message to read) for ``topic[partition]`` in the app's group.

    False when the partition is no longer assigned here or the commit was refused.
    """
    return bool(await app.consumer._commit_offsets({TP(topic, partition): next_offset}))
