"""Partial aggregates: what one stage-1 partition computes, and how a combine partition merges them.

A *slot* is one piece of a rule that stage 1 evaluates (see
:mod:`detector.stages.split`). Its partial, at one tick, is a label set per
row and a fixed number of float columns per row:

========  =======================  ==================================================
kind      columns                  merged by
========  =======================  ==================================================
vector    value                    concatenation (raw per-target samples, top-k
                                   candidates, at most two samples for ``scalar()``)
sum       sum (or count)           adding the rows with the same labels
min/max   min / max                ``fmin`` / ``fmax`` (NaN only if all are NaN)
group     1                        one row per label set
avg       mean, count              the count-weighted mean
stdvar    count, mean, M2          Chan et al.'s parallel update of Welford's moments
stddev    count, mean, M2          as stdvar, then the square root
========  =======================  ==================================================

Rows are merged in upstream-partition order, so a combine partition gives the
same floats whatever order frames arrived in. Against one engine over all
series, sums of integers are exact; ``avg``/``stddev``/``stdvar`` and sums of
fractions differ in the last bits (Prometheus's own answer depends on series
order there too).

>>> a = Partial([(("ns", "a"),), (("ns", "b"),)], np.array([[2.0], [1.0]]))
>>> b = Partial([(("ns", "a"),)], np.array([[5.0]]))
>>> list(merge("sum", [a, b]).samples()) == [((("ns", "a"),), 7.0), ((("ns", "b"),), 1.0)]
True
>>> merge("avg", [Partial([()], np.array([[1.0, 1.0]])), Partial([()], np.array([[4.0, 2.0]]))]).values.tolist()
[3.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.labels import Labels
from detector.promql.values import InstantVector

COLUMNS = {"vector": 1, "sum": 1, "min": 1, "max": 1, "group": 1, "avg": 2, "stdvar": 3, "stddev": 3}
"""Float columns per row of each kind of partial."""


@dataclass(frozen=True, slots=True)
class Partial:
    """One partition's partial of one slot at one tick: labels per row, ``values`` of shape (rows, columns)."""

    labels: list[Labels]
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def samples(self) -> list[tuple[Labels, float]]:
        return list(zip(self.labels, self.values[:, 0].tolist()))


def from_vectors(kind: str, vectors: list[InstantVector], limit: int = 0) -> Partial:
    """The partial of one partition from its stage-1 results (one vector per stage-1 node).

    ``avg`` takes (avg, count) vectors, ``stdvar``/``stddev`` (count, avg, stdvar),
    every other kind one vector; ``limit`` keeps only the first rows.
    """
    first = vectors[0]
    if kind in ("avg", "stdvar", "stddev"):
        columns = [first.values]
        index = {labels: i for i, labels in enumerate(first.labels)}
        for other in vectors[1:]:  # same groups, maybe in another order
            column = np.empty(len(first))
            column[[index[l] for l in other.labels]] = other.values
            columns.append(column)
        if kind == "avg":
            values = np.column_stack(columns)
        else:
            count, mean, var = columns
            values = np.column_stack([count, mean, var * count])
        return Partial(list(first.labels), values)
    labels, values = list(first.labels), first.values
    if limit and len(labels) > limit:
        labels, values = labels[:limit], values[:limit]
    return Partial(labels, np.asarray(values, dtype=np.float64).reshape(-1, 1))


def merge(kind: str, partials: list[Partial], memo: dict | None = None) -> InstantVector:
    """The whole result from every partition's partial (in a fixed partition order).

    ``memo`` (a dict the caller keeps per slot) remembers the grouping of the
    last rows merged: the same label sets in the same order, as at most ticks,
    are not grouped again.
    """
    partials = [p for p in partials if len(p)]
    if not partials:
        return InstantVector.empty()
    labels = [l for p in partials for l in p.labels]
    values = np.concatenate([p.values for p in partials]) if len(partials) > 1 else partials[0].values
    if kind == "vector":
        return InstantVector(labels, values[:, 0].copy())
    if memo is not None and memo.get("labels") == labels:  # identical tuples compare by identity: fast
        group_of, out_labels = memo["group_of"], memo["groups"]
    else:
        ids: dict[Labels, int] = {}
        group_of = np.fromiter((ids.setdefault(l, len(ids)) for l in labels), dtype=np.intp, count=len(labels))
        out_labels = list(ids)
        if memo is not None:
            memo.update(labels=labels, group_of=group_of, groups=out_labels)
    n = len(out_labels)
    out_labels = list(out_labels)  # the result's own list
    with np.errstate(all="ignore"):  # inf and NaN propagate as in Go's float arithmetic
        if kind == "sum":
            result = np.bincount(group_of, weights=values[:, 0], minlength=n)
        elif kind == "group":
            result = np.ones(n)
        elif kind in ("min", "max"):
            result = np.full(n, np.nan)
            (np.fmin if kind == "min" else np.fmax).at(result, group_of, values[:, 0])
        elif kind == "avg":
            mean, count = values[:, 0], values[:, 1]
            total = np.bincount(group_of, weights=count, minlength=n)
            result = np.zeros(n)
            np.add.at(result, group_of, mean * (count / total[group_of]))
        else:  # stdvar, stddev: Chan's parallel combination of (count, mean, M2)
            count, mean, m2 = values[:, 0], values[:, 1], values[:, 2]
            total = np.bincount(group_of, weights=count, minlength=n)
            grand = np.zeros(n)
            np.add.at(grand, group_of, mean * (count / total[group_of]))
            spread = np.bincount(group_of, weights=m2 + count * (mean - grand[group_of]) ** 2, minlength=n)
            result = spread / total
            if kind == "stddev":
                result = np.sqrt(result)
    return InstantVector(out_labels, result)


__all__ = ["COLUMNS", "Partial", "from_vectors", "merge"]
