"""Wire formats: what arrives from senders and what travels on Kafka.

* ``remote_write`` - Prometheus remote-write 1.0 bodies (snappy + protobuf) into
  per-partition sample batches; ``proto/`` holds its message definitions.
* ``batch`` - the columnar sample batch, the samples topic's record format.
* ``metadata`` - metric family types (counter, gauge, ...) as senders report them.
* ``openmetrics`` - the text exposition format, read by replay and the benches.

A new ingest protocol is a decoder module here plus one entry in ``DECODERS``,
keyed by the protocol version a request announces; the receiver picks the
decoder with :func:`protocol_of`.

>>> protocol_of({"X-Prometheus-Remote-Write-Version": "0.1.0"})
'1.0'
>>> protocol_of({}) in DECODERS
True
"""

from __future__ import annotations

from collections.abc import Mapping

from detector.wire.remote_write import RemoteWriteDecoder

#: Decoder class by remote-write protocol version.
DECODERS = {"1.0": RemoteWriteDecoder}


def protocol_of(headers: Mapping[str, str]) -> str:
    """The remote-write protocol version a request speaks.

    Remote-write 1.0 senders announce ``0.1.0`` (or nothing, for older ones);
    2.0 senders announce ``2.0.0`` and a ``proto=io.prometheus.write.v2.Request``
    content type, which has no decoder here yet and is refused by the 1.0
    decoder's header check with a clear 415.
    """
    version = (headers.get("X-Prometheus-Remote-Write-Version") or "").strip()
    return "2.0" if version.startswith("2.") else "1.0"
