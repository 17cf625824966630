"""Time: ``time()``, ``timestamp(v)``, and the date functions (minute, hour,
day_of_week, day_of_month, day_of_year, days_in_month, month, year) of Unix
seconds, in UTC, as Go's time package computes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.promql.functions.common import drop_name, unique
from detector.promql.go_compat import go_int64
from detector.promql.plan import EvalContext, Node, SelectorNode
from detector.promql.values import InstantVector, Scalar, Value


@dataclass(eq=False)
class TimeNode(Node):
    """``time()``: the evaluation time in seconds."""

    kind = "scalar"

    def evaluate(self, ctx: EvalContext) -> Value:
        return Scalar(ctx.t_ms / 1000)


@dataclass(eq=False)
class TimestampNode(Node):
    """``timestamp(v)``: each sample's timestamp in seconds, the name dropped.

    Of a selector (``timestamp(x offset 1m)``) that is when the selected sample
    was taken; of any other expression, the evaluation time.
    """

    expr: Node
    of_selector: bool = False  # the argument is a selector itself (parentheses aside)
    kind = "vector"

    def reach_ms(self) -> int:
        return self.expr.reach_ms()

    def evaluate(self, ctx: EvalContext) -> Value:
        if self.of_selector:
            assert isinstance(self.expr, SelectorNode)
            rows = self.expr.rows(ctx.store)
            found, stamps, _ = ctx.store.latest(rows, self.expr.read_time(ctx), ctx.lookback_ms)
            labels = [drop_name(ctx.store.labels[r]) for r in rows[found]]
            return unique(labels, stamps[found] / 1000)
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        return unique([drop_name(l) for l in vector.labels], np.full(len(vector), ctx.t_ms / 1000))


_SECONDS_PER_DAY = 86_400
# Go counts time from 1 January of year -292277022399 (the "absolute" epoch):
# Unix seconds are shifted to it in wrapping 64-bit arithmetic.
_ABSOLUTE_ZERO_YEAR = -292_277_022_399
_UNIX_TO_ABSOLUTE = np.uint64(9_223_372_028_715_321_600)
_DAYS_BEFORE_MONTH = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365])


def _is_leap(year: np.ndarray) -> np.ndarray:
    return (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))


def _calendar(seconds: np.ndarray) -> dict[str, np.ndarray]:
    """Year, month, day, weekday, hour and minute (UTC) of Unix seconds (int64)."""
    absolute = seconds.astype(np.uint64) + _UNIX_TO_ABSOLUTE  # wraps modulo 2^64, as in Go
    days = (absolute // np.uint64(_SECONDS_PER_DAY)).astype(np.int64)
    of_day = (absolute % np.uint64(_SECONDS_PER_DAY)).astype(np.int64)
    weekday = ((absolute + np.uint64(_SECONDS_PER_DAY)) % np.uint64(7 * _SECONDS_PER_DAY)).astype(np.int64)
    # Proleptic Gregorian years, counted in 400-, 100-, 4- and 1-year cycles
    # from the epoch (a year like 1 AD: the first of a 400-year cycle).
    cycles400, days = np.divmod(days, 146_097)
    cycles100 = days // 36_524
    cycles100 -= cycles100 >> 2
    days -= cycles100 * 36_524
    cycles4, days = np.divmod(days, 1_461)
    years = days // 365
    years -= years >> 2
    day_of_year = days - years * 365
    year = cycles400 * 400 + cycles100 * 100 + cycles4 * 4 + years + _ABSOLUTE_ZERO_YEAR
    leap = _is_leap(year)
    after_leap_day = leap & (day_of_year > 59)
    leap_day = leap & (day_of_year == 59)
    day = day_of_year - after_leap_day
    month = np.searchsorted(_DAYS_BEFORE_MONTH, day, side="right")  # 1..12
    day_of_month = day - _DAYS_BEFORE_MONTH[month - 1] + 1
    month = np.where(leap_day, 2, month)
    day_of_month = np.where(leap_day, 29, day_of_month)
    month_days = np.diff(_DAYS_BEFORE_MONTH)[month - 1] + ((month == 2) & leap)
    return {
        "year": year,
        "month": month,
        "day_of_month": day_of_month,
        "days_in_month": month_days,
        "day_of_week": weekday // _SECONDS_PER_DAY,
        "day_of_year": day_of_year + 1,
        "hour": of_day // 3600,
        "minute": of_day % 3600 // 60,
    }


@dataclass(eq=False)
class DateNode(Node):
    """``hour()`` (of the evaluation time) or ``hour(v)`` (of each value as Unix seconds, the name dropped).

    >>> from detector.promql import compile_expr
    >>> from detector.store import SeriesStore
    >>> store = SeriesStore(retention_ms=600_000)
    >>> list(compile_expr("day_of_week()").evaluate(EvalContext(store, t_ms=1_700_000_000_000)).samples())
    [((), 2.0)]
    """

    name: str
    expr: Node | None = None
    kind = "vector"

    def reach_ms(self) -> int:
        return self.expr.reach_ms() if self.expr is not None else 0

    def evaluate(self, ctx: EvalContext) -> Value:
        if self.expr is None:
            now = np.array([abs(ctx.t_ms) // 1000 * (1 if ctx.t_ms >= 0 else -1)], dtype=np.int64)
            return InstantVector([()], _calendar(now)[self.name].astype(np.float64))
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        values = _calendar(go_int64(vector.values))[self.name].astype(np.float64)
        return unique([drop_name(l) for l in vector.labels], values)

