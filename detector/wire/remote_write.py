"""Prometheus remote-write 1.0: checking, decoding and encoding request bodies.

The receiver's hot path. A body is snappy block-compressed protobuf
(``WriteRequest``); it is parsed with the labels left as raw bytes, which serve
as the series identity: a series seen before costs one dictionary lookup, and
only a new series has its labels decoded, validated and assigned a partition.

Samples are grouped by Kafka partition into :class:`~detector.wire.batch.SampleBatch`
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

import re
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cramjam
import numpy as np
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from detector.wire.batch import SampleBatch
from detector.errors import InvalidRequest
from detector.labels import (
    DEFAULT_PARTITION_BY,
    LANE_CLOCK,
    METRIC_NAME,
    Labels,
    canonical_bytes,
    labels_from_canonical,
    partition_for,
)
from detector.wire.metadata import TYPE_NAMES
from detector.wire.proto import remote_pb2

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
    # Prometheus sends at most max_samples_per_send (2000) series per request;
    # far more is a sender batching without bound, refused before any series
    # is looked at.
    max_series_per_request: int = 50_000
    # Which label and metric names are valid: "legacy" (Prometheus 2.x:
    # [a-zA-Z_][a-zA-Z0-9_]*, metric names may also hold ':') or "utf8"
    # (Prometheus 3.x: any non-empty UTF-8 name, as OpenTelemetry needs).
    name_validation: str = "legacy"

    def __post_init__(self) -> None:
        if self.name_validation not in NAME_SCHEMES:
            raise ValueError(f"name_validation must be one of {', '.join(NAME_SCHEMES)}, got {self.name_validation!r}")


#: Name validation schemes, see :attr:`WriteLimits.name_validation`.
NAME_SCHEMES = ("legacy", "utf8")


@dataclass(frozen=True)
class SampleWindow:
    """The sample timestamps a request may carry, relative to the receiver's clock.

    Like Prometheus's TSDB, a receiver takes samples only in a window around
    now: older than ``max_age_ms`` no rule can read them any more, and more
    than ``max_ahead_ms`` ahead they would drag a partition's event time into
    the future. A timestamp of 0 or less (proto3 sends 0 when the field is
    left out) is always outside.

    >>> window = SampleWindow(max_age_ms=3_600_000, max_ahead_ms=300_000)
    >>> window.bounds(now_ms=10_000_000)
    (6400000, 10300000)
    >>> SampleWindow(max_age_ms=10**15, max_ahead_ms=0).bounds(now_ms=5)
    (1, 5)
    """

    max_age_ms: int
    max_ahead_ms: int

    def bounds(self, now_ms: int) -> tuple[int, int]:
        """The oldest and newest timestamp accepted at ``now_ms``, both inclusive."""
        return max(1, now_ms - self.max_age_ms), now_ms + self.max_ahead_ms


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


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
    # Samples outside the accepted window, dropped, by reason ("too_old",
    # "too_new"); when every sample of a request is outside, its series are
    # also named in ``problems`` (a 400).
    out_of_window: dict[str, int] = field(default_factory=dict)
    # One series that lost samples to the window, for a log line.
    out_of_window_example: str = ""
    # Metric family name -> declared type ("counter", "gauge", ...), from the
    # request's metadata; types the sender calls unknown are left out.
    metadata: dict[str, str] = field(default_factory=dict)

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

    With a ``window``, samples outside it (at ``clock()``, in ms) are dropped
    and counted; a request with no sample inside is answered 400 naming its
    series. Without one every timestamp is taken (offline tools).

    >>> window = SampleWindow(max_age_ms=60_000, max_ahead_ms=60_000)
    >>> decoder = RemoteWriteDecoder(4, window=window, clock=lambda: 1_000_000)
    >>> up = (("__name__", "up"), ("job", "api"))
    >>> mixed = decoder.decode(encode_write_request([(up, [(0, 1.0), (990_000, 1.0), (9_000_000, 1.0)])]))
    >>> mixed.samples, mixed.out_of_window, mixed.problems
    (1, {'too_old': 1, 'too_new': 1}, [])
    >>> decoder.decode(encode_write_request([(up, [(0, 1.0)])])).problems
    ['series {__name__="up", job="api"}: 1 samples outside the accepted window [1970-01-01T00:15:40Z, 1970-01-01T00:17:40Z] (1 too old, oldest 1970-01-01T00:00:00Z)']
    """

    def __init__(
        self,
        partitions: int,
        *,
        limits: WriteLimits | None = None,
        partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY,
        cache_size: int = 1_000_000,
        feeds_global_lane: Callable[[Labels], bool] | None = None,
        window: SampleWindow | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.partitions = partitions
        self.window = window
        self.clock = clock
        self.feeds_global_lane = feeds_global_lane
        self.limits = limits or WriteLimits()
        self.partition_by = partition_by
        self.cache_size = cache_size
        # Encoded label entries (tag, length, Label bytes each) -> identity.
        self._known: dict[bytes, _SeriesRef] = {}

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
        # request, so per-series Python work is what this costs. The fast path
        # reads the samples off the end of the series' bytes; what precedes
        # them must then be, byte for byte, the labels of a series already
        # validated. Anything else takes the slow path through protobuf.
        raws = request.timeseries
        if len(raws) >= _VECTOR_MIN_SERIES:  # senders send alike series together: as many samples as the first
            first = _peel_samples(raws[0])
            # a first series not seen before: most likely a request of new series (a sender's start, a
            # receiver's restart), which the numpy passes would only find unknown before the loop
            if first is not None and len(first[1]) <= _MAX_ALIKE_SAMPLES and raws[0][: first[0]] in known:
                raws = self._decode_alike_samples(raws, len(first[1]), columns)
        for raw in raws:
            peeled = _peel_samples(raw)
            ref = known.get(raw[: peeled[0]]) if peeled is not None else None
            if ref is None:
                ref, peeled = self._slow_path(raw, out)
                if ref is None:
                    continue
            _, stamps, values = peeled
            cols = columns.get(ref.partition)
            if cols is None:
                cols = columns[ref.partition] = _PartitionColumns()
            cols.add(ref.key, stamps, values)
            if ref.global_lane:
                lane = columns.get(_GLOBAL_LANE)
                if lane is None:
                    lane = columns[_GLOBAL_LANE] = _PartitionColumns()
                lane.add(ref.key, stamps, values)
        bounds = self.window.bounds(self.clock()) if self.window is not None else None
        offenders: list[_Offender] = []
        for partition, cols in columns.items():
            cut = cols.cut(self.limits.max_message_bytes, bounds)
            if partition == _GLOBAL_LANE:  # a copy: counted where the originals are
                out.global_batches = cut.batches
                continue
            out.series += cut.series
            out.samples += cut.samples
            if cut.series:
                out.batches[partition] = cut.batches
            for reason, count in (("too_old", cut.too_old), ("too_new", cut.too_new)):
                if count:
                    out.out_of_window[reason] = out.out_of_window.get(reason, 0) + count
            offenders += cut.offenders
        if offenders:
            out.out_of_window_example = offenders[0].describe(bounds)
            if not out.samples:  # nothing in the window: the sender must hear of it
                out.refused_series += len(offenders)
                out.refused_samples += sum(out.out_of_window.values())
                out.problems += [o.describe(bounds) for o in offenders[:_MAX_REPORTED_PROBLEMS]]
        out.metadata = _metadata_types(request.metadata)
        if self.feeds_global_lane is not None and out.batches:
            newest = max(int(b.timestamps.max()) for batches in out.batches.values() for b in batches)
            out.global_batches.append(_clock_batch(newest))
        return out

    def _decode_alike_samples(self, raws: Sequence[bytes], count: int,
                              columns: dict[int, _PartitionColumns]) -> list[bytes]:
        """The usual request at once: series of known labels with ``count`` samples each (one in steady
        state, ten or so from a sender catching up) go to their partitions' columns with numpy doing the
        per-sample work; returns the other series, in order, for the loop."""
        peeled = _peel_alike_samples(raws, count)
        if peeled is None:
            return list(raws)
        ok, key_ends, stamps, values = peeled
        rows = np.flatnonzero(ok)
        label_bytes = [raws[i][:end] for i, end in zip(rows.tolist(), key_ends[rows].tolist())]
        refs = list(map(self._known.get, label_bytes))
        found = [ref is not None for ref in refs]
        if not all(found):
            rows, refs = rows[np.fromiter(found, dtype=bool, count=len(found))], [r for r in refs if r is not None]
        taken = rows  # the series read here (rows below also holds their global-lane copies)
        if len(rows):
            keys = [ref.key for ref in refs]  # canonical, as the batches carry them
            lanes = [ref.partition for ref in refs]
            if self.feeds_global_lane is not None:  # a copy of each global-lane series, as the loop makes
                copied = [i for i, ref in enumerate(refs) if ref.global_lane]
                if copied:
                    lanes += [_GLOBAL_LANE] * len(copied)
                    keys = keys + [keys[i] for i in copied]
                    rows = np.concatenate([rows, rows[copied]])
            by_lane = np.fromiter(lanes, dtype=np.int64, count=len(lanes))
            order = np.argsort(by_lane, kind="stable")  # request order within each partition
            bounds = np.flatnonzero(np.diff(by_lane[order])) + 1
            for part in np.split(order, bounds):
                lane = int(by_lane[part[0]])
                cols = columns.get(lane)
                if cols is None:
                    cols = columns[lane] = _PartitionColumns()
                picked = rows[part]
                cols.add_alike([keys[i] for i in part.tolist()], count, stamps[picked].ravel(), values[picked].ravel())
        if len(taken) == len(raws):
            return []
        left = np.ones(len(raws), dtype=bool)
        left[taken] = False
        return [raws[i] for i in np.flatnonzero(left).tolist()]

    def _slow_path(self, raw: bytes, out: DecodedWrite) -> tuple[_SeriesRef | None, _Peeled | None]:
        """Parse one series with protobuf: first sight of a series, or an unusual encoding."""
        try:
            ts = remote_pb2.RawTimeSeries.FromString(raw)
        except DecodeError as exc:
            raise InvalidRequest(400, f"a series is not a valid TimeSeries protobuf: {exc}") from None
        _refuse_wrong_wire_types(ts)
        samples = ts.samples
        if not samples:
            if ts.histograms:
                out.refused_series += 1
                out.refused_samples += len(ts.histograms)
                out.problems.append(
                    f"series {_describe(ts.labels)}: native histograms are not supported; send classic _bucket series"
                )
            return None, None
        key = b"".join(_LABEL_TAG + _varint(len(label)) + label for label in ts.labels)
        ref = self._known.get(key) or self._learn(key, ts.labels, out)
        if ref is None:
            out.refused_series += 1
            out.refused_samples += len(samples)
            return None, None
        stamps = [_varint(s.timestamp & _U64) for s in samples]
        values = [_F64.pack(s.value) for s in samples]
        return ref, (len(key), stamps, values)

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
            request = remote_pb2.SeriesBytesWriteRequest.FromString(raw)
        except DecodeError as exc:
            raise InvalidRequest(400, f"body is not a remote-write WriteRequest protobuf: {exc}") from None
        _refuse_wrong_wire_types(request)
        if len(request.timeseries) > limits.max_series_per_request:
            raise InvalidRequest(
                413,
                f"{len(request.timeseries)} series in one request, over the limit of "
                f"{limits.max_series_per_request}; send smaller requests (Prometheus: queue_config.max_samples_per_send)",
            )
        return request

    def _learn(self, raw_key: bytes, raw_labels: Sequence[bytes], out: DecodedWrite) -> _SeriesRef | None:
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


def _metadata_types(entries: Sequence[bytes]) -> dict[str, str]:
    """Family name -> type of each metadata entry (Prometheus sends them in requests of their own)."""
    types = {}
    for raw in entries:
        try:
            entry = remote_pb2.MetricMetadata.FromString(raw)
        except DecodeError as exc:
            raise InvalidRequest(400, f"a metadata entry is not a valid MetricMetadata protobuf: {exc}") from None
        kind = TYPE_NAMES.get(entry.type, "unknown")
        if kind != "unknown" and entry.metric_family_name:
            types[entry.metric_family_name] = kind
    return types


_GLOBAL_LANE = -1  # the columns key of the global lane's copy
_LANE_CLOCK_KEY = canonical_bytes(LANE_CLOCK)
_LABEL_TAG = b"\x0a"  # TimeSeries field 1, length-delimited
_F64 = struct.Struct("<d")
_U64 = (1 << 64) - 1
_ZERO_VALUE = bytes(8)  # proto3 leaves out a value of 0.0
_Peeled = tuple[int, list[bytes], list[bytes]]


def _clock_batch(t_ms: int) -> SampleBatch:
    """The global lane's clock: one sample at the request's newest timestamp (see detector.rules.placement)."""
    return SampleBatch([_LANE_CLOCK_KEY], np.zeros(1, dtype=np.uint32), np.array([t_ms], dtype=np.int64), np.ones(1))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _peel_samples(raw: bytes) -> _Peeled | None:
    """Read the Sample fields off the end of an encoded TimeSeries.

    Returns (where the samples start, each timestamp's varint bytes, each
    value's 8 bytes), in order, or None if the series does not end in samples
    encoded the usual way: ``0x12 len [0x09 value] 0x10 timestamp``. A wrong
    split is harmless: the bytes before the samples must equal a validated
    label encoding, or the series takes the slow path.
    """
    end = len(raw)
    stamps: list[bytes] = []
    values: list[bytes] = []
    while end > 2 and not raw[end - 1] & 0x80:
        tag = end - 2
        while tag >= 0 and raw[tag] & 0x80:
            tag -= 1
        size = end - tag - 1
        if tag < 2 or raw[tag] != 0x10 or size > 10:
            break
        start = tag - 11
        if start >= 0 and raw[tag - 9] == 0x09 and raw[start + 1] == 10 + size and raw[start] == 0x12:
            values.append(raw[tag - 8 : tag])
        elif raw[tag - 1] == 1 + size and raw[tag - 2] == 0x12:
            start = tag - 2
            values.append(_ZERO_VALUE)
        else:
            break
        stamps.append(raw[tag + 1 : end])
        end = start
    if not stamps:
        return None
    stamps.reverse()
    values.reverse()
    return end, stamps, values


_VECTOR_MIN_SERIES = 16  # below this the per-series loop is as quick
# Above this many samples per series the peel's numpy passes (one per sample, over every series)
# cost more than the loop's per-series work, and a request whose first series is long while the
# others are short would pay them all for nothing.
_MAX_ALIKE_SAMPLES = 32
_TAIL = 22  # the longest one-sample ending: 0x12 len 0x09 value(8) 0x10 timestamp(up to 10)
_TAIL_COLS = np.arange(_TAIL)
_VARINT_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)


