"""The frame a stage-1 partition sends a combine partition: partials, failures and its watermark.

One frame per (upstream, combine partition) per step; it says "here are my
partial rows for you for these ticks, these slots failed at these ticks, and
I have evaluated every tick up to my watermark". So a receiver recognises
rows for ticks at or before a sender's last watermark as sent before (a
redelivery, or a replay after the sender restored a snapshot) and drops them.
``seq`` numbers a sender's frames, for diagnostics.

Wire format, version 3 (all integers little-endian)::

    offset  size  field
    0       4     magic b"HRPF"
    4       1     version (3)
    5       3     reserved, zero
    8       8     plan fingerprint (u64): the rule set and partitioning slot numbers refer to
    16      4     source: the upstream partition (u32)
    20      4     sources: how many upstream partitions there are (u32)
    24      8     seq (u64), per source
    32      8     watermark (i64, ms; every tick up to it is evaluated)
    40      4     n_blocks (u32)
    44      4     n_failures (u32)
    48      2     part (u16): this record's number among the frame's parts, from 0
    50      2     parts (u16): how many records the frame was cut into (1: whole)
    52      4     whole (u32): CRC-32 of the whole frame's encoding (0 for a whole frame)
    56      ...   n_blocks x block:   slot u32, tick i64, n_rows u32, n_cols u8, 3 reserved,
                                      n_rows x [u32 length, canonical label bytes],
                                      n_rows x n_cols f64 (row-major, IEEE-754 bits as computed)
    ...     ...   n_failures x:       slot u32, tick i64, u32 length, UTF-8 message
    ...     8     origin (i64): the first tick the sender evaluated (INT64_MIN: none yet)
    ...     4     n_skips (u32)
    ...     ...   n_skips x:          interval_ms i64, first i64, resume i64: the sender skipped
                                      its ticks of that interval from first up to resume
                                      (HEADROOM_MAX_CATCH_UP); the receiver skips them too

Version 2 added the trailer (origin and skips) after the failures; version 3
the part fields, so a frame bigger than a Kafka record (1 MB by default) goes
as several records (:func:`split_frame`), cut between rows, even inside one
tick's block. Every part carries the frame's seq, watermark and origin, and
the CRC of the whole frame; the failures and skips travel in the last. A
receiver puts the parts of a frame back together (:class:`PartsBuffer`),
checks the CRC, and takes nothing of the frame, its watermark least of all,
before the last has come. (A sender restored from a snapshot numbers its
frames from the snapshot's seq again: the CRC keeps the parts of a frame it
half sent before from mixing with the new one's.) Version 2 frames are still
read (one part of one).

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
import zlib
from dataclasses import dataclass, field

import numpy as np

from detector.errors import HeadroomError
from detector.labels import Labels, canonical_bytes, labels_from_canonical

MAGIC = b"HRPF"
VERSION = 3
READS = (2, 3)
"""Frame versions this code decodes (2: no part fields, a whole frame)."""
NO_ORIGIN = -(2**63)
"""``Frame.origin`` of a sender that has evaluated no tick yet."""
_HEADER = struct.Struct("<4sB3xQIIQqIIHHI")
_HEADER_V2 = struct.Struct("<4sB3xQIIQqII")
_BLOCK = struct.Struct("<IqIB3x")
_FAILURE = struct.Struct("<IqI")
_LENGTH = struct.Struct("<I")
_TRAILER = struct.Struct("<qI")
_SKIP = struct.Struct("<qqq")
_VALUES = np.dtype("<f8")


# The same label sets travel at every tick: their encoding both ways is memoised
# (bounded, so series churn cannot grow it for ever).
_MEMO_LIMIT = 1 << 18  # label sets per memo; cleared when full
_KEYS: dict[Labels, bytes] = {}
_LABELS: dict[bytes, Labels] = {}


# A block's label bytes and the label list decoded from them, by (rows, first key): a sender's
# block for a slot usually holds the same rows at every tick. Decoded blocks share such a list,
# so nothing may change a block's labels in place. Bounded by bytes held.
_BLOCKS: dict[tuple[int, bytes], tuple[bytes, list[Labels]]] = {}
_BLOCKS_HELD = [0]
_BLOCKS_LIMIT = 1 << 25


def _remember_block(memo_key: tuple[int, bytes], blob: bytes, labels: list[Labels]) -> None:
    if _BLOCKS_HELD[0] + len(blob) > _BLOCKS_LIMIT:
        _BLOCKS.clear()
        _BLOCKS_HELD[0] = 0
    _BLOCKS[memo_key] = (blob, labels)
    _BLOCKS_HELD[0] += len(blob)


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


def keys_blob(labels: list[Labels]) -> bytes:
    """A block's label sets as a frame holds them: each one's canonical bytes after their length."""
    return b"".join([_LENGTH.pack(len(key)) + key for key in map(_key, labels)])


class FrameFormatError(HeadroomError):
    """Bytes that are not a partials frame this code can read (or not for this rule set)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One slot's partial rows at one tick (for one combine partition)."""

    slot: int
    tick: int
    labels: list[Labels]
    values: np.ndarray  # (rows, columns) float64
    # ``labels`` as the frame holds them (keys_blob), if the maker has them already: encoded as they are.
    keys: bytes | None = field(default=None, compare=False, repr=False)


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
    part: int = 0  # this record's number among ``parts`` (see split_frame)
    parts: int = 1
    whole: int = 0  # CRC-32 of the whole frame a part belongs to


