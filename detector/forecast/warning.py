"""The early-warning state machine, columnar, with hysteresis; and the words of the alert.

Each evaluation of a series brings one ETA (NaN when the trend does not head
to the bound within the maximum horizon): by default the point ETA, so the
bound is *likely* (even odds or better) within the horizon; or the near end of
the interval, ``eta_low``, for "plausibly". With ``H`` the horizon:

* *warn condition*: ``eta <= H``;
* *clear condition*: no ETA (the trend turned, flattened, or points away), or
  ``eta > H * hysteresis``; and the series is not *at* the bound (``near``:
  within its noise of it), since a resource that filled up and stays full,
  flat, has not moved away from its bound.

States follow Prometheus's alert lifecycle so early warnings can share the
alert path: ``inactive`` -> ``pending`` on the first warn condition ->
``firing`` after ``warn_after`` consecutive ones (a miss while pending goes back
to ``inactive``); ``firing`` -> ``inactive`` (resolved) after ``resolve_after``
consecutive clear conditions. Between the two thresholds a firing warning
stays firing: a noisy ramp whose ETA wobbles around ``H`` does not flap.

>>> bank = WarningBank(horizon_s=600, warn_after=2, resolve_after=2, hysteresis=2)
>>> rows = bank.add(1)
>>> for t, eta in [(0, 900), (15, 500), (30, 400), (45, 1000), (60, 1300), (75, 1400)]:
...     for row, prev, new in zip(*bank.step(rows, np.array([t]), np.array([eta * 1.0]))):
...         print(t, STATES[prev], "->", STATES[new])
15 inactive -> pending
30 pending -> firing
75 firing -> inactive
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

INACTIVE, PENDING, FIRING = 0, 1, 2
STATES = ("inactive", "pending", "firing")


class WarningBank:
    """Early-warning state of many series as numpy columns, indexed by row.

    Per series: state (1 byte), streak (4), evaluation slot (8), ``active_at`` and
    ``fired_at`` (8 + 8): :attr:`nbytes_per_series` bytes.
    """

    def __init__(self, horizon_s: float = 1200.0, warn_after: int = 12, resolve_after: int = 8,
                 hysteresis: float = 2.0, eval_interval_s: float = 15.0, capacity: int = 1024,
                 confirm_share: float = 0.0, warn_after_min: int = 1) -> None:
        self.confirm_share = float(confirm_share)
        self.warn_after_min = int(warn_after_min)
        self.horizon_s = float(horizon_s)
        self.warn_after = int(warn_after)
        self.resolve_after = int(resolve_after)
        self.hysteresis = float(hysteresis)
        self.eval_interval_s = float(eval_interval_s)
        self._size = 0
        self._alloc(max(int(capacity), 1))

    def _alloc(self, n: int) -> None:
        old = getattr(self, "state", None)
        cols = {
            "state": np.zeros(n, dtype=np.int8),
            "streak": np.zeros(n, dtype=np.int32),
            "slot": np.full(n, np.iinfo(np.int64).min, dtype=np.int64),
            "active_at": np.full(n, np.nan),
            "fired_at": np.full(n, np.nan),
        }
        if old is not None:
            for name, col in cols.items():
                col[: self._size] = getattr(self, name)[: self._size]
        for name, col in cols.items():
            setattr(self, name, col)

    @property
    def nbytes_per_series(self) -> int:
        return 1 + 4 + 8 + 8 + 8

    def __len__(self) -> int:
        return self._size

    def add(self, n: int = 1) -> np.ndarray:
        need = self._size + n
        if need > self.state.shape[0]:
            self._alloc(max(need, 2 * self.state.shape[0]))
        rows = np.arange(self._size, need, dtype=np.int64)
        self._size = need
        return rows

    def reset(self, rows: np.ndarray) -> None:
        self.state[rows] = INACTIVE
        self.streak[rows] = 0
        self.slot[rows] = np.iinfo(np.int64).min
        self.active_at[rows] = np.nan
        self.fired_at[rows] = np.nan

    def due(self, rows: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Mask of rows whose evaluation slot at ``t_s`` is newer than their last evaluated one."""
        if self.eval_interval_s <= 0:
            return np.ones(len(rows), dtype=bool)
        return np.floor(t_s / self.eval_interval_s).astype(np.int64) > self.slot[rows]

    def step(self, rows: np.ndarray, t_s: np.ndarray, eta: np.ndarray,
             horizon_s: np.ndarray | float | None = None,
             near: np.ndarray | None = None,
             allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Evaluate distinct ``rows`` at ``t_s`` with their ETAs (NaN: none); returns (rows, previous, new).

        ``horizon_s`` may differ per row (a spec's own horizon); default the bank's.
        ``near`` marks rows at their bound (within noise): a firing warning does not resolve there.
        ``allowed`` marks rows that may warn (default all): a row not allowed does not start or
        continue a pending warning, but it is no reason to resolve a firing one either.
        """
        rows = np.asarray(rows, dtype=np.int64)
        h = self.horizon_s if horizon_s is None else np.asarray(horizon_s, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            heading = np.isfinite(eta)
            warn = heading & (eta <= h)
            clear = ~heading | (eta > h * self.hysteresis)
        if allowed is not None:
            warn &= allowed
        if near is not None:
            clear &= ~near
        if self.eval_interval_s > 0:
            self.slot[rows] = np.floor(t_s / self.eval_interval_s).astype(np.int64)
        prev = self.state[rows]
        streak = self.streak[rows]
        new = prev.copy()

        idle = prev == INACTIVE
        start = idle & warn
        streak = np.where(start, 1, streak)
        self.active_at[rows[start]] = t_s[start]
        new[start] = PENDING

        pending = prev == PENDING
        keep = pending & warn
        streak = np.where(keep, streak + 1, streak)
        drop = pending & ~warn
        new[drop] = INACTIVE
        streak = np.where(drop, 0, streak)

        need = self.warn_after
        if self.confirm_share > 0 and self.eval_interval_s > 0:
            # A bound close at hand leaves no time for the full confirmation: wait at most
            # confirm_share of the time left, but never fewer than warn_after_min evaluations.
            with np.errstate(invalid="ignore"):
                short = np.ceil(self.confirm_share * np.where(np.isnan(eta), np.inf, eta) / self.eval_interval_s)
            # np.clip and np.nan_to_num cost ten times these on the few rows of an evaluation
            need = np.minimum(np.maximum(short, min(self.warn_after_min, self.warn_after)), self.warn_after)
        fire = (new == PENDING) & (streak >= need)
        new[fire] = FIRING
        streak = np.where(fire, 0, streak)
        self.fired_at[rows[fire]] = t_s[fire]

        firing = prev == FIRING
        streak = np.where(firing, np.where(clear, streak + 1, 0), streak)
        resolve = firing & (streak >= self.resolve_after)
        new[resolve] = INACTIVE
        streak = np.where(resolve, 0, streak)

        self.state[rows] = new
        self.streak[rows] = streak
        changed = new != prev
        return rows[changed], prev[changed], new[changed]

    def clear_times(self, rows: np.ndarray) -> None:
        """Clear ``active_at``/``fired_at`` of rows that just went inactive (after their events were built)."""
        self.active_at[rows] = np.nan
        self.fired_at[rows] = np.nan

    # Snapshots (detector.snapshot) carry every other attribute; these come from the constructor.
    SNAPSHOT_SKIP = frozenset({"horizon_s", "warn_after", "resolve_after", "hysteresis", "eval_interval_s",
                               "confirm_share", "warn_after_min"})


# ---------------------------------------------------------------------- words


_NUDGE = {"round": 0.5, "floor": 1e-9, "ceil": 1e-9}  # what is added before flooring (ceil: to -v)


def round_duration(seconds: float | np.ndarray, mode: str = "round") -> float | np.ndarray:
    """The seconds :func:`humanize` shows: rounded to 1 s below 10 s, 5 s below a minute,
    a minute below a day, an hour beyond (NaN and infinities pass through).

    Two estimates that round to the same value read the same to people; forecast
    events use it to tell a changed estimate from jitter.

    >>> round_duration(250), round_duration(170, "floor"), round_duration(42.4), round_duration(190000)
    (240.0, 120.0, 40.0, 190800.0)
    >>> round_duration(np.array([3599.0, np.inf, np.nan])).tolist()
    [3600.0, inf, nan]
    """
    values = np.asarray(seconds, dtype=np.float64)
    out = round_durations(values.reshape(1, -1), [mode]).reshape(values.shape)
    return float(out) if out.ndim == 0 else out


def round_durations(seconds: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """:func:`round_duration` of each row of ``seconds`` with that row's mode, in one pass
    (an evaluation rounds an ETA and both ends of its interval; the passes cost more than the rows).

    >>> round_durations(np.array([[250.0, 42.4], [170.0, 3599.0], [170.0, np.nan]]), ["round", "floor", "ceil"]).tolist()
    [[240.0, 40.0], [120.0, 3540.0], [180.0, nan]]
    """
    # round: floor(v + 0.5); floor: floor(v + 1e-9); ceil(v - 1e-9) = -floor(-v + 1e-9), exactly.
    # floor/ceil forgive float dust: 780.0000000000017 s is 13m, not "up to 14m"
    sign = np.array([-1.0 if m == "ceil" else 1.0 for m in modes])[:, None]
    nudge = np.array([_NUDGE[m] for m in modes])[:, None]
    with np.errstate(invalid="ignore", over="ignore"):  # near the float maximum a step rounds up to inf
        s = np.maximum(np.asarray(seconds, dtype=np.float64), 0.0)
        unit = np.where(s < 60, np.where(s < 10, 1.0, 5.0), np.where(s < 86400, 60.0, 3600.0))
        return sign * np.floor(sign * (s / unit) + nudge) * unit


def humanize(seconds: float, mode: str = "round") -> str:
    """A short duration for people: ``45s``, ``4m``, ``1h20m``, ``2d3h``.

    ``mode`` rounds to the shown unit: ``"round"``, ``"floor"`` (a lower limit)
    or ``"ceil"`` (an upper limit).

    >>> humanize(250), humanize(170, "floor"), humanize(330, "ceil"), humanize(4800), humanize(42.4)
    ('4m', '2m', '6m', '1h20m', '40s')
    >>> humanize(float("inf")), humanize(0), humanize(3599), humanize(190000)
    ('∞', '0s', '1h', '2d5h')
    """
    if math.isnan(seconds):
        return "?"
    if math.isinf(seconds):
        return "∞"
    s = int(round_duration(seconds, mode))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d{h}h" if h else f"{d}d"


def series_text(labels: tuple[tuple[str, str], ...]) -> str:
    """``name{a="1", b="2"}`` in PromQL notation (``name`` alone when it has no other labels)."""
    name = ""
    rest = []
    for k, v in labels:
        if k == "__name__":
            name = v
        else:
            escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            rest.append(f'{k}="{escaped}"')
    return f"{name}{{{', '.join(rest)}}}" if rest else name


def bound_text(bound: float, bound_name: str = "") -> str:
    """``pgmq_queue_max_depth (10000)`` for a paired bound, ``1`` for a constant."""
    value = f"{bound:.6g}"
    return f"{bound_name} ({value})" if bound_name else value


def warning_text(labels: tuple[tuple[str, str], ...], bound: float, bound_name: str, direction: str,
                 eta_s: float, eta_low_s: float, eta_high_s: float) -> str:
    """The early-warning sentence.

    >>> warning_text((("__name__", "pgmq_queue_depth"), ("queue_name", "orders")), 10000, "pgmq_queue_max_depth",
    ...              "up", 250, 170, 330)
    'pgmq_queue_depth{queue_name="orders"} reaches pgmq_queue_max_depth (10000) in about 4m (2m-6m)'
    >>> warning_text((("__name__", "worker_handler_semaphore_permits_available"), ("worker_id", "w1")), 0, "",
    ...              "down", 620, 480, float("inf"))
    'worker_handler_semaphore_permits_available{worker_id="w1"} drops to 0 in about 10m (8m-∞)'
    >>> warning_text((("__name__", "mpsc_channel_saturation"),), 1.0, "", "up", 0, 0, 0)
    'mpsc_channel_saturation has reached 1'
    """
    verb = "reaches" if direction == "up" else "drops to"
    what = f"{series_text(labels)} {verb} {bound_text(bound, bound_name)}"
    if eta_s <= 0:
        return f"{series_text(labels)} has reached {bound_text(bound, bound_name)}"
    return f"{what} in about {humanize(eta_s)} ({humanize(eta_low_s, 'floor')}-{humanize(eta_high_s, 'ceil')})"