def _peel_alike_samples(raws: Sequence[bytes], count: int) -> tuple[np.ndarray, ...] | None:
    """:func:`_peel_samples` for every series at once, for those ending in exactly ``count`` samples.

    Returns (which series end in ``count`` samples encoded the usual way, where their labels end,
    the timestamps and the values, one row per series), or None for a request with no series. As
    with the per-series peel a wrong split is harmless: the bytes before the samples must equal a
    validated label encoding, so a series with more samples (one taken for labels) or fewer (labels
    taken for a sample) misses the cache and takes the loop.
    """
    if not len(raws) or count < 1:
        return None
    lengths = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))
    blob = np.frombuffer(b"".join(raws), dtype=np.uint8)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    ok = np.ones(len(raws), dtype=bool)
    stamps = np.empty((len(raws), count), dtype=np.int64)
    values = np.empty((len(raws), count), dtype=np.float64)
    for j in range(count - 1, -1, -1):  # from the last sample back
        peeled, ends, stamps[:, j], values[:, j] = _peel_last_sample(blob, starts, ends)
        ok &= peeled
        if not ok.any():
            return None
    return ok, ends - starts, stamps, values


def _peel_last_sample(blob: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, ...]:
    """The Sample ending at each ``ends`` (bytes of ``blob`` before ``starts`` excluded): (whether it
    is encoded the usual way, where it starts, its timestamp, its value); where it is not, the end
    stays put."""
    at = ends[:, None] - _TAIL + _TAIL_COLS  # each series' last _TAIL bytes, zero before its start
    tail = np.where(at >= starts[:, None], blob[np.clip(at, 0, len(blob) - 1)], 0)
    # The timestamp: a last byte without the continuation bit, after up to 9 with it.
    more = (tail[:, -10:-1] & 0x80) != 0
    stamp_len = 1 + np.where(more.all(axis=1), 9, np.argmin(more[:, ::-1], axis=1))
    rows = np.arange(len(ends))
    tag = _TAIL - 1 - stamp_len  # the column of the timestamp's field tag
    ok = ((tail[:, -1] & 0x80) == 0) & (tail[rows, tag] == 0x10)
    with_value = ok & (tail[rows, tag - 9] == 0x09) & (tail[rows, tag - 10] == 10 + stamp_len) & (tail[rows, tag - 11] == 0x12)
    zero_value = ok & ~with_value & (tail[rows, tag - 1] == 1 + stamp_len) & (tail[rows, tag - 2] == 0x12)
    ok = with_value | zero_value
    sample_start = ends - _TAIL + np.where(with_value, tag - 11, tag - 2)
    ok &= sample_start >= starts
    value_bytes = tail[rows[:, None], np.clip(tag[:, None] - 8 + np.arange(8), 0, _TAIL - 1)]
    values = np.where(with_value, np.ascontiguousarray(value_bytes).view("<f8")[:, 0], 0.0)
    stamp_cols = np.clip(tag[:, None] + 1 + np.arange(10), 0, _TAIL - 1)
    digits = np.where(np.arange(10) < stamp_len[:, None], tail[rows[:, None], stamp_cols] & 0x7F, 0).astype(np.uint64)
    stamps = (digits << _VARINT_SHIFTS).sum(axis=1, dtype=np.uint64).view(np.int64)
    return ok, np.where(ok, sample_start, ends), stamps, values


