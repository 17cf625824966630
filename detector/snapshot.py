"""Snapshots of detector state: a versioned, compressed byte format that is safe to load.

A snapshot is read back from Kafka, so loading it must never run code chosen
by whoever wrote the bytes. Pickle would (``pickle.loads`` imports and calls
what the stream names, and even an allow-listed unpickler still calls the
allowed constructors with attacker-chosen arguments). So the format is data
only: a JSON tree (dicts, lists, tuples, bytes, sets, numbers, strings, and a
few allow-listed record dataclasses) plus the raw buffers of the numpy arrays
it references, whose dtypes must be plain numbers or booleans. The whole frame
is compressed with zstd (cramjam).

Capture is generic (:func:`capture` / :func:`apply`): a component's state is
every instance attribute except those its class lists in ``SNAPSHOT_SKIP``
(configuration, which comes from the current constructor arguments, and
caches). A plain attribute added later (a numpy column, a dict, a list of free
rows) is carried without extra code; an attribute that is neither plain data,
a component (a class with ``SNAPSHOT_SKIP``) nor skipped makes the snapshot
fail loudly instead of being silently dropped. Loading checks that the
snapshot has exactly the attributes the current code has, with the same array
dtypes and ranks: a snapshot taken by other code is refused, not misread.

>>> import numpy as np
>>> tree = {"rows": {b"a": 0}, "labels": [(("job", "api"),)], "x": np.arange(3.0), "free": {2}}
>>> back = decode(encode(tree))
>>> back["rows"], back["labels"], back["x"].tolist(), back["free"]
({b'a': 0}, [(('job', 'api'),)], [0.0, 1.0, 2.0], {2})
>>> decode(b"not a snapshot")
Traceback (most recent call last):
...
detector.snapshot.SnapshotError: not a Headroom snapshot (bad magic bytes)
"""

from __future__ import annotations

import base64
from binascii import b2a_base64
import dataclasses
import json
import struct
from collections.abc import Mapping
from itertools import chain
from typing import Any

import cramjam
import numpy as np

from detector.errors import HeadroomError

MAGIC = b"HRSNAP"
VERSION = 1
"""Bump when the meaning of a field changes without its name, dtype or rank changing."""

_HEADER = struct.Struct("<6sHQ")  # magic, version, header length (after decompression)
_NUMERIC_KINDS = frozenset("biuf")  # bool, signed, unsigned, float: never object or void
_SCALARS = frozenset({type(None), bool, int, float, str})  # packed as themselves
_TUPLE_ONLY, _PAIR_ONLY, _STR_ONLY, _BYTES_ONLY = frozenset({tuple}), frozenset({2}), frozenset({str}), frozenset({bytes})


class SnapshotError(HeadroomError):
    """A snapshot cannot be written or read (corrupt, other version, other code)."""


# ---------------------------------------------------------------------------- bytes


