"""Where alert notifications go: one module per kind of sink, and the delivery loop they share.

* :mod:`pipelines.sinks.base`: the :class:`~pipelines.sinks.base.Sink`
  protocol (``send(batch)``) and the :class:`~pipelines.sinks.base.Notifier`
  that queues, batches, retries and counts for every sink;
* :mod:`pipelines.sinks.registry`: every kind of sink by name, with the
  setting that lists its URLs;
* one module per kind: :mod:`~pipelines.sinks.alertmanager`,
  :mod:`~pipelines.sinks.webhook`.

A new kind of sink is one module here that registers itself
(``@register("kind", setting="kind_urls")``) plus its setting in
:class:`pipelines.settings.Settings`; ``tests/unit/test_sink_contract.py``
then runs the contract against it.
"""

from pipelines.sinks.base import DeliveryError, Notifier, Sink
from pipelines.sinks.registry import register, sink_types

__all__ = ["DeliveryError", "Notifier", "Sink", "register", "sink_types"]