def _decode_varints(chunks: list[bytes]) -> np.ndarray:
    """Many unsigned varints at once; int64 by two's complement, as protobuf reads int64."""
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    out = np.zeros(len(chunks), dtype=np.uint64)
    for size in np.unique(lengths).tolist():
        pick = np.flatnonzero(lengths == size)
        digits = data[starts[pick, None] + np.arange(size)].astype(np.uint64) & np.uint64(0x7F)
        out[pick] = (digits << (np.arange(size, dtype=np.uint64) * np.uint64(7))).sum(axis=1, dtype=np.uint64)
    return out.view(np.int64)


# Field numbers each message declares; an unknown field with one of these
# numbers arrived with the wrong wire type (Python's protobuf keeps it as an
# unknown field instead of failing, which would turn a bad Sample.value into
# a silent 0.0). Other numbers are fields of newer senders and are ignored.
_KNOWN_FIELDS = {"SeriesBytesWriteRequest": {1, 3}, "RawTimeSeries": {1, 2, 3, 4}, "Sample": {1, 2}}


def _refuse_wrong_wire_types(message: remote_pb2.SeriesBytesWriteRequest | remote_pb2.RawTimeSeries) -> None:
    def check(part: object, name: str, where: str) -> None:
        for unknown in unknown_fields.UnknownFieldSet(part):
            if unknown.field_number in _KNOWN_FIELDS[name]:
                raise InvalidRequest(400, f"{where}: field {unknown.field_number} of {name} has the wrong wire type")

    if isinstance(message, remote_pb2.SeriesBytesWriteRequest):
        check(message, "SeriesBytesWriteRequest", "WriteRequest")
        return
    where = f"series {_describe(message.labels)}"
    check(message, "RawTimeSeries", where)
    for sample in message.samples:
        check(sample, "Sample", f"{where}, a sample")


