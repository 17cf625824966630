"""Prometheus remote-write 1.0: checking, decoding and encoding request bodies.

The receiver's hot path. A body is snappy block-compressed protobuf
(``WriteRequest``); it is parsed with the labels left as raw bytes, which serve
as the series identity: a series seen before costs one dictionary lookup, and
only a new series has its labels decoded, validated and assigned a partition.

Samples are grouped by Kafka partition into :class:`~detector.batch.SampleBatch`
messages. A request holding some invalid series still delivers its valid ones
(Prometheus drops a whole request answered 400, so refusing everything would
lose good samples); the invalid ones are reported, each naming the series.

>>> body = encode_write_request([((("__name__", "up"), ("job", "api")), [(1000, 1.0)])])
>>> decoder = RemoteWriteDecoder(partitions=4)
>>> decoder.check_headers(REMOTE_WRITE_HEADERS)
>>> decoded = decoder.decode(body)
>>> decoded.samples, decoded.series, decoded.problems
(1, 1, [])
>>> [batch.series_labels(0) for batches in decoded.batches.values() for batch in batches]
[(('__name__', 'up'), ('job', 'api'))]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cramjam
import numpy as np
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from detector.batch import SampleBatch
from detector.errors import InvalidRequest
from detector.labels import (
    DEFAULT_PARTITION_BY,
    METRIC_NAME,
    Labels,
    canonical_bytes,
    partition_for,
)
from detector.proto import remote_pb2

REMOTE_WRITE_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}

# Remote-write 1.0 senders send the bare type; some name the 1.0 message
# explicitly. Remote-write 2.0 (io.prometheus.write.v2.Request) is not read.
_ACCEPTED_CONTENT_TYPES = {"application/x-protobuf", "application/x-protobuf;proto=prometheus.writerequest"}

# Problems listed in one 400 answer; the rest are counted, not spelled out.
_MAX_REPORTED_PROBLEMS = 10


@dataclass(frozen=True)
class WriteLimits:
    """What one request and one series may hold. Over a limit is a 4xx, never a 5xx."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024
    max_labels_per_series: int = 40
    max_label_name_bytes: int = 1024
    max_label_value_bytes: int = 2048
    # A Kafka message holds at most about this many bytes of batch; bigger
    # groups are split (Kafka's default message limit is 1 MiB).
    max_message_bytes: int = 900 * 1024


@dataclass
class DecodedWrite:
    """One request's samples grouped by partition, and what was refused.

    ``global_batches`` repeat the samples of series that global rule groups
    read (see :mod:`detector.rules.placement`), for the one-partition global lane.
    """

    batches: dict[int, list[SampleBatch]] = field(default_factory=dict)
    global_batches: list[SampleBatch] = field(default_factory=list)
    series: int = 0
    samples: int = 0
    new_series: int = 0
    problems: list[str] = field(default_factory=list)
    refused_series: int = 0
    refused_samples: int = 0

    def problem_summary(self) -> str:
        shown = self.problems[:_MAX_REPORTED_PROBLEMS]
        more = self.refused_series - len(shown)
        text = "; ".join(shown)
        if more > 0:
            text += f"; and {more} more invalid series"
        return (
            f"refused {self.refused_series} series ({self.refused_samples} samples), "
            f"accepted {self.series} series ({self.samples} samples): {text}"
        )


@dataclass(frozen=True, slots=True)
class _SeriesRef:
    key: bytes  # canonical label bytes
    partition: int
    global_lane: bool = False


