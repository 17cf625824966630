"""The sample batch: many samples of many series in one Kafka message.

A Faust agent handles about 10k events per second, so one event per sample
would cap the whole pipeline there. The receiver therefore produces one
columnar batch per partition per request, and the agents work on whole columns.

Wire format, version 2 (all integers little-endian)::

    offset  size  field
    0       4     magic b"HRSB"
    4       1     version (2)
    5       3     reserved, zero
    8       4     n_series   (u32)
    12      4     n_samples  (u32)
    16      ...   n_series x [u32 length, canonical label bytes]
                  (detector.labels.canonical_bytes: sorted, length-prefixed)
    ...     4n    series index of each sample minus the one before it (i32;
                  the first minus 0)
    ...     8n    timestamp of each sample, ms since the epoch (i64)
    ...     8n    value of each sample, IEEE-754 binary64 bits as sent

Version 1 is the same with the series index itself (u32) instead of its
differences; it is still read. The samples topic is zstd-compressed by the
producer, and a series' samples sit together, so the differences are runs of
0 and 1 that compress to almost nothing, where the indexes themselves cost
about 2 bytes per sample (2.2-2.6 of 17-20 bytes per sample on the runbook
fleet's messages; ``bench/README.md``, "Bytes per sample").

Values are copied as raw bits, never through arithmetic, so the staleness
marker NaN (0x7ff0000000000002) arrives bit-exact.

>>> batch = SampleBatch.from_series([((("__name__", "up"),), [(1000, 1.0), (2000, 0.0)])])
>>> again = SampleBatch.decode(batch.encode())
>>> again.series_labels(0), again.timestamps.tolist(), again.values.tolist()
((('__name__', 'up'),), [1000, 2000], [1.0, 0.0])
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from detector.errors import BatchFormatError
from detector.labels import Labels, canonical_bytes, labels_from_canonical

MAGIC = b"HRSB"
VERSION = 2  # written
READS = (1, 2)  # read: a worker reads what receivers of the version before wrote
_HEADER = struct.Struct("<4sB3xII")
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Columns of samples plus the table of series they belong to.

    ``series_keys[i]`` is the canonical label bytes of series ``i``;
    ``series_index[j]`` says which series sample ``j`` belongs to.
    """

    series_keys: list[bytes]
    series_index: np.ndarray  # uint32
    timestamps: np.ndarray  # int64, ms
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @classmethod
    def concat(cls, batches: Sequence[SampleBatch]) -> SampleBatch:
        """One batch holding every sample of ``batches``, in order (each series' samples keep theirs).

        A series in several batches appears once per batch in the series table.
        """
        if len(batches) == 1:
            return batches[0]
        keys: list[bytes] = []
        index, offset = [], 0
        for batch in batches:
            keys += batch.series_keys
            index.append(batch.series_index.astype(np.uint32) + np.uint32(offset))
            offset += len(batch.series_keys)
        return cls(
            keys,
            np.concatenate(index),
            np.concatenate([b.timestamps for b in batches]),
            np.concatenate([b.values for b in batches]),
        )

    @classmethod
    def from_series(cls, series: Iterable[tuple[Labels, Sequence[tuple[int, float]]]]) -> SampleBatch:
        """Build a batch from (labels, [(ts_ms, value), ...]) pairs."""
        keys: list[bytes] = []
        index: list[int] = []
        stamps: list[int] = []
        values: list[float] = []
        for labels, samples in series:
            i = len(keys)
            keys.append(canonical_bytes(labels))
            for ts, value in samples:
                index.append(i)
                stamps.append(ts)
                values.append(value)
        return cls(
            keys,
            np.asarray(index, dtype=np.uint32),
            np.asarray(stamps, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
        )

    def series_labels(self, i: int) -> Labels:
        return labels_from_canonical(self.series_keys[i])

    def encode(self) -> bytes:
        parts = [_HEADER.pack(MAGIC, VERSION, len(self.series_keys), len(self))]
        for key in self.series_keys:
            parts.append(_LENGTH.pack(len(key)))
            parts.append(key)
        # Differences fit in 32 bits: a message cannot hold 2**31 series (each costs 4+ bytes).
        steps = np.diff(self.series_index.astype(np.int64), prepend=0)
        parts.append(steps.astype("<i4").tobytes())
        parts.append(self.timestamps.astype("<i8", copy=False).tobytes())
        parts.append(self.values.astype("<f8", copy=False).tobytes())
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> SampleBatch:
        """Parse a message; :class:`BatchFormatError` says why it cannot be read."""
        if len(data) < _HEADER.size:
            raise BatchFormatError(f"sample batch too short: {len(data)} bytes")
        magic, version, n_series, n_samples = _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise BatchFormatError(f"not a Headroom sample batch (magic {magic!r})")
        if version not in READS:
            raise BatchFormatError(
                f"sample batch version {version} is not supported by this Headroom "
                f"(reads {', '.join(map(str, READS))}); upgrade the workers before the receivers"
            )
        pos = _HEADER.size
        keys = []
        append, unpack, size = keys.append, _LENGTH.unpack_from, len(data)
        if type(data) is not bytes:  # slices of bytes are the keys as they are; of anything else, copied
            data = bytes(data)
        try:
            for _ in range(n_series):  # one iteration per series: kept to the bare steps
                (length,) = unpack(data, pos)
                pos += 4
                end = pos + length
                if end > size:
                    raise struct.error(f"series {len(keys)} needs {length} bytes, {size - pos} left")
                append(data[pos:end])
                pos = end
        except struct.error as exc:
            raise BatchFormatError(f"sample batch series table truncated: {exc}") from None
        if len(data) - pos != 20 * n_samples:
            raise BatchFormatError(
                f"sample batch holds {len(data) - pos} bytes of samples, expected {20 * n_samples}"
            )
        if version == 1:
            index = np.frombuffer(data, dtype="<u4", count=n_samples, offset=pos)
        else:
            steps = np.frombuffer(data, dtype="<i4", count=n_samples, offset=pos)
            total = np.cumsum(steps, dtype=np.int64)
            if n_samples and (int(total.min()) < 0 or int(total.max()) >= n_series):
                raise BatchFormatError("sample batch refers to a series outside its table")
            index = total.astype(np.uint32)
        pos += 4 * n_samples
        stamps = np.frombuffer(data, dtype="<i8", count=n_samples, offset=pos)
        pos += 8 * n_samples
        values = np.frombuffer(data, dtype="<f8", count=n_samples, offset=pos)
        if n_samples and int(index.max()) >= n_series:
            raise BatchFormatError("sample batch refers to a series outside its table")
        return cls(keys, index, stamps, values)