class _PartitionColumns:
    """Accumulates one partition's share of a request, then cuts it into batches.

    Timestamps are kept as their varint bytes and values as their 8 bytes,
    and decoded for the whole partition at once.
    """

    __slots__ = ("keys", "counts", "stamps", "values", "alike_keys", "alike_counts", "alike_stamps", "alike_values")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.counts: list[int] = []
        self.stamps: list[bytes] = []
        self.values: list[bytes] = []
        # Series decoded at once (RemoteWriteDecoder._decode_alike_samples), their samples in order.
        self.alike_keys: list[bytes] = []
        self.alike_counts: list[int] = []
        self.alike_stamps: list[np.ndarray] = []
        self.alike_values: list[np.ndarray] = []

    def add(self, key: bytes, stamps: list[bytes], values: list[bytes]) -> None:
        self.keys.append(key)
        self.counts.append(len(stamps))
        self.stamps += stamps
        self.values += values

    def add_alike(self, keys: list[bytes], count: int, stamps: np.ndarray, values: np.ndarray) -> None:
        """Series of ``count`` samples each, series by series (``count`` stamps of the first, then the next's)."""
        self.alike_keys += keys
        self.alike_counts += [count] * len(keys)
        self.alike_stamps.append(stamps)
        self.alike_values.append(values)

    def cut(self, max_bytes: int, bounds: tuple[int, int] | None) -> _Cut:
        """Decode the columns, drop samples outside ``bounds``, and cut batches of about ``max_bytes``."""
        stamps, values = list(self.alike_stamps), list(self.alike_values)
        if self.stamps:
            stamps.append(_decode_varints(self.stamps))
            values.append(np.frombuffer(b"".join(self.values), dtype="<f8"))
        stamps, values = np.concatenate(stamps), np.concatenate(values)
        keys = self.alike_keys + self.keys if self.alike_keys else self.keys
        counts = self.alike_counts + self.counts if self.alike_keys else self.counts
        out = _Cut()
        if bounds is not None and (stamps.min() < bounds[0] or stamps.max() > bounds[1]):  # the usual case skips this
            too_old, too_new = stamps < bounds[0], stamps > bounds[1]
            out.too_old, out.too_new = int(too_old.sum()), int(too_new.sum())
            if out.too_old or out.too_new:
                keys, counts, stamps, values = _drop(keys, counts, too_old, too_new, stamps, values, out)
        out.series, out.samples = len(keys), len(stamps)
        if not keys:
            return out
        if 4 * len(keys) + sum(map(len, keys)) + 20 * len(stamps) <= max_bytes:  # the usual case: one batch
            out.batches.append(_batch(keys, counts, 0, len(keys), 0, len(stamps), stamps, values))
            return out
        first_series = first_sample = size = sample_end = 0
        for i in range(len(keys)):
            cost = 4 + len(keys[i]) + 20 * counts[i]
            if size and size + cost > max_bytes:
                out.batches.append(_batch(keys, counts, first_series, i, first_sample, sample_end, stamps, values))
                first_series, first_sample, size = i, sample_end, 0
            size += cost
            sample_end += counts[i]
        out.batches.append(_batch(keys, counts, first_series, len(keys), first_sample, sample_end, stamps, values))
        return out


