"""Faust's aiokafka transport with a short fetch wait.

Faust creates its worker consumer with ``fetch_max_wait_ms=1500``, fixed. A
worker also consumes an internal partition that is always empty; while the
sample partitions have records buffered, aiokafka fetches only that empty
partition and the broker holds the request the full 1.5 s before answering, so
draining a backlog stalls for 1.5 s at a time (bench/README.md measured the
worker at 194k samples/s over a whole backlog against 319k steady). A 100 ms
wait removes the stall and costs an idle worker a few cheap requests a second.

Used by naming the broker ``headroom://host:port`` instead of ``kafka://``.
"""

from __future__ import annotations

import aiokafka
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 100
SCHEME = "headroom"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")
