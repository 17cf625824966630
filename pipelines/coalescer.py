"""Sample batches of concurrent requests merged into one Kafka message per partition.

Prometheus sends a 2000-sample request per shard, and the receiver splits each
over the partitions: at 8 partitions a message would carry about 250 samples,
and the worker's fixed costs per message (decode, one evaluation pass, offsets,
publishing) would dominate. The coalescer holds each partition's batches for
at most ``linger_ms`` (or until ``max_samples`` / ``max_bytes``), then
produces them as one message. Every request waits until the message holding
its samples is acknowledged by Kafka, so the acknowledgement contract is the
receiver's: a 2xx only for samples Kafka has, and a failed produce fails every
request in it (each gets its 503 and Prometheus retries; the store drops what
was already there). The price is at most ``linger_ms`` more latency per request.

>>> import asyncio
>>> from detector.wire.batch import SampleBatch
>>> sent = []
>>> async def send(records):
...     sent.extend(records)
>>> async def main():
...     coalescer = Coalescer(send, linger_ms=5)
...     up = lambda i: SampleBatch.from_series([((("__name__", "up"), ("instance", str(i))), [(1000, 1.0)])])
...     await asyncio.gather(*(coalescer.submit([("samples", 3, up(i))]) for i in range(4)))
>>> asyncio.run(main())
>>> [(topic, partition, len(SampleBatch.decode(value))) for topic, partition, _, value in sent]
[('samples', 3, 4)]
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from detector.wire.batch import SampleBatch

Record = tuple[str, int | None, bytes | None, bytes]


@dataclass
class _Pending:
    batches: list[SampleBatch] = field(default_factory=list)
    waiters: list[asyncio.Future] = field(default_factory=list)
    samples: int = 0
    size: int = 0  # bytes of the batches' encodings, about
    timer: asyncio.TimerHandle | None = None


class Coalescer:
    """Per (topic, partition): batches wait together for one produce; see the module docstring."""

    def __init__(
        self,
        send_records: Callable[[list[Record]], Awaitable[None]],
        *,
        linger_ms: float = 25,
        max_samples: int = 20_000,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.send_records = send_records
        self.linger_s = linger_ms / 1000
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._flushing: set[asyncio.Task] = set()
        self.messages = 0  # produced, for the receiver's metrics
        self.batches = 0

    async def submit(self, messages: list[tuple[str, int, SampleBatch]]) -> None:
        """Returns once Kafka acknowledged the messages holding these batches; raises what the produce raised."""
        if not messages:
            return
        loop = asyncio.get_running_loop()
        waits = []
        for topic, partition, batch in messages:
            key = (topic, partition)
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending()
                pending.timer = loop.call_later(self.linger_s, self._flush, key)
            pending.batches.append(batch)
            pending.samples += len(batch)
            pending.size += 20 * len(batch) + sum(map(len, batch.series_keys))
            waiter = loop.create_future()
            pending.waiters.append(waiter)
            waits.append(waiter)
            if pending.samples >= self.max_samples or pending.size >= self.max_bytes:
                self._flush(key)
        results = await asyncio.gather(*waits, return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed

    async def drain(self) -> None:
        """Produce everything pending now and wait for it (shutdown)."""
        for key in list(self._pending):
            self._flush(key)
        while self._flushing:
            await asyncio.gather(*list(self._flushing), return_exceptions=True)

    def _flush(self, key: tuple[str, int]) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._produce(key, pending))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _produce(self, key: tuple[str, int], pending: _Pending) -> None:
        topic, partition = key
        try:
            value = SampleBatch.concat(pending.batches).encode()
            await self.send_records([(topic, partition, None, value)])
        except BaseException as exc:  # every request in the message is refused alike
            for waiter in pending.waiters:
                if not waiter.done():
                    waiter.set_exception(exc if isinstance(exc, Exception) else RuntimeError("produce cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        self.messages += 1
        self.batches += len(pending.batches)
        for waiter in pending.waiters:
            if not waiter.done():
                waiter.set_result(None)
