"""Which series have a bound, what the bound is, and the forecast settings.

A :class:`BoundSpec` names a selector, a direction and a bound: a constant
(``1.0`` for a saturation ratio, ``0`` for permits) or a *paired series*, found
from the forecast series' own labels by replacing some of them (usually the
metric name) and keeping all others identical: ``pgmq_queue_max_depth`` for
``pgmq_queue_depth{queue_name="orders"}`` is
``pgmq_queue_max_depth{queue_name="orders"}``. A replacement may use ``$1``
(or ``${1}``, ``${name}``) for the groups of the regex matcher on the same label.

Specs come from a small YAML file or dict; the runbook's patterns are
recognised with no configuration (:data:`DEFAULT_SPECS`), after any user specs:

.. code-block:: yaml

    settings:            # all optional (defaults shown); durations in Prometheus notation
      horizon: 20m       # warn when the bound is likely within this
      tau: 10m           # discount time of the trend fit
      warn_after: 12     # consecutive evaluations (15 s apart) before a warning fires ...
      confirm_share: 0.33  # ... or this share of the time left, when the bound is near ...
      warn_after_min: 6  # ... but never fewer evaluations than this
      min_used: 0.7      # share of the headroom used before a warning may start
      dip_memory: 24h    # ... and more than in the deepest dip it recovered from within this (0: off) ...
      dip_margin: 0.25   # ... by this share of the headroom; recovered: back by dip_recovery
      dip_recovery: 0.2
      rise_margin: 5m    # ... or rising for longer than the longest rise it recovered from, by this (off)
      approach_margin: 0.5  # ... or as long a rise and an ETA shorter than any it recovered from (x 1 + this)
      dip_rest_margin: 0.5  # ... the depth margin as a share of what that dip left, not of the whole (off: dip_margin)
    forecasts:
      - selector: 'pgmq_queue_depth{queue_name="orders"}'
        bound: pgmq_queue_max_depth           # a paired series: the metric name replaced
      - selector: '{__name__=~"(.+)_in_use"}'
        bound: {series: "$1_limit"}          # the same, from a regex group
      - selector: worker_handler_semaphore_permits_available
        bound: 0
        direction: down
        horizon: 5m

>>> spec = recognise((("__name__", "pgmq_queue_depth"), ("queue_name", "orders")))
>>> spec.direction, spec.bound_labels((("__name__", "pgmq_queue_depth"), ("queue_name", "orders")))
('up', (('__name__', 'pgmq_queue_max_depth'), ('queue_name', 'orders')))
>>> recognise((("__name__", "worker_handler_semaphore_permits_available"),)).describe()
'{__name__=~".+_permits_available"} down to 0'
>>> recognise((("__name__", "pgmq_queue_max_depth"),)) is None
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from detector.durations import parse_duration
from detector.errors import HeadroomError
from detector.labels import METRIC_NAME, Labels, metric_name
from detector.promql.plan import Matcher
from detector.promql.selectors import SelectorError, parse_selector
from detector.yaml_files import YamlFileError, read_mapping


class ForecastSpecError(HeadroomError):
    """A forecast spec or setting Headroom cannot use; lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s) in forecast specs:\n  " + "\n  ".join(self.problems))


_GROUP_REF = re.compile(r"\$(?:(\d+)|\{(\w+)\})")


