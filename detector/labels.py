"""Series identity: sorted label sets, their canonical bytes, stable keys.

A series is identified by its label set, sorted by name. Everything that must
agree across processes and restarts (Kafka partitioning, state keys) uses the
canonical byte form and a keyed BLAKE2 digest of it, never Python's ``hash()``,
which is salted per process.

>>> labels = labels_from_dict({"job": "api", "__name__": "up"})
>>> labels
(('__name__', 'up'), ('job', 'api'))
>>> metric_name(labels)
'up'
>>> series_id(labels) == series_id((("__name__", "up"), ("job", "api")))
True
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Iterable, Mapping

Labels = tuple[tuple[str, str], ...]
"""A label set: (name, value) pairs sorted by name, names unique."""

METRIC_NAME = "__name__"

# Labels that split one logical series into several stored ones (histogram
# buckets, summary quantiles); co-partitioning ignores them so every bucket of a
# histogram lands in the same partition.
SERIES_FAMILY_LABELS = frozenset({METRIC_NAME, "le", "quantile"})

DEFAULT_PARTITION_BY = ("job", "instance")

BY_SERIES_FAMILY: tuple[str, ...] = ()
"""``partition_by`` that partitions every series by its family (its labels but
:data:`SERIES_FAMILY_LABELS`): a big scrape target spreads over all partitions,
while a histogram's buckets and one-to-one operands stay together (see
:func:`colocated_by`). The default with staged rules (:mod:`detector.stages`)."""

LANE_CLOCK: Labels = ((METRIC_NAME, "headroom_lane_clock"),)
"""The series that carries each request's newest timestamp to the global lane
(see :mod:`detector.rules.placement`)."""


def labels_from_dict(mapping: Mapping[str, str]) -> Labels:
    """Sorted label tuple from a mapping."""
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


def labels_from_pairs(pairs: Iterable[tuple[str, str]]) -> Labels:
    return tuple(sorted(pairs))


def metric_name(labels: Labels) -> str:
    for name, value in labels:
        if name == METRIC_NAME:
            return value
    return ""


def without(labels: Labels, names: Iterable[str]) -> Labels:
    drop = set(names)
    return tuple(pair for pair in labels if pair[0] not in drop)


def canonical_bytes(labels: Labels) -> bytes:
    """Length-prefixed UTF-8 encoding of a sorted label set.

    Length prefixes (not separators) keep it unambiguous for any label value.
    """
    out = bytearray()
    for name, value in labels:
        n, v = name.encode(), value.encode()
        out += struct.pack("<H", len(n)) + n + struct.pack("<I", len(v)) + v
    return bytes(out)


def labels_from_canonical(data: bytes) -> Labels:
    """Inverse of :func:`canonical_bytes`.

    >>> labels_from_canonical(canonical_bytes((("a", "1"), ("b", "")))) 
    (('a', '1'), ('b', ''))
    """
    pairs = []
    pos, end = 0, len(data)
    while pos < end:
        (n_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = data[pos : pos + n_len].decode()
        pos += n_len
        (v_len,) = struct.unpack_from("<I", data, pos)
        pos += 4
        value = data[pos : pos + v_len].decode()
        pos += v_len
        pairs.append((name, value))
    return tuple(pairs)


def stable_hash(data: bytes) -> int:
    """64-bit digest that is the same in every process, on every machine."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def series_id(labels: Labels) -> int:
    return stable_hash(canonical_bytes(labels))


def partition_key(labels: Labels, partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY) -> Labels:
    """The labels that decide which partition a series lives in.

    By default a series goes with its scrape target (``job``, ``instance``), so
    every expression that combines series of one target (a queue's depth over
    its max depth, a histogram's buckets) finds all of them in one partition.
    A series carrying none of those labels has the empty key: all such series
    share one partition. The rules the plan keeps in the partitions group by
    the target's labels, and for these series that is one group (``sum by
    (job, instance)``) or groups cut across any other split (``sum without
    (pod)``); spreading them by their other labels gave each partition part
    of a group, and so wrong sums and duplicate alerts.

    >>> partition_key((("__name__", "x"), ("instance", "a:1"), ("job", "j"), ("q", "o")))
    (('instance', 'a:1'), ('job', 'j'))
    >>> partition_key((("__name__", "x_bucket"), ("le", "1"), ("q", "o")))
    ()

    With ``partition_by`` :data:`BY_SERIES_FAMILY` (empty), every series goes by that family key:

    >>> partition_key((("__name__", "x_bucket"), ("instance", "a:1"), ("le", "1"), ("q", "o")), BY_SERIES_FAMILY)
    (('instance', 'a:1'), ('q', 'o'))
    """
    if partition_by:
        return tuple(pair for pair in labels if pair[0] in partition_by)
    return tuple(pair for pair in labels if pair[0] not in SERIES_FAMILY_LABELS)