def _drop(keys: list[bytes], counts: list[int], too_old: np.ndarray, too_new: np.ndarray, stamps: np.ndarray,
          values: np.ndarray, out: _Cut) -> tuple[list[bytes], list[int], np.ndarray, np.ndarray]:
    """The columns without the out-of-window samples; the series that lost some go to ``out.offenders``."""
    per_series = np.array(counts, dtype=np.int64)
    starts = np.cumsum(per_series) - per_series
    old_per_series = np.add.reduceat(too_old, starts)
    new_per_series = np.add.reduceat(too_new, starts)
    lost = old_per_series + new_per_series
    for i in np.flatnonzero(lost).tolist():
        span = stamps[starts[i] : starts[i] + per_series[i]]
        out.offenders.append(_Offender(keys[i], int(old_per_series[i]), int(new_per_series[i]),
                                       int(span.min()), int(span.max())))
    keep = ~(too_old | too_new)
    left = per_series - lost
    kept = [key for key, n in zip(keys, left.tolist()) if n]
    return kept, [n for n in left.tolist() if n], stamps[keep], values[keep]


def _batch(keys: list[bytes], counts: list[int], s0: int, s1: int, k0: int, k1: int,
           stamps: np.ndarray, values: np.ndarray) -> SampleBatch:
    index = np.repeat(np.arange(s1 - s0, dtype=np.uint32), counts[s0:s1])
    return SampleBatch(keys[s0:s1], index, stamps[k0:k1], values[k0:k1])


