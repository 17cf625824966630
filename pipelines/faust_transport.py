"""Faust's aiokafka transport with a short fetch wait.

Faust creates its worker consumer with ``fetch_max_wait_ms=1500``, fixed. A
worker also consumes an internal partition that is always empty; while the
sample partitions have records buffered, aiokafka fetches only that empty
partition and the broker holds the request the full 1.5 s before answering, so
draining a backlog stalls for 1.5 s at a time (bench/README.md measured the
worker at 194k samples/s over a whole backlog against 319k steady). A 100 ms
wait removes the stall.

An idle worker would then send ten fetches a second, and each costs the broker
about 2-3 CPU-ms. A fetch that asks for every assigned partition returns as
soon as any of them has a record, so while nothing is buffered the wait can be
long at no cost in latency: :func:`wait_long_when_idle` uses
``FETCH_IDLE_WAIT_MS`` then and the short wait whenever some partition still
has records buffered or is paused, the case where a fetch leaves partitions
out and would hold them back. 5 s: against 1 s, the broker beside one idle
worker spent 27-34.5 CPU-ms/s instead of 36-39.5 (three interleaved pairs,
2026-12-06), and a worker between the requests of a sender that batches (the
catch-up shape sends one request every 15 s) is idle most of the time. A lost
assignment cancels the waiting fetch (aiokafka's fetcher), so a rebalance does
not wait for it. ``HEADROOM_FETCH_IDLE_WAIT_MS`` overrides it (for benches: 100
is the fixed wait of before).

Used by naming the broker ``headroom://host:port`` instead of ``kafka://``.
"""

from __future__ import annotations

import os

import aiokafka
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 100
FETCH_IDLE_WAIT_MS = int(os.environ.get("HEADROOM_FETCH_IDLE_WAIT_MS", "5000"))
SCHEME = "headroom"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        fetcher = getattr(self._consumer, "_fetcher", None)  # made by AIOKafkaConsumer.start()
        if fetcher is not None:
            wait_long_when_idle(fetcher)


def wait_long_when_idle(fetcher, idle_ms: int | None = None, busy_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Make an aiokafka ``Fetcher`` wait ``idle_ms`` on fetches that cover every assigned partition.

    The fetcher's loop calls ``_get_actions_per_node`` before building each round
    of fetch requests, and reads ``_fetch_max_wait_ms`` there; nothing else does.
    """
    idle = FETCH_IDLE_WAIT_MS if idle_ms is None else idle_ms
    plan = fetcher._get_actions_per_node

    def plan_with_wait(assignment):
        whole = not fetcher._records and not any(assignment.state_value(tp).paused for tp in assignment.tps)
        fetcher._fetch_max_wait_ms = idle if whole else busy_ms
        return plan(assignment)

    fetcher._get_actions_per_node = plan_with_wait


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")