class RemoteWriteDecoder:
    """Turns remote-write bodies into per-partition sample batches.

    Keeps a cache from raw label bytes to series identity; it is bounded
    (``cache_size``) and simply emptied when full, which costs one re-validation
    per live series and keeps memory flat under series churn.
    """

    def __init__(
        self,
        partitions: int,
        *,
        limits: WriteLimits | None = None,
        partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY,
        cache_size: int = 1_000_000,
        feeds_global_lane: Callable[[Labels], bool] | None = None,
    ) -> None:
        self.partitions = partitions
        self.feeds_global_lane = feeds_global_lane
        self.limits = limits or WriteLimits()
        self.partition_by = partition_by
        self.cache_size = cache_size
        self._known: dict[tuple[bytes, ...], _SeriesRef] = {}

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """Raise 415 unless the request says snappy-compressed protobuf."""
        encoding = (headers.get("Content-Encoding") or "").strip().lower()
        if encoding != "snappy":
            raise InvalidRequest(
                415, f"Content-Encoding must be 'snappy' (remote-write 1.0), got {encoding or 'none'!r}"
            )
        ctype = (headers.get("Content-Type") or "").replace(" ", "").lower()
        if ctype not in _ACCEPTED_CONTENT_TYPES:
            raise InvalidRequest(
                415,
                f"Content-Type must be 'application/x-protobuf' (remote-write 1.0), got {ctype or 'none'!r}",
            )

    def decode(self, body: bytes) -> DecodedWrite:
        """Decode one body; raises :class:`InvalidRequest` for a body that cannot be read at all."""
        request = self._parse(body)
        out = DecodedWrite()
        known = self._known
        columns: dict[int, _PartitionColumns] = {}
        # The hot loop: Prometheus sends ~2000 series of one sample each per
        # request, so per-series Python work is what this costs; keep it lean.
        for ts in request.timeseries:
            samples = ts.samples
            if not samples:
                if ts.histograms:
                    self._refuse_histograms(ts, out)
                continue
            # The tuple, not the joined bytes: label entries split differently
            # on the wire are different series.
            raw_key = tuple(ts.labels)
            ref = known.get(raw_key)
            if ref is None:
                ref = self._learn(raw_key, ts.labels, out)
                if ref is None:
                    out.refused_series += 1
                    out.refused_samples += len(samples)
                    continue
            cols = columns.get(ref.partition)
            if cols is None:
                cols = columns[ref.partition] = _PartitionColumns()
            _add(cols, ref.key, samples)
            if ref.global_lane:
                lane = columns.get(_GLOBAL_LANE)
                if lane is None:
                    lane = columns[_GLOBAL_LANE] = _PartitionColumns()
                _add(lane, ref.key, samples)
        for partition, cols in columns.items():
            if partition == _GLOBAL_LANE:
                out.global_batches = cols.batches(self.limits.max_message_bytes)
                continue
            out.series += len(cols.keys)
            out.samples += len(cols.stamps)
            out.batches[partition] = cols.batches(self.limits.max_message_bytes)
        return out

    def _refuse_histograms(self, ts: remote_pb2.RawTimeSeries, out: DecodedWrite) -> None:
        out.refused_series += 1
        out.refused_samples += len(ts.histograms)
        out.problems.append(
            f"series {_describe(ts.labels)}: native histograms are not supported; send classic _bucket series"
        )

    def _parse(self, body: bytes) -> remote_pb2.RawWriteRequest:
        limits = self.limits
        if len(body) > limits.max_body_bytes:
            raise InvalidRequest(413, f"body of {len(body)} bytes is over the limit of {limits.max_body_bytes}")
        try:
            size = cramjam.snappy.decompress_raw_len(body)
        except Exception as exc:  # cramjam raises its own DecompressionError
            raise InvalidRequest(400, f"body is not snappy block-compressed: {exc}") from None
        if size > limits.max_decompressed_bytes:
            raise InvalidRequest(
                413,
                f"snappy header claims {size} bytes uncompressed, over the limit of "
                f"{limits.max_decompressed_bytes}",
            )
        try:
            raw = bytes(cramjam.snappy.decompress_raw(body))
        except Exception as exc:
            raise InvalidRequest(400, f"corrupt snappy body: {exc}") from None
        try:
            request = remote_pb2.RawWriteRequest.FromString(raw)
        except DecodeError as exc:
            raise InvalidRequest(400, f"body is not a remote-write WriteRequest protobuf: {exc}") from None
        # Python's protobuf keeps a field of the wrong wire type as an unknown
        # field instead of failing, which would turn a bad Sample.value into a
        # silent 0.0. Dropping unknown fields changes the size only if there were
        # any; only then is it worth a closer look.
        request.DiscardUnknownFields()
        if request.ByteSize() != len(raw):
            _refuse_wrong_wire_types(remote_pb2.RawWriteRequest.FromString(raw))
        return request

    def _learn(self, raw_key: tuple[bytes, ...], raw_labels: Sequence[bytes], out: DecodedWrite) -> _SeriesRef | None:
        try:
            labels = _validated_labels(raw_labels, self.limits)
        except _InvalidSeries as exc:
            out.problems.append(str(exc))
            return None
        if len(self._known) >= self.cache_size:
            self._known.clear()
        ref = _SeriesRef(
            canonical_bytes(labels),
            partition_for(labels, self.partitions, self.partition_by),
            self.feeds_global_lane is not None and self.feeds_global_lane(labels),
        )
        self._known[raw_key] = ref
        out.new_series += 1
        return ref


_GLOBAL_LANE = -1  # the columns key of the global lane's copy


def _add(cols: _PartitionColumns, key: bytes, samples) -> None:  # noqa: ANN001 - a protobuf repeated field
    cols.keys.append(key)
    if len(samples) == 1:
        sample = samples[0]
        cols.counts.append(1)
        cols.stamps.append(sample.timestamp)
        cols.values.append(sample.value)
    else:
        cols.counts.append(len(samples))
        cols.stamps.extend([s.timestamp for s in samples])
        cols.values.extend([s.value for s in samples])


# Field numbers each message declares; an unknown field with one of these
# numbers arrived with the wrong wire type. Other numbers are fields of newer
# senders and are ignored, as protobuf intends.
_KNOWN_FIELDS = {"RawWriteRequest": {1, 3}, "RawTimeSeries": {1, 2, 3, 4}, "Sample": {1, 2}}