@dataclass
class _Cut:
    """One partition's share of a request, in the window and cut into batches."""

    batches: list[SampleBatch] = field(default_factory=list)
    series: int = 0
    samples: int = 0
    too_old: int = 0
    too_new: int = 0
    offenders: list[_Offender] = field(default_factory=list)


@dataclass(frozen=True)
class _Offender:
    """A series that had samples outside the window."""

    key: bytes  # canonical label bytes
    too_old: int
    too_new: int
    oldest: int
    newest: int

    def describe(self, bounds: tuple[int, int] | None) -> str:
        lo, hi = bounds or (0, 0)
        why = []
        if self.too_old:
            why.append(f"{self.too_old} too old, oldest {_iso(self.oldest)}")
        if self.too_new:
            why.append(f"{self.too_new} too new, newest {_iso(self.newest)}")
        labels = ", ".join(f'{name}="{value}"' for name, value in labels_from_canonical(self.key))
        return (f"series {{{labels}}}: {self.too_old + self.too_new} samples outside the accepted window "
                f"[{_iso(lo)}, {_iso(hi)}] ({'; '.join(why)})")


def _iso(t_ms: int) -> str:
    """A millisecond timestamp as UTC ISO 8601 (seconds), readable in an error message."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ms / 1000))
    except (OverflowError, OSError, ValueError):
        return f"{t_ms} ms"


class _InvalidSeries(ValueError):
    pass


# Prometheus 2.x's name rules (model.LabelNameRE, model.MetricNameRE).
_LEGACY_LABEL_NAME = re.compile(rb"[a-zA-Z_][a-zA-Z0-9_]*")
_LEGACY_METRIC_NAME = re.compile(rb"[a-zA-Z_:][a-zA-Z0-9_:]*")
_METRIC_NAME_BYTES = METRIC_NAME.encode()


def _validated_labels(raw_labels: Sequence[bytes], limits: WriteLimits) -> Labels:
    """Decode and check one series' labels; the error names the series."""
    if len(raw_labels) > limits.max_labels_per_series:
        raise _InvalidSeries(
            f"series {_describe(raw_labels)}: {len(raw_labels)} labels, over the limit of "
            f"{limits.max_labels_per_series}"
        )
    pairs: list[tuple[str, str]] = []
    previous = b""
    legacy = limits.name_validation == "legacy"
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
        elif legacy and not _LEGACY_LABEL_NAME.fullmatch(name):
            problem = (f"label name {name.decode(errors='backslashreplace')!r} is not valid under the legacy name "
                       f"scheme ([a-zA-Z_][a-zA-Z0-9_]*); name_validation=utf8 accepts any UTF-8 name")
        elif legacy and name == _METRIC_NAME_BYTES and value and not _LEGACY_METRIC_NAME.fullmatch(value):
            problem = (f"metric name {value.decode(errors='backslashreplace')!r} is not valid under the legacy name "
                       f"scheme ([a-zA-Z_:][a-zA-Z0-9_:]*); name_validation=utf8 accepts any UTF-8 name")
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
