"""Real local services for the demo and the integration tests.

A single-node Kafka broker built from Maven Central jars, a Prometheus server
and an Alertmanager, each a background process with its data, config, pid file
and log in one directory.
"""

from pipelines.stack.alertmanager import AlertmanagerServer
from pipelines.stack.kafka import KAFKA_VERSION, KafkaBroker, create_topics
from pipelines.stack.process import StackError
from pipelines.stack.prometheus import PrometheusServer

__all__ = [
    "KAFKA_VERSION",
    "AlertmanagerServer",
    "KafkaBroker",
    "PrometheusServer",
    "StackError",
    "create_topics",
]