def encode_frame(frame: Frame, blocks: list[bytes] | None = None) -> bytes:
    """``frame`` as bytes; ``blocks``, if given, are its blocks already encoded (:func:`encode_block`),
    in place of ``frame.blocks``."""
    if blocks is None:
        blocks = [encode_block(block) for block in frame.blocks]
    out = [_HEADER.pack(MAGIC, VERSION, frame.fingerprint, frame.source, frame.sources, frame.seq,
                        frame.watermark, len(blocks), len(frame.failures), frame.part, frame.parts, frame.whole)]
    out += blocks
    for failure in frame.failures:
        message = failure.message.encode()
        out.append(_FAILURE.pack(failure.slot, failure.tick, len(message)) + message)
    out.append(_TRAILER.pack(frame.origin, len(frame.skips)))
    out += [_SKIP.pack(skip.interval_ms, skip.first, skip.resume) for skip in frame.skips]
    return b"".join(out)


def encode_block(block: Block) -> bytes:
    """One block as a frame holds it."""
    values = np.ascontiguousarray(block.values, dtype="<f8")
    if values.ndim != 2 or values.shape[0] != len(block.labels) or not 1 <= values.shape[1] <= 255:
        raise ValueError(f"block of slot {block.slot}: values must be (rows, 1..255 columns), got {values.shape}")
    keys = keys_blob(block.labels) if block.keys is None else block.keys
    return b"".join((_BLOCK.pack(block.slot, block.tick, len(block.labels), values.shape[1]), keys, values.tobytes()))


def decode_frame(data: bytes) -> Frame:
    """Bytes to a :class:`Frame`; :class:`FrameFormatError` saying what is wrong if they are not one."""
    view = memoryview(data)
    if len(view) < _HEADER_V2.size:
        raise FrameFormatError(f"partials frame too short: {len(view)} bytes, the smallest header is {_HEADER_V2.size}")
    magic, version = _HEADER_V2.unpack_from(view)[:2]
    if magic != MAGIC:
        raise FrameFormatError(f"not a partials frame (magic {magic!r}, expected {MAGIC!r})")
    if version not in READS:
        raise FrameFormatError(f"partials frame version {version}, this code reads versions {READS[0]} to {READS[-1]}")
    header = _HEADER if version >= 3 else _HEADER_V2
    if len(view) < header.size:
        raise FrameFormatError(f"partials frame too short: {len(view)} bytes, the header alone is {header.size}")
    _, _, fingerprint, source, sources, seq, watermark, n_blocks, n_failures, *rest = header.unpack_from(view)
    part, parts, whole = rest or (0, 1, 0)
    if source >= sources:
        raise FrameFormatError(f"partials frame from source {source} of {sources} sources")
    if part >= parts:
        raise FrameFormatError(f"partials frame part {part} of {parts} parts")
    pos = header.size
    blocks, failures = [], []
    raw = data if type(data) is bytes else view.tobytes()
    end, unpack_length, known, blocks_seen = len(raw), _LENGTH.unpack_from, _LABELS.get, _BLOCKS.get
    try:
        for _ in range(n_blocks):
            slot, tick, n_rows, n_cols = _BLOCK.unpack_from(view, pos)
            pos += _BLOCK.size
            if n_cols == 0:
                raise FrameFormatError(f"block of slot {slot} at {tick} has no value columns")
            labels, start = None, pos
            if n_rows:
                # The same rows as a block decoded before (usually the last tick's, from the same
                # sender)? Bytes that begin with that block's label bytes hold the same label sets.
                (length,) = unpack_length(raw, pos)
                memo_key = (n_rows, raw[pos + 4 : pos + 4 + length])
                seen = blocks_seen(memo_key)
                if seen is not None and raw.startswith(seen[0], pos):
                    labels = seen[1]
                    pos += len(seen[0])
            if labels is None:
                labels = []
                for _ in range(n_rows):  # the hot loop of a frame with many rows: kept lean
                    (length,) = unpack_length(raw, pos)
                    pos += 4
                    stop = pos + length
                    if stop > end:
                        raise FrameFormatError(f"truncated labels in block of slot {slot} at {tick}")
                    key = raw[pos:stop]
                    found = known(key)
                    labels.append(_labels(key) if found is None else found)
                    pos = stop
                if n_rows:
                    _remember_block(memo_key, raw[start:pos], labels)
            size = 8 * n_rows * n_cols
            if pos + size > end:
                raise FrameFormatError(f"truncated values in block of slot {slot} at {tick}")
            # A read-only view of the frame's bytes, in the machine's byte order: no copy.
            values = np.frombuffer(raw, dtype=_VALUES, count=n_rows * n_cols, offset=pos).reshape(n_rows, n_cols)
            if values.dtype != np.float64:
                values = values.astype(np.float64)
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
    return Frame(fingerprint, source, sources, seq, watermark, blocks, failures, origin, skips, part, parts, whole)