@dataclass(frozen=True)
class BoundSpec:
    """A bounded series: selector, direction (``"up"``/``"down"``), and a constant or paired bound.

    ``pair`` holds label replacements that turn the series' labels into its bound
    series' labels (an empty value removes the label); ``bound`` is the constant
    when ``pair`` is empty. ``horizon_s`` overrides the warning horizon.

    >>> spec = BoundSpec.from_dict({"selector": '{__name__=~"(.+)_depth"}', "bound": {"series": "$1_max_depth"}})
    >>> spec.bound_labels((("__name__", "kafka_depth"), ("topic", "t")))
    (('__name__', 'kafka_max_depth'), ('topic', 't'))
    >>> constant = BoundSpec.from_dict({"selector": "x_saturation", "bound": 1})
    >>> constant.bound_labels((("__name__", "x_saturation"),)) is None
    True
    """

    selector: tuple[Matcher, ...]
    direction: str = "up"
    bound: float | None = None
    pair: tuple[tuple[str, str], ...] = ()
    horizon_s: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {self.direction!r}")
        if (self.bound is None) == (not self.pair):
            raise ValueError("give exactly one of a constant bound and a paired series")

    # ------------------------------------------------------------------ matching

    def matches(self, labels: Labels) -> bool:
        values = dict(labels)
        return all(m.matches(values.get(m.name, "")) for m in self.selector)

    def bound_labels(self, labels: Labels) -> Labels | None:
        """Labels of the paired bound series for ``labels``; None for a constant bound."""
        if not self.pair:
            return None
        values = dict(labels)
        for name, template in self.pair:
            value = _expand(template, self._groups(name, values.get(name, "")))
            if value:
                values[name] = value
            else:
                values.pop(name, None)
        return tuple(sorted(values.items()))

    def bound_name(self, labels: Labels) -> str:
        """How the alert text names the bound: the paired metric's name, or '' for a constant."""
        paired = self.bound_labels(labels)
        return metric_name(paired) if paired is not None else ""

    def _groups(self, label: str, value: str) -> dict[str, str]:
        for m in self.selector:
            if m.name == label and m.op == "=~" and m.pattern is not None:
                hit = m.pattern.fullmatch(value)
                if hit:
                    found = {str(i): g or "" for i, g in enumerate(hit.groups(), start=1)}
                    found.update({k: g or "" for k, g in hit.groupdict().items()})
                    found["0"] = hit.group(0)
                    return found
        return {"0": value}

    def describe(self) -> str:
        sel = "{" + ", ".join(f'{m.name}{m.op}"{m.value}"' for m in self.selector) + "}"
        if self.pair:
            target = "{" + ", ".join(f'{k}="{v}"' for k, v in self.pair) + "}"
        else:
            target = _num(self.bound)  # type: ignore[arg-type]
        return f"{sel} {self.direction} to {target}"

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, entry: Mapping, where: str = "forecast spec") -> BoundSpec:
        """One spec from its dict form; :class:`ForecastSpecError` lists every problem."""
        problems: list[str] = []
        if not isinstance(entry, Mapping):
            raise ForecastSpecError([f"{where}: expected a mapping with 'selector' and 'bound', got {entry!r}"])
        unknown = set(entry) - {"selector", "bound", "direction", "horizon", "name"}
        if unknown:
            problems.append(f"{where}: unknown field(s) {sorted(unknown)} "
                            "(known: selector, bound, direction, horizon, name)")
        selector: tuple[Matcher, ...] = ()
        try:
            selector = parse_selector(entry.get("selector"))
        except SelectorError as exc:
            problems.append(f"{where}: selector: {exc}")
        direction = entry.get("direction", "up")
        if direction not in ("up", "down"):
            problems.append(f"{where}: direction: must be 'up' or 'down', got {direction!r}")
        bound, pair = None, ()
        raw = entry.get("bound")
        if isinstance(raw, bool) or raw is None:
            problems.append(f"{where}: bound: required: a number (e.g. 1.0) "
                            "or a paired series (e.g. pgmq_queue_max_depth)")
        elif isinstance(raw, (int, float)):
            bound = float(raw)
            if not math.isfinite(bound):
                problems.append(f"{where}: bound: must be finite, got {raw!r}")
        elif isinstance(raw, str):
            pair = ((METRIC_NAME, raw),)
        elif isinstance(raw, Mapping):
            bad = set(raw) - {"series", "labels"}
            if bad or not raw:
                problems.append(f"{where}: bound: a paired bound takes 'series' and/or 'labels', got {sorted(raw)}")
            replace = dict(raw.get("labels") or {})
            if raw.get("series"):
                replace[METRIC_NAME] = raw["series"]
            pair = tuple(sorted((str(k), str(v)) for k, v in replace.items()))
        else:
            problems.append(f"{where}: bound: expected a number or a paired series, got {raw!r}")
        for name, template in pair:
            refs = [a or b for a, b in _GROUP_REF.findall(template)]
            regex = [m for m in selector if m.name == name and m.op == "=~"]
            if refs and not regex:
                problems.append(f"{where}: bound: {template!r} refers to a group "
                                f"but the selector has no =~ matcher on {name}")
            if regex and regex[0].pattern is not None:
                p = regex[0].pattern
                missing = [r for r in refs if not (r.isdigit() and int(r) <= p.groups or r in p.groupindex)]
                if missing:
                    problems.append(f"{where}: bound: {template!r} refers to group(s) {missing} "
                                    f"that {p.pattern!r} lacks")
        horizon_s = None
        if entry.get("horizon") is not None:
            try:
                horizon_s = _seconds(entry["horizon"])
            except ValueError as exc:
                problems.append(f"{where}: horizon: {exc}")
        if problems:
            raise ForecastSpecError(problems)
        return cls(selector, direction, bound, pair, horizon_s, str(entry.get("name", "")))