def partition_for(
    labels: Labels, partitions: int, partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY
) -> int:
    """Kafka partition for a series: stable digest of its partition key, modulo count."""
    return stable_hash(canonical_bytes(partition_key(labels, partition_by))) % partitions


class PairInterner:
    """One shared copy of each (name, value) pair for the label sets of many series.

    The series of one scrape target repeat the same ``job``, ``instance``, ``pod``
    and so on, and each metric name comes back on every target: a label set
    decoded on its own holds its own strings and pair tuples (about 1.6 KB for
    the runbook's ~9 labels), one built from shared pairs only its outer tuple.
    The table keeps a pair alive after the last series using it is gone, so its
    owner calls :meth:`rebuild` with the label sets still held now and then.

    >>> interner = PairInterner()
    >>> a = interner.decode(canonical_bytes((("job", "api"), ("pod", "p-1"))))
    >>> b = interner.share((("job", "api"), ("pod", "p-2")))
    >>> a, a[0] is b[0], len(interner)
    ((('job', 'api'), ('pod', 'p-1')), True, 3)
    >>> interner.rebuild([b])
    >>> len(interner)
    2
    """

    __slots__ = ("_pairs",)

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._pairs)

    def share(self, labels: Labels) -> Labels:
        """The same label set, made of the table's pairs (new pairs join the table)."""
        pairs = self._pairs
        out = []
        for pair in labels:
            held = pairs.get(pair)
            if held is None:
                held = pairs[pair] = (sys.intern(pair[0]), pair[1])  # label names repeat across pairs too
            out.append(held)
        return tuple(out)

    def decode(self, data: bytes) -> Labels:
        """:func:`labels_from_canonical`, made of shared pairs."""
        return self.share(labels_from_canonical(data))

    def rebuild(self, held: Iterable[Labels | None]) -> None:
        """Keep only the pairs of these label sets (``None``: a free row, skipped)."""
        pairs: dict[tuple[str, str], tuple[str, str]] = {}
        for labels in held:
            if labels is not None:
                for pair in labels:
                    pairs[pair] = pair
        self._pairs = pairs


class AllNamesBut:
    """The set of every label name but ``excluded``: only the operations the placement tests use.

    >>> keep = AllNamesBut(SERIES_FAMILY_LABELS)
    >>> "pod" in keep, "le" in keep
    (True, False)
    >>> sorted(keep & {"le", "pod"}), keep <= {"job", "instance"}
    (['pod'], False)
    """

    __slots__ = ("excluded",)

    def __init__(self, excluded: Iterable[str]) -> None:
        self.excluded = frozenset(excluded)

    def __contains__(self, name: object) -> bool:
        return name not in self.excluded

    def __and__(self, other: Iterable[str]) -> frozenset[str]:
        return frozenset(other) - self.excluded

    __rand__ = __and__

    def __le__(self, other: Iterable[str]) -> bool:
        return False  # infinitely many names, never within a finite set

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AllNamesBut) and other.excluded == self.excluded

    def __hash__(self) -> int:
        return hash(("AllNamesBut", self.excluded))

    def __repr__(self) -> str:
        return f"AllNamesBut({sorted(self.excluded)!r})"


def colocated_by(partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY) -> frozenset[str] | AllNamesBut:
    """The label names on which two series must agree to be sure to share a partition.

    What the placement tests (``Node.combines_series``) take as ``keep``: a
    node that only combines series agreeing on all of these can run in every
    partition over its own series. By target, ``job`` and ``instance``; by
    series family (:data:`BY_SERIES_FAMILY`), every name but the metric name,
    ``le`` and ``quantile``, so an aggregation (but ``without (le)``) or a
    join with ``on()`` combines across partitions, while one-to-one matching
    and ``histogram_quantile`` do not.

    >>> sorted(colocated_by(("job", "instance")))
    ['instance', 'job']
    >>> colocated_by(BY_SERIES_FAMILY)
    AllNamesBut(['__name__', 'le', 'quantile'])
    """
    return frozenset(partition_by) if partition_by else AllNamesBut(SERIES_FAMILY_LABELS)