def _refuse_wrong_wire_types(request: remote_pb2.RawWriteRequest) -> None:
    def check(message: object, name: str, where: str) -> None:
        for unknown in unknown_fields.UnknownFieldSet(message):
            if unknown.field_number in _KNOWN_FIELDS[name]:
                raise InvalidRequest(
                    400, f"{where}: field {unknown.field_number} of {name.removeprefix('Raw')} has the wrong wire type"
                )

    check(request, "RawWriteRequest", "WriteRequest")
    for i, ts in enumerate(request.timeseries):
        check(ts, "RawTimeSeries", f"series {_describe(ts.labels)}")
        for sample in ts.samples:
            check(sample, "Sample", f"series {i} {_describe(ts.labels)}, a sample")


class _PartitionColumns:
    """Accumulates one partition's share of a request, then cuts it into batches."""

    __slots__ = ("keys", "counts", "stamps", "values")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.counts: list[int] = []
        self.stamps: list[int] = []
        self.values: list[float] = []

    def batches(self, max_bytes: int) -> list[SampleBatch]:
        stamps = np.asarray(self.stamps, dtype=np.int64)
        values = np.asarray(self.values, dtype=np.float64)
        out = []
        first_series = first_sample = size = 0
        n_series = len(self.keys)
        sample_end = 0
        for i in range(n_series):
            cost = 4 + len(self.keys[i]) + 20 * self.counts[i]
            if size and size + cost > max_bytes:
                out.append(self._batch(first_series, i, first_sample, sample_end, stamps, values))
                first_series, first_sample, size = i, sample_end, 0
            size += cost
            sample_end += self.counts[i]
        out.append(self._batch(first_series, n_series, first_sample, sample_end, stamps, values))
        return out

    def _batch(self, s0: int, s1: int, k0: int, k1: int, stamps: np.ndarray, values: np.ndarray) -> SampleBatch:
        counts = self.counts[s0:s1]
        index = np.repeat(np.arange(s1 - s0, dtype=np.uint32), counts)
        return SampleBatch(self.keys[s0:s1], index, stamps[k0:k1], values[k0:k1])


class _InvalidSeries(ValueError):
    pass


def _validated_labels(raw_labels: Sequence[bytes], limits: WriteLimits) -> Labels:
    """Decode and check one series' labels; the error names the series."""
    if len(raw_labels) > limits.max_labels_per_series:
        raise _InvalidSeries(
            f"series {_describe(raw_labels)}: {len(raw_labels)} labels, over the limit of "
            f"{limits.max_labels_per_series}"
        )
    pairs: list[tuple[str, str]] = []
    previous = b""
    for raw in raw_labels:
        try:
            label = remote_pb2.Label.FromString(raw)
        except DecodeError:
            raise _InvalidSeries(f"series {_describe(raw_labels)}: a label is not a valid Label message") from None
        name, value = label.name, label.value
        problem = None
        if not name:
            problem = "empty label name"
        elif name <= previous:
            problem = f"label {name!r} is {'duplicated' if name == previous else 'out of order'}; labels must be sorted by name and unique"
        elif len(name) > limits.max_label_name_bytes:
            problem = f"label name of {len(name)} bytes, over the limit of {limits.max_label_name_bytes}"
        elif len(value) > limits.max_label_value_bytes:
            problem = f"label {name!r} value of {len(value)} bytes, over the limit of {limits.max_label_value_bytes}"
        if problem:
            raise _InvalidSeries(f"series {_describe(raw_labels)}: {problem}")
        previous = name
        try:
            text_name, text_value = name.decode(), value.decode()
        except UnicodeDecodeError:
            raise _InvalidSeries(f"series {_describe(raw_labels)}: label {name!r} is not valid UTF-8") from None
        if text_value:  # an empty value means the label is absent, as in Prometheus
            pairs.append((text_name, text_value))
    if not any(n == METRIC_NAME for n, _ in pairs):
        raise _InvalidSeries(f"series {_describe(raw_labels)}: no metric name (label __name__ missing or empty)")
    return tuple(pairs)


def _describe(raw_labels: Iterable[bytes] | Iterable[remote_pb2.Label]) -> str:
    """Render a series the way Prometheus prints it, even when its bytes are bad."""
    parts = []
    for raw in raw_labels:
        try:
            label = raw if isinstance(raw, remote_pb2.Label) else remote_pb2.Label.FromString(raw)
        except DecodeError:
            parts.append("<undecodable label>")
            continue
        name = label.name.decode(errors="backslashreplace")
        value = label.value.decode(errors="backslashreplace")
        parts.append(f'{name}="{value}"')
    text = "{" + ", ".join(parts) + "}"
    return text if len(text) <= 300 else text[:297] + "..."


def encode_write_request(series: Iterable[tuple[Labels, Sequence[tuple[int, float]]]]) -> bytes:
    """Encode (labels, [(ts_ms, value), ...]) pairs as a snappy-compressed body.

    Labels are written in the order given; pass sorted label sets (as
    :data:`~detector.labels.Labels` are) for a valid request.
    """
    request = remote_pb2.WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, value in labels:
            label = ts.labels.add()
            label.name = name.encode()
            label.value = value.encode()
        for stamp, value in samples:
            sample = ts.samples.add()
            sample.timestamp = stamp
            sample.value = value
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