def _expand(template: str, groups: Mapping[str, str]) -> str:
    return _GROUP_REF.sub(lambda m: groups.get(m.group(1) or m.group(2), ""), template)


def _num(v: float) -> str:
    return f"{v:g}"


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '15m', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return float(value)
    return parse_duration(str(value)) / 1000.0


def _m(name: str, op: str, value: str) -> Matcher:
    return Matcher.create(name, op, value)


DEFAULT_SPECS: tuple[BoundSpec, ...] = (
    BoundSpec((_m(METRIC_NAME, "=~", ".+_saturation"),), "up", bound=1.0, name="saturation"),
    BoundSpec((_m(METRIC_NAME, "=~", ".+_permits_available"),), "down", bound=0.0, name="permits"),
    BoundSpec((_m(METRIC_NAME, "=~", "(.+)_depth"), _m(METRIC_NAME, "!~", ".+_max_depth")), "up",
              pair=((METRIC_NAME, "$1_max_depth"),), name="depth"),
)
"""The runbook's patterns: ``*_saturation`` up to 1.0, ``*_permits_available`` down to 0,
``X_depth`` up to ``X_max_depth`` (``pgmq_queue_depth`` against ``pgmq_queue_max_depth``)."""


def recognise(labels: Labels, specs: Sequence[BoundSpec] = DEFAULT_SPECS) -> BoundSpec | None:
    """The first spec whose selector matches ``labels``, or None."""
    for spec in specs:
        if spec.matches(labels):
            return spec
    return None


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ForecastSettings:
    """Numbers of the trend fit and the early-warning state machine (seconds).

    * ``tau_s``: the trend fit's discount time; ``level``: central probability of intervals;
      ``min_samples``: effective samples before any estimate; ``max_horizon_s``: farther is "none";
      ``adapt_sigmas``: drift of recent errors that makes the fit forget faster (0: never);
    * ``horizon_s``: warn when the ETA is within this; ``warn_on``: which ETA, ``"eta"`` (the
      point estimate: the bound is likely in time) or ``"eta_low"`` (the interval's near end:
      plausibly; earlier warnings, more false ones);
    * ``warn_after``: ... for this many consecutive evaluations (pending until then), or, when the
      bound is near, for ``confirm_share`` of the time left (ETA / eval interval evaluations),
      but never fewer than ``warn_after_min`` (or ``warn_after`` if smaller; ``confirm_share`` 0:
      always ``warn_after``);
    * ``hysteresis``: resolve when that ETA exceeds ``horizon_s * hysteresis`` or the trend no
      longer heads to the bound, ``resolve_after`` consecutive evaluations in a row;
    * ``eval_interval_s``: a series is evaluated at most once per slot of this length of event time;
    * ``min_used``: a warning starts (and stays pending) only while the series has used at least
      this share of its headroom (0 off): the level has to support the trend;
    * ``restart_on_change``: a pending warning goes back to inactive when the trend fit detects
      that the data fell behind its line (the rise stopped), instead of firing on a stale slope;
    * ``dip_memory_s``, ``dip_margin``, ``dip_recovery`` (the *dip gate*, ``dip_memory`` 0 off): a
      warning starts (and stays pending) only while the series has used more of its headroom than
      in the deepest excursion it recovered from within the last ``dip_memory_s``, by
      ``dip_margin``; an excursion counts as recovered once the used share falls ``dip_recovery``
      below its deepest point (see :class:`~detector.forecast.engine.ForecastEngine`);
    * ``rise_margin_s`` (the gate's *rise test*, None: off): a warning the depth test refuses may
      still start while the series has headed to its bound for longer than the longest rise of an
      excursion it recovered from within ``dip_memory_s``, by ``rise_margin_s``;
    * ``dip_rest_margin`` (0.5; None: off, ``dip_margin`` then): the depth test measures its margin
      against the headroom the deepest recovered excursion left, not the whole: the series must use
      more than that excursion by ``dip_rest_margin`` of ``1 - deepest`` (a burst to 80% asks a ramp
      for 90% with 0.5, where ``dip_margin`` 0.25 asks for 105%, which no ramp shows before its bound);
    * ``approach_margin`` (the gate's *approach test*, None: off): ... or while its ETA, times
      ``1 + approach_margin``, is shorter than the shortest ETA it showed in an excursion it
      recovered from within ``dip_memory_s`` (it heads for the bound faster or closer than then)
      and it has headed to the bound for longer than the longest such rise (no margin).

    The trend and state-machine defaults were chosen with ``python -m bench.forecast`` (15 s
    scrapes); ``min_used`` and ``restart_on_change`` with ``python -m bench.early_warning`` (the
    simulator's ramps and benign days through ``headroom replay``): ``min_used`` 0.6 / 0.65 /
    0.7 / 0.75 trade a median lead of about 8.4 / 6.4 / 5.9 / 4.7 minutes on ramps of 15 minutes
    or more against 8.5 / 2.3 / 0.5 / 0 false warnings per benign day. ``confirm_share`` 0.33 (with
    ``warn_after_min`` 6; 4 gave the same) moved that median from 5.17 to 5.92 minutes (15-minute
    ramps from 1 to 2.5) for 0.89 false warnings per benign day instead of 0.56 (3 seeds, 3 days).
    The dip gate was first set by reasoning (6 h, 0.05, 0.2); ``dip_memory`` 24 h and ``dip_margin`` 0.25
    are what ``python -m bench.early_warning_loso --grid edge`` chose on all five development seeds
    (leave-one-seed-out folds chose 24 h or 12 h, 0.25 or 0.15): pooled over the held-out folds 0.87 false
    warnings per benign day instead of 1.80 with (6 h, 0.05), same lead (5.92 min) and 75/75 incidents
    warned (bench/README.md). That bench's ramps then all started after calm. With *ramps after bursts*
    added (the series first recovers from 1-3 benign bursts to 60-78% in the 3 hours before its ramp),
    ``--grid rerun`` (6/12/24 h x 0.05..0.25) chose (24 h, 0.25) again, the only setting at or under 0.5
    false warnings per benign day on all five seeds (0.47); it pays for it on those ramps: 32 of 75 warned
    in the held-out folds (149 of 150 incidents with (6 h, 0.05), at 1.80 false warnings a day). No setting
    of the gate meets both 0.5 false a day and 95% warned: a ramp within 24 h of a recovered excursion
    at 75% used or more is not warned about until that excursion is a day old. Hence the rise test:
    ``--grid rise`` (``rise_margin`` off, 0, 2.5, 5, 10 minutes beside 24 h / 0.25) chose 5 minutes on all
    five development seeds (134 of 150 incidents warned in-sample, 0.47 false warnings per benign day, as
    without it); pooled over the held-out folds 136 of 150 warned (ramps after bursts 61 of 75) and 0.60
    false warnings per benign day (folds chose 0, 2.5 or 5 minutes); on the final seeds, scored once, 78 of
    90 (33 of 45 after bursts, 14 without the rise test) and 0.44 per day. 15-minute ramps after bursts are
    still often missed: they reach their deadline before outlasting the bursts' rises. Hence the approach
    test: ``--grid approach`` (``approach_margin`` off, 0, 0.25, 0.5, 1 beside 24 h / 0.25 / 5 minutes)
    chose 0.5 on all five development seeds (139 of 150 warned in-sample, 0.47 false warnings per benign
    day, as without it); pooled over the held-out folds 139 of 150 (64 of 75 after bursts) and 0.53 per day
    (folds chose 0 or 0.5); on the final seeds, scored once, 83 of 90 (38 of 45 after bursts) and 0.44.
    Every miss left was a 15-minute ramp after bursts, which the depth test's 0.25 of the whole
    headroom refuses until past its bound. Hence ``dip_rest_margin``: ``--grid rest`` (off, 0.25, 0.5,
    0.75 of what the deepest recovered dip left, beside 24 h / 5 minutes / 0.5) chose 0.5 in every
    fold; pooled over the held-out folds 143 of 150 warned (68 of 75 after bursts), 0.47 false
    warnings per benign day, median lead 5.46 minutes (the previous defaults: 139, 0.47, 5.33).
    """

    tau_s: float = 600.0
    level: float = 0.8
    min_samples: float = 16.0
    max_horizon_s: float = 6 * 3600.0
    horizon_s: float = 1200.0
    warn_after: int = 12
    resolve_after: int = 8
    hysteresis: float = 2.0
    eval_interval_s: float = 15.0
    adapt_sigmas: float = 2.5
    warn_on: str = "eta"
    min_used: float = 0.7
    restart_on_change: bool = True
    confirm_share: float = 0.33
    warn_after_min: int = 6
    dip_memory_s: float = 24 * 3600.0
    dip_margin: float = 0.25
    dip_recovery: float = 0.2
    rise_margin_s: float | None = 300.0
    approach_margin: float | None = 0.5
    dip_rest_margin: float | None = 0.5

    _DURATIONS = {"tau": "tau_s", "max_horizon": "max_horizon_s", "horizon": "horizon_s",
                  "eval_interval": "eval_interval_s", "dip_memory": "dip_memory_s", "rise_margin": "rise_margin_s"}

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ForecastSpecError(problems)

    def problems(self, where: str = "settings") -> list[str]:
        found = []
        if not self.tau_s > 0:
            found.append(f"{where}: tau: must be > 0, got {self.tau_s!r}")
        if not 0 < self.level < 1:
            found.append(f"{where}: level: must be between 0 and 1 (e.g. 0.8), got {self.level!r}")
        if not self.horizon_s > 0 or not self.max_horizon_s >= self.horizon_s * self.hysteresis:
            found.append(f"{where}: horizon: must be > 0 and horizon x hysteresis <= max_horizon "
                         f"({self.horizon_s!r} x {self.hysteresis!r} vs {self.max_horizon_s!r})")
        if not self.hysteresis >= 1:
            found.append(f"{where}: hysteresis: must be >= 1, got {self.hysteresis!r}")
        for name in ("warn_after", "resolve_after", "warn_after_min"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                found.append(f"{where}: {name}: must be a whole number >= 1, got {value!r}")
        if not 0 <= self.confirm_share <= 1:
            found.append(f"{where}: confirm_share: must be between 0 and 1 (0 turns it off), got {self.confirm_share!r}")
        if self.warn_on not in ("eta", "eta_low"):
            found.append(f"{where}: warn_on: must be 'eta' or 'eta_low', got {self.warn_on!r}")
        if not self.adapt_sigmas >= 0:
            found.append(f"{where}: adapt_sigmas: must be >= 0 (0 turns adaptation off), got {self.adapt_sigmas!r}")
        if not 0 <= self.min_used < 1:
            found.append(f"{where}: min_used: must be at least 0 and below 1 (e.g. 0.5), got {self.min_used!r}")
        if self.eval_interval_s < 0:
            found.append(f"{where}: eval_interval: must be >= 0, got {self.eval_interval_s!r}")
        if not self.dip_memory_s >= 0:
            found.append(f"{where}: dip_memory: must be >= 0 (0 turns the dip gate off), got {self.dip_memory_s!r}")
        if not 0 <= self.dip_margin < 1:
            found.append(f"{where}: dip_margin: must be at least 0 and below 1, got {self.dip_margin!r}")
        if not 0 < self.dip_recovery <= 1:
            found.append(f"{where}: dip_recovery: must be above 0 and at most 1 (e.g. 0.2), got {self.dip_recovery!r}")
        if self.rise_margin_s is not None and not self.rise_margin_s >= 0:
            found.append(f"{where}: rise_margin: must be a duration >= 0, or off, got {self.rise_margin_s!r}")
        if self.approach_margin is not None and not self.approach_margin >= 0:
            found.append(f"{where}: approach_margin: must be >= 0 (e.g. 0.25), or off, got {self.approach_margin!r}")
        if self.dip_rest_margin is not None and not 0 <= self.dip_rest_margin <= 1:
            found.append(f"{where}: dip_rest_margin: must be between 0 and 1 (e.g. 0.5), or off, got {self.dip_rest_margin!r}")
        return found

    @classmethod
    def from_dict(cls, raw: Mapping | None, where: str = "settings") -> ForecastSettings:
        raw = dict(raw or {})
        problems: list[str] = []
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, object] = {}
        for key, value in raw.items():
            target = cls._DURATIONS.get(key, key)
            if target not in known:
                names = sorted([*cls._DURATIONS, "adapt_sigmas", "approach_margin", "confirm_share", "dip_margin", "dip_recovery",
                                "dip_rest_margin", "hysteresis",
                                "level", "min_samples",
                                "min_used", "restart_on_change", "resolve_after", "warn_after", "warn_after_min", "warn_on"])
                problems.append(f"{where}: unknown setting {key!r} (known: {', '.join(names)})")
                continue
            try:
                # YAML reads a bare off as False
                if target in ("rise_margin_s", "approach_margin", "dip_rest_margin") and (value is None or value is False
                                                                       or str(value).lower() == "off"):
                    kwargs[target] = None
                elif target.endswith("_s"):
                    kwargs[target] = _seconds(value)
                elif target == "warn_on":
                    kwargs[target] = str(value)
                elif target == "restart_on_change":
                    kwargs[target] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                elif target in ("warn_after", "resolve_after", "warn_after_min"):
                    if isinstance(value, str) and value.strip().isdigit():
                        value = int(value)
                    kwargs[target] = value if isinstance(value, int) and not isinstance(value, bool) else float("nan")
                else:
                    kwargs[target] = float(value)
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}: {key}: {exc}")
        if not problems:
            try:
                return cls(**kwargs)  # type: ignore[arg-type]
            except ForecastSpecError as exc:
                problems += exc.problems
        raise ForecastSpecError(problems)


