"""The frame a stage-1 partition sends a combine partition: partials, failures and its watermark.

One frame per (upstream, combine partition) per step; it says "here are my
partial rows for you for these ticks, these slots failed at these ticks, and
I have evaluated every tick up to my watermark". So a receiver recognises
rows for ticks at or before a sender's last watermark as sent before (a
redelivery, or a replay after the sender restored a snapshot) and drops them.
``seq`` numbers a sender's frames, for diagnostics.

Wire format, version 1 (all integers little-endian)::

    offset  size  field
    0       4     magic b"HRPF"
    4       1     version (1)
    5       3     reserved, zero
    8       8     plan fingerprint (u64): the rule set and partitioning slot numbers refer to
    16      4     source: the upstream partition (u32)
    20      4     sources: how many upstream partitions there are (u32)
    24      8     seq (u64), per source
    32      8     watermark (i64, ms; every tick up to it is evaluated)
    40      4     n_blocks (u32)
    44      4     n_failures (u32)
    48      ...   n_blocks x block:   slot u32, tick i64, n_rows u32, n_cols u8, 3 reserved,
                                      n_rows x [u32 length, canonical label bytes],
                                      n_rows x n_cols f64 (row-major, IEEE-754 bits as computed)
    ...     ...   n_failures x:       slot u32, tick i64, u32 length, UTF-8 message
    ...     8     origin (i64): the first tick the sender evaluated (INT64_MIN: none yet)
    ...     4     n_skips (u32)
    ...     ...   n_skips x:          interval_ms i64, first i64, resume i64: the sender skipped
                                      its ticks of that interval from first up to resume
                                      (HEADROOM_MAX_CATCH_UP); the receiver skips them too

Version 2 added the trailer (origin and skips) after the failures.

>>> import numpy as np
>>> frame = Frame(fingerprint=7, source=1, sources=4, seq=3, watermark=30_000,
...               blocks=[Block(0, 30_000, [(("ns", "a"),)], np.array([[2.0]]))],
...               failures=[Failure(1, 30_000, "many-to-many matching")])
>>> back = decode_frame(encode_frame(frame))
>>> back.source, back.watermark, back.blocks[0].labels, back.blocks[0].values.tolist(), back.failures[0].message
(1, 30000, [(('ns', 'a'),)], [[2.0]], 'many-to-many matching')
>>> decode_frame(b"HRSB" + bytes(60))
Traceback (most recent call last):
...
detector.stages.frames.FrameFormatError: not a partials frame (magic b'HRSB', expected b'HRPF')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from detector.errors import HeadroomError
from detector.labels import Labels, canonical_bytes, labels_from_canonical

MAGIC = b"HRPF"
VERSION = 2
NO_ORIGIN = -(2**63)
"""``Frame.origin`` of a sender that has evaluated no tick yet."""
_HEADER = struct.Struct("<4sB3xQIIQqII")
_BLOCK = struct.Struct("<IqIB3x")
_FAILURE = struct.Struct("<IqI")
_LENGTH = struct.Struct("<I")
_TRAILER = struct.Struct("<qI")
_SKIP = struct.Struct("<qqq")


# The same label sets travel at every tick: their encoding both ways is memoised
# (bounded, so series churn cannot grow it for ever).
_MEMO_LIMIT = 1 << 18  # label sets per memo; cleared when full
_KEYS: dict[Labels, bytes] = {}
_LABELS: dict[bytes, Labels] = {}


def _key(labels: Labels) -> bytes:
    key = _KEYS.get(labels)
    if key is None:
        if len(_KEYS) >= _MEMO_LIMIT:
            _KEYS.clear()
        key = _KEYS[labels] = canonical_bytes(labels)
    return key


def _labels(key: bytes) -> Labels:
    labels = _LABELS.get(key)
    if labels is None:
        if len(_LABELS) >= _MEMO_LIMIT:
            _LABELS.clear()
        labels = _LABELS[key] = labels_from_canonical(key)
    return labels


class FrameFormatError(HeadroomError):
    """Bytes that are not a partials frame this code can read (or not for this rule set)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One slot's partial rows at one tick (for one combine partition)."""

    slot: int
    tick: int
    labels: list[Labels]
    values: np.ndarray  # (rows, columns) float64


@dataclass(frozen=True, slots=True)
class Failure:
    """A slot whose stage-1 evaluation failed at a tick: the rule fails there, as in one engine."""

    slot: int
    tick: int
    message: str