# --- Frames bigger than a record. ---------------------------------------------------------

FRAME_TARGET_BYTES = 900_000
"""Records are cut to stay under this size: Kafka refuses records over 1 MB by default."""

_TAIL = _TRAILER.size


def split_frame(data: bytes, max_bytes: int = FRAME_TARGET_BYTES) -> list[bytes]:
    """A frame as records of at most ``max_bytes``: itself if it fits, else parts 0..n-1 of it.

    Blocks are cut between rows (one tick of one rule may be bigger than a
    record); a row is never cut, so a part holding a single row bigger than
    ``max_bytes`` is bigger. Every part carries the frame's header fields; the
    failures and skips go in the last part (a part of their own if they do not
    fit). :func:`join_parts` gives the frame back.

    >>> import numpy as np
    >>> rows = [(("pod", f"p{i}"),) for i in range(6)]
    >>> frame = Frame(7, 0, 2, 1, 50_000, [Block(0, 45_000, rows, np.arange(6.0).reshape(6, 1))])
    >>> parts = [decode_frame(p) for p in split_frame(encode_frame(frame), max_bytes=140)]
    >>> [(p.part, p.parts, p.watermark, len(p.blocks[0].labels)) for p in parts]
    [(0, 3, 50000, 2), (1, 3, 50000, 2), (2, 3, 50000, 2)]
    >>> join_parts(parts).blocks[0].values.ravel().tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    """
    if len(data) <= max_bytes:
        return [data]
    frame = decode_frame(data)
    if frame.parts != 1:
        raise ValueError("split_frame takes a whole frame, not a part")
    whole = zlib.crc32(encode_frame(frame))  # as join_parts re-encodes it (data may be version 2)
    room = max_bytes - _HEADER.size - _TAIL
    parts: list[list[Block]] = [[]]
    size = 0
    for block in frame.blocks:
        row_bytes = [_LENGTH.size + len(_key(labels)) + 8 * block.values.shape[1] for labels in block.labels]
        if not row_bytes and parts[-1] and size + _BLOCK.size > room:
            parts.append([])  # a block without rows still goes (the frame comes back as it was)
            size = 0
        start = 0
        while True:  # what of this block fits in the current part, then the next part
            end, grow = start, _BLOCK.size
            while end < len(row_bytes) and (size + grow + row_bytes[end] <= room or (end == start and not parts[-1])):
                grow += row_bytes[end]
                end += 1
            if end > start or not block.labels:
                parts[-1].append(Block(block.slot, block.tick, block.labels[start:end], block.values[start:end]))
                size += grow
            if end == len(row_bytes):
                break
            parts.append([])
            size = 0
            start = end
    tail = [_FAILURE.size + len(f.message.encode()) for f in frame.failures] + [_SKIP.size] * len(frame.skips)
    if parts[-1] and size + sum(tail) > room:
        parts.append([])
    n = len(parts)
    if n > 0xFFFF:
        raise ValueError(f"a frame of {len(data)} bytes needs {n} parts of {max_bytes} bytes, at most 65535")
    out = []
    for i, blocks in enumerate(parts):
        last = i == n - 1
        out.append(encode_frame(Frame(
            frame.fingerprint, frame.source, frame.sources, frame.seq, frame.watermark, blocks,
            frame.failures if last else [], frame.origin, frame.skips if last else [], i, n, whole,
        )))
    return out