@dataclass(frozen=True)
class ForecastConfig:
    """Settings plus specs; user specs are tried before the defaults (``defaults: false`` drops those).

    >>> config = ForecastConfig.from_dict({"settings": {"horizon": "20m"},
    ...     "forecasts": [{"selector": "disk_used_bytes", "bound": {"series": "disk_size_bytes"}}]})
    >>> config.settings.horizon_s, len(config.specs)
    (1200.0, 4)
    >>> ForecastConfig.from_dict({"forecasts": [{"selector": "x", "bound": "y", "direction": "sideways"}]})
    Traceback (most recent call last):
    ...
    detector.forecast.spec.ForecastSpecError: 1 problem(s) in forecast specs:
      forecasts[0]: direction: must be 'up' or 'down', got 'sideways'
    """

    settings: ForecastSettings = field(default_factory=ForecastSettings)
    specs: tuple[BoundSpec, ...] = DEFAULT_SPECS

    @classmethod
    def from_dict(cls, raw: Mapping | None, source: str = "") -> ForecastConfig:
        prefix = f"{source}: " if source else ""
        raw = dict(raw or {})
        problems: list[str] = []
        unknown = set(raw) - {"settings", "forecasts", "defaults"}
        if unknown:
            problems.append(f"{prefix}unknown top-level key(s) {sorted(unknown)} "
                            "(known: settings, forecasts, defaults)")
        settings = ForecastSettings()
        try:
            settings = ForecastSettings.from_dict(raw.get("settings"), f"{prefix}settings")
        except ForecastSpecError as exc:
            problems += exc.problems
        specs: list[BoundSpec] = []
        entries = raw.get("forecasts") or []
        if not isinstance(entries, list):
            problems.append(f"{prefix}forecasts: expected a list of specs, got {type(entries).__name__}")
            entries = []
        for i, entry in enumerate(entries):
            try:
                specs.append(BoundSpec.from_dict(entry, f"{prefix}forecasts[{i}]"))
            except ForecastSpecError as exc:
                problems += exc.problems
        if problems:
            raise ForecastSpecError(problems)
        if raw.get("defaults", True):
            specs += DEFAULT_SPECS
        return cls(settings, tuple(specs))

    @classmethod
    def load(cls, path: str | Path) -> ForecastConfig:
        """Read a YAML spec file (see the module docs)."""
        try:
            raw = read_mapping(path, "a mapping with 'forecasts' and 'settings'")
        except YamlFileError as exc:
            raise ForecastSpecError([str(exc)]) from None
        return cls.from_dict(raw, str(path))


def specs_from(entries: Iterable[Mapping]) -> tuple[BoundSpec, ...]:
    """Specs from a list of dicts, every problem reported at once (no defaults added)."""
    return ForecastConfig.from_dict({"forecasts": list(entries), "defaults": False}).specs