@dataclass(frozen=True, slots=True)
class Skip:
    """Ticks of groups of ``interval_ms`` in [first, resume) the sender skipped (more than
    ``HEADROOM_MAX_CATCH_UP`` behind its watermark): one engine over all the data skips them too."""

    interval_ms: int
    first: int
    resume: int


@dataclass(frozen=True, slots=True)
class Frame:
    fingerprint: int
    source: int
    sources: int
    seq: int
    watermark: int
    blocks: list[Block] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    origin: int = NO_ORIGIN  # the first tick the sender evaluated: where the receiver's schedule starts
    skips: list[Skip] = field(default_factory=list)


def encode_frame(frame: Frame) -> bytes:
    out = bytearray(
        _HEADER.pack(MAGIC, VERSION, frame.fingerprint, frame.source, frame.sources, frame.seq,
                     frame.watermark, len(frame.blocks), len(frame.failures))
    )
    for block in frame.blocks:
        values = np.ascontiguousarray(block.values, dtype="<f8")
        if values.ndim != 2 or values.shape[0] != len(block.labels) or not 1 <= values.shape[1] <= 255:
            raise ValueError(f"block of slot {block.slot}: values must be (rows, 1..255 columns), got {values.shape}")
        out += _BLOCK.pack(block.slot, block.tick, len(block.labels), values.shape[1])
        for labels in block.labels:
            key = _key(labels)
            out += _LENGTH.pack(len(key)) + key
        out += values.tobytes()
    for failure in frame.failures:
        message = failure.message.encode()
        out += _FAILURE.pack(failure.slot, failure.tick, len(message)) + message
    out += _TRAILER.pack(frame.origin, len(frame.skips))
    for skip in frame.skips:
        out += _SKIP.pack(skip.interval_ms, skip.first, skip.resume)
    return bytes(out)


def decode_frame(data: bytes) -> Frame:
    """Bytes to a :class:`Frame`; :class:`FrameFormatError` saying what is wrong if they are not one."""
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise FrameFormatError(f"partials frame too short: {len(view)} bytes, the header alone is {_HEADER.size}")
    magic, version, fingerprint, source, sources, seq, watermark, n_blocks, n_failures = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise FrameFormatError(f"not a partials frame (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise FrameFormatError(f"partials frame version {version}, this code reads version {VERSION}")
    if source >= sources:
        raise FrameFormatError(f"partials frame from source {source} of {sources} sources")
    pos = _HEADER.size
    blocks, failures = [], []
    try:
        for _ in range(n_blocks):
            slot, tick, n_rows, n_cols = _BLOCK.unpack_from(view, pos)
            pos += _BLOCK.size
            if n_cols == 0:
                raise FrameFormatError(f"block of slot {slot} at {tick} has no value columns")
            labels = []
            for _ in range(n_rows):
                (length,) = _LENGTH.unpack_from(view, pos)
                pos += _LENGTH.size
                if pos + length > len(view):
                    raise FrameFormatError(f"truncated labels in block of slot {slot} at {tick}")
                labels.append(_labels(bytes(view[pos : pos + length])))
                pos += length
            size = 8 * n_rows * n_cols
            if pos + size > len(view):
                raise FrameFormatError(f"truncated values in block of slot {slot} at {tick}")
            values = np.frombuffer(view[pos : pos + size], dtype="<f8").reshape(n_rows, n_cols).astype(np.float64)
            pos += size
            blocks.append(Block(slot, tick, labels, values))
        for _ in range(n_failures):
            slot, tick, length = _FAILURE.unpack_from(view, pos)
            pos += _FAILURE.size
            if pos + length > len(view):
                raise FrameFormatError(f"truncated failure message of slot {slot} at {tick}")
            failures.append(Failure(slot, tick, bytes(view[pos : pos + length]).decode()))
            pos += length
        origin, n_skips = _TRAILER.unpack_from(view, pos)
        pos += _TRAILER.size
        skips = []
        for _ in range(n_skips):
            skips.append(Skip(*_SKIP.unpack_from(view, pos)))
            pos += _SKIP.size
    except struct.error:
        raise FrameFormatError(f"truncated partials frame (at byte {pos} of {len(view)})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameFormatError(f"corrupt partials frame (at byte {pos}): {exc}") from None
    if pos != len(view):
        raise FrameFormatError(f"partials frame has {len(view) - pos} bytes after its end")
    return Frame(fingerprint, source, sources, seq, watermark, blocks, failures, origin, skips)


__all__ = ["NO_ORIGIN", "Block", "Failure", "Frame", "FrameFormatError", "Skip", "decode_frame", "encode_frame"]