def join_parts(parts: list[Frame]) -> Frame:
    """The frame :func:`split_frame` cut into ``parts`` (every part of one seq, any order)."""
    parts = sorted(parts, key=lambda p: p.part)
    first, last = parts[0], parts[-1]
    if len(parts) == 1 and first.parts == 1:
        return first  # a whole frame
    if [p.part for p in parts] != list(range(first.parts)) or any(
            (p.parts, p.seq, p.whole) != (first.parts, first.seq, first.whole) for p in parts):
        raise FrameFormatError(f"parts {[p.part for p in parts]} of seq {first.seq} do not make a frame of {first.parts} parts")
    blocks: list[Block] = []
    for part in parts:
        for block in part.blocks:
            prev = blocks[-1] if blocks else None
            if prev is not None and (prev.slot, prev.tick) == (block.slot, block.tick):
                # One block cut between parts: one slot's rows at one tick are always one block.
                blocks[-1] = Block(block.slot, block.tick, prev.labels + block.labels,
                                   np.concatenate([prev.values, block.values]))
            else:
                blocks.append(block)
    failures = [f for p in parts for f in p.failures]
    skips = [s for p in parts for s in p.skips]
    frame = Frame(first.fingerprint, first.source, first.sources, first.seq, last.watermark, blocks, failures,
                  first.origin, skips)
    if zlib.crc32(encode_frame(frame)) != first.whole:
        raise FrameFormatError(f"parts of seq {first.seq} from source {first.source} do not make the frame they "
                               f"were cut from (CRC mismatch): parts of two frames, or corrupt")
    return frame


class PartsBuffer:
    """Parts of frames that came before their last part, per source; a frame out once whole.

    Kafka keeps one source's records to one partition in order, so a part of
    another frame (seq, or CRC) while one is incomplete means the sender
    restarted (from a snapshot, re-sending from there) or redelivered a part of
    a frame already taken: the incomplete parts are dropped (``abandoned``). A source that goes
    silent between parts holds nothing back here: its watermark moves only with
    a whole frame, and the receiver's silence rule (``presume``) applies to it
    as to any silent source.
    """

    def __init__(self) -> None:
        self.held: dict[int, list[tuple[Frame, bytes]]] = {}  # source -> the parts so far, with their bytes
        self.abandoned = 0  # parts dropped as above

    def add(self, frame: Frame, data: bytes) -> Frame | None:
        """The whole frame once ``frame`` completes one (or is one), else None (kept)."""
        held = self.held.get(frame.source)
        if held and (held[0][0].seq, held[0][0].parts, held[0][0].whole) != (frame.seq, frame.parts, frame.whole):
            self.abandoned += len(held)
            del self.held[frame.source]
            held = None
        if frame.parts == 1:
            return frame
        held = self.held.setdefault(frame.source, [])
        if all(p.part != frame.part for p, _ in held):  # a part redelivered while incomplete: once
            held.append((frame, data))
        if len(held) < frame.parts:
            return None
        del self.held[frame.source]
        return join_parts([p for p, _ in held])

    def held_bytes(self) -> list[bytes]:
        """The parts held, as received (a snapshot keeps these; :meth:`load` reads them back)."""
        return [data for parts in self.held.values() for _, data in parts]

    def load(self, records: list[bytes]) -> None:
        self.held = {}
        for data in records:
            frame = decode_frame(data)
            self.held.setdefault(frame.source, []).append((frame, data))


__all__ = ["FRAME_TARGET_BYTES", "NO_ORIGIN", "Block", "Failure", "Frame", "FrameFormatError", "PartsBuffer", "Skip",
           "decode_frame", "encode_block", "encode_frame", "join_parts", "keys_blob", "split_frame"]