def encode(tree: Any, records: Mapping[str, type] | None = None) -> bytes:
    """``tree`` to compressed bytes; ``records`` names the dataclasses allowed in it."""
    names = {cls: name for name, cls in (records or {}).items()}
    buffers: list[memoryview] = []
    offset = [0]

    def array(value: np.ndarray) -> list:
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise SnapshotError(f"cannot snapshot a numpy array of dtype {value.dtype}")
        data = memoryview(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
        buffers.append(data)
        offset[0] += data.nbytes
        return [value.dtype.str, list(value.shape), offset[0] - data.nbytes]

    def pack_all(values: Any) -> list | dict:
        # Most lists are all scalars (free rows, per-series numbers): those pass as they are,
        # after one type check in C instead of a call per element.
        items = list(values)
        kinds = set(map(type, items))
        if _SCALARS.issuperset(kinds):
            return items
        if kinds == _TUPLE_ONLY:
            labels = pack_label_sets(items)
            if labels is not None:
                return labels
        elif kinds == _BYTES_ONLY:  # series keys: one buffer plus their lengths, as key maps
            return {"B": pack_bytes(items)}
        return [pack(v) for v in items]

    def pack_bytes(items: list[bytes]) -> list:
        """Byte strings as one buffer plus their lengths (two arrays)."""
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        return [array(np.frombuffer(b"".join(items), dtype=np.uint8)), array(lengths)]

    def pack_label_sets(items: list[tuple]) -> dict | None:
        """A list of label sets (a partition's series, by count most of its state) as three arrays:
        pairs per set, characters per string, and every name and value as one UTF-8 buffer. Kept
        out of the JSON tree, whose encoder spent more on these strings than on all else together.
        The type checks run over the whole list at once; None if any item is not a label set."""
        pairs = list(chain.from_iterable(items))
        if not (_TUPLE_ONLY.issuperset(map(type, pairs)) and _PAIR_ONLY.issuperset(map(len, pairs))):
            return None
        flat = list(chain.from_iterable(pairs))
        if not _STR_ONLY.issuperset(map(type, flat)):
            return None
        counts = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        lengths = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
        text = "".join(flat).encode("utf-8", "surrogatepass")
        return {"P": [array(counts), array(lengths), array(np.frombuffer(text, dtype=np.uint8))]}

    def pack(value: Any) -> Any:
        kind = type(value)
        if value is None or kind in (bool, int, float, str):
            return value
        if kind is list:
            return pack_all(value)
        if kind is tuple:
            # Label sets, ((name, value), ...), are most of a partition's state by count:
            # one flat string list each, not a tree (10x faster both ways). The checks
            # run in C (map over the pairs), as the snapshot of 10k series packs 20k of them.
            if not value:
                return {"p": []}
            if _TUPLE_ONLY.issuperset(map(type, value)) and _PAIR_ONLY.issuperset(map(len, value)):
                flat = list(chain.from_iterable(value))
                if _STR_ONLY.issuperset(map(type, flat)):
                    return {"p": flat}
            return {"t": pack_all(value)}
        if kind is dict:
            if value and all(type(k) is bytes for k in value):
                # Series-key maps: the keys as one buffer plus their lengths.
                return {"k": [*pack_bytes(list(value)), pack_all(value.values())]}
            return {"m": [[pack(k), pack(v)] for k, v in value.items()]}
        if kind is bytes:
            return {"b": b2a_base64(value, newline=False).decode("ascii")}  # base64.b64encode's text
        if kind is set or kind is frozenset:
            return {"s": [pack(v) for v in sorted(value)]}
        if isinstance(value, np.ndarray):
            return {"a": array(value)}
        if isinstance(value, np.generic):
            return pack(value.item())
        if kind in names:
            return {"r": names[kind], "f": {f.name: pack(getattr(value, f.name)) for f in dataclasses.fields(value)}}
        raise SnapshotError(f"cannot snapshot a value of type {kind.__module__}.{kind.__qualname__}")

    header = json.dumps(pack(tree), separators=(",", ":")).encode()
    frame = b"".join([header, *buffers])
    return _HEADER.pack(MAGIC, VERSION, len(header)) + bytes(cramjam.zstd.compress(frame, level=1))


def decode(data: bytes, records: Mapping[str, type] | None = None) -> Any:
    """Bytes from :func:`encode` back to the tree; :class:`SnapshotError` if they are not one."""
    records = records or {}
    if len(data) < _HEADER.size or data[: len(MAGIC)] != MAGIC:
        raise SnapshotError("not a Headroom snapshot (bad magic bytes)")
    _, version, header_len = _HEADER.unpack_from(data)
    if version != VERSION:
        raise SnapshotError(f"snapshot format version {version}, this code reads version {VERSION}")
    try:
        frame = bytes(cramjam.zstd.decompress(data[_HEADER.size :]))
        tree = json.loads(frame[:header_len])
    except Exception as exc:  # noqa: BLE001 - corrupt input raises whatever the decoder raises
        raise SnapshotError(f"corrupt snapshot: {exc}") from None
    payload = memoryview(frame)[header_len:]

    def unpack(value: Any) -> Any:
        if not isinstance(value, (dict, list)):
            return value
        if isinstance(value, list):
            return [unpack(v) for v in value]
        if len(value) == 1:
            (tag, body), = value.items()
            if tag == "p":
                pairs = iter(body)
                return tuple(zip(pairs, pairs))
            if tag == "P":
                return _label_sets(*(_array(payload, *part) for part in body))
            if tag == "B":
                return _split(_array(payload, *body[0]).tobytes(), _array(payload, *body[1]), "byte list")
            if tag == "t":
                return tuple(unpack(v) for v in body)
            if tag == "k":
                keys = _split(_array(payload, *body[0]).tobytes(), _array(payload, *body[1]), "key map")
                if len(keys) != len(body[2]):
                    raise SnapshotError("corrupt snapshot: key map sizes disagree")
                return {key: unpack(v) for key, v in zip(keys, body[2])}
            if tag == "m":
                return {unpack(k): unpack(v) for k, v in body}
            if tag == "b":
                return base64.b64decode(body, validate=True)
            if tag == "s":
                return {unpack(v) for v in body}
            if tag == "a":
                return _array(payload, *body)
        if set(value) == {"r", "f"} and value["r"] in records:
            return records[value["r"]](**{k: unpack(v) for k, v in value["f"].items()})
        raise SnapshotError(f"corrupt snapshot: unknown element {str(value)[:80]}")

    try:
        return unpack(tree)
    except SnapshotError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed tree: wrong arities, bad base64, bad record fields
        raise SnapshotError(f"corrupt snapshot: {type(exc).__name__}: {exc}") from None


def _split(data: bytes | str | list, lengths: np.ndarray, what: str) -> list:
    """``data`` cut into consecutive pieces of ``lengths``; :class:`SnapshotError` unless they add up to it."""
    if (lengths < 0).any() or lengths.sum() != len(data):
        raise SnapshotError(f"corrupt snapshot: {what} sizes disagree")
    ends = np.cumsum(lengths).tolist()
    return [data[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def _label_sets(counts: np.ndarray, lengths: np.ndarray, blob: np.ndarray) -> list[tuple]:
    """The label sets :func:`encode` packed as arrays (pairs per set, characters per string, text)."""
    strings = iter(_split(blob.tobytes().decode("utf-8", "surrogatepass"), lengths, "label set"))
    pairs = list(zip(strings, strings))
    if 2 * len(pairs) != len(lengths):
        raise SnapshotError("corrupt snapshot: label set sizes disagree")
    return [tuple(piece) for piece in _split(pairs, counts, "label set")]


def _array(payload: memoryview, dtype: str, shape: list[int], offset: int) -> np.ndarray:
    kind = np.dtype(dtype)
    if kind.kind not in _NUMERIC_KINDS or kind.hasobject:
        raise SnapshotError(f"corrupt snapshot: array dtype {dtype} is not allowed")
    count = int(np.prod(shape, dtype=np.int64))
    if min(shape, default=0) < 0 or offset < 0 or offset + count * kind.itemsize > len(payload):
        raise SnapshotError("corrupt snapshot: array outside the payload")
    # A copy: the caller mutates its state in place, frombuffer's view is read-only.
    return np.frombuffer(payload, dtype=kind, count=count, offset=offset).reshape(shape).copy()


# ---------------------------------------------------------------------------- objects


def is_component(value: Any) -> bool:
    """Whether ``value`` is a state-holding component (its class declares ``SNAPSHOT_SKIP``)."""
    return hasattr(type(value), "SNAPSHOT_SKIP")


def capture(obj: Any) -> dict[str, Any]:
    """The state of a component: its attributes minus ``SNAPSHOT_SKIP``, nested components captured too.

    A component with a ``snapshot_state`` method is captured by it (it remaps
    what the generic form cannot, such as rule state keyed by rule position).
    """
    if hasattr(obj, "snapshot_state"):
        return obj.snapshot_state()
    return capture_attributes(obj)


def capture_attributes(obj: Any) -> dict[str, Any]:
    skip = type(obj).SNAPSHOT_SKIP
    return {name: capture(value) if is_component(value) else value for name, value in vars(obj).items() if name not in skip}


def apply(obj: Any, state: Mapping[str, Any]) -> None:
    """Load :func:`capture`'s output into a freshly built component (in place)."""
    if hasattr(obj, "restore_state"):
        obj.restore_state(dict(state))
    else:
        apply_attributes(obj, state)


def apply_attributes(obj: Any, state: Mapping[str, Any]) -> None:
    """Set every captured attribute, after checking the snapshot matches this code's layout."""
    cls = type(obj)
    expected = {name for name in vars(obj) if name not in cls.SNAPSHOT_SKIP}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise SnapshotError(f"{cls.__name__}: snapshot from other code (missing {missing}, unknown {extra})")
    for name, value in state.items():
        current = getattr(obj, name)
        if is_component(current):
            if not isinstance(value, dict):
                raise SnapshotError(f"{cls.__name__}.{name}: expected a component's state")
            apply(current, value)
            continue
        if isinstance(current, np.ndarray) and (
            not isinstance(value, np.ndarray) or value.dtype != current.dtype or value.ndim != current.ndim
        ):
            got = f"{value.dtype} x{value.ndim}" if isinstance(value, np.ndarray) else type(value).__name__
            raise SnapshotError(f"{cls.__name__}.{name}: expected {current.dtype} x{current.ndim} array, got {got}")
        setattr(obj, name, value)
