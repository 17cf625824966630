"""Alerting rules and the Prometheus alert lifecycle.

The lifecycle is Prometheus's (``rules/alerting.go``), step for step, so the
same samples give the same alerts at the same times:

* a result sample makes an alert *pending* (``active_at`` = evaluation time);
* a pending alert *fires* once it has been active for ``for``;
* an alert missing from the result is dropped if pending, or *resolved* if
  firing, unless ``keep_firing_for`` holds it firing a while longer;
* a resolved alert is kept 15 minutes so it is re-sent as resolved;
* alert identity is its label set: sample labels without ``__name__``, plus the
  rule's (templated) labels, plus ``alertname``.

Sending follows Prometheus's notifier rules: a firing alert is sent when it
starts firing and then whenever ``resend_delay`` has passed; a resolved alert
is sent at once and re-sent like a firing one while it is kept;
``ends_at = t + 4 * max(interval, resend_delay)`` for firing alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from detector.output.alerts import AlertNotification, AlertTransition
from detector.labels import METRIC_NAME, Labels, canonical_bytes, stable_hash
from detector.promql import EvalContext, InstantVector, Node, Scalar, compile_expr
from detector.promql.plan import EvaluationError
from detector.output.templates import QueryFunc, Template

RESOLVED_RETENTION_MS = 15 * 60_000
PENDING, FIRING, INACTIVE = "pending", "firing", "inactive"


@dataclass(slots=True)
class Alert:
    """One alert instance of a rule (mutable: it moves through the lifecycle)."""

    labels: Labels
    annotations: Labels
    value: float
    active_at: int
    state: str = PENDING
    fired_at: int | None = None
    resolved_at: int | None = None
    last_sent_at: int | None = None
    keep_firing_since: int | None = None
    valid_until: int | None = None

    def needs_sending(self, t_ms: int, resend_delay_ms: int) -> bool:
        if self.state == PENDING:
            return False
        if self.resolved_at is not None and (self.last_sent_at is None or self.resolved_at > self.last_sent_at):
            return True
        return self.last_sent_at is None or self.last_sent_at + resend_delay_ms < t_ms

    def notify(self, t_ms: int, interval_ms: int, resend_delay_ms: int, expr: str) -> AlertNotification | None:
        """The notification due at ``t_ms`` (marking the alert sent), or None if none is due."""
        if not self.needs_sending(t_ms, resend_delay_ms):
            return None
        self.last_sent_at = t_ms
        self.valid_until = t_ms + 4 * max(interval_ms, resend_delay_ms)
        return AlertNotification(
            labels=self.labels,
            annotations=self.annotations,
            starts_at=self.fired_at if self.fired_at is not None else self.active_at,
            ends_at=self.resolved_at if self.resolved_at is not None else self.valid_until,
            expr=expr,
        )


@dataclass(eq=False)
class AlertingRule:
    """A compiled alerting rule: what to evaluate and how to label the result.

    It holds no alert state: each partition's engine keeps its own
    ``dict[fingerprint, Alert]`` and passes it to :meth:`evaluate`.
    """

    name: str
    expr: Node
    expr_text: str
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: tuple[tuple[str, Template], ...] = ()
    annotations: tuple[tuple[str, Template], ...] = ()
    group: str = ""
    source: str = ""
    external_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""

    def evaluate(self, ctx: EvalContext, active: dict[int, Alert], limit: int = 0) -> list[AlertTransition]:
        """One evaluation at ``ctx.t_ms``; updates ``active`` and returns the state changes.

        Raises :class:`EvaluationError` (the alerts stay as they were, as in
        Prometheus when a rule fails).
        """
        t = ctx.t_ms
        result = self.expr.evaluate(ctx)
        if isinstance(result, Scalar):
            result = InstantVector([()], np.array([result.value]))
        before = {fp: (a.state, a) for fp, a in active.items()}
        current: dict[int, Alert] = {}
        query = template_query(ctx)
        for sample_labels, value in result.samples():
            alert = self._alert_for(sample_labels, value, t, query)
            fp = fingerprint(alert.labels)
            if fp in current:
                raise EvaluationError(
                    f"alert {self.name}: vector contains metrics with the same labelset after applying alert labels"
                )
            current[fp] = alert
        for fp, alert in current.items():
            known = active.get(fp)
            if known is not None and known.state != INACTIVE:
                known.value, known.annotations = alert.value, alert.annotations
            else:
                active[fp] = alert
        live = 0
        for fp, alert in list(active.items()):
            if fp not in current:
                keep_firing = False
                if alert.state == FIRING and self.keep_firing_for_ms > 0:
                    if alert.keep_firing_since is None:
                        alert.keep_firing_since = t
                    keep_firing = t - alert.keep_firing_since < self.keep_firing_for_ms
                if alert.state == PENDING or (
                    alert.resolved_at is not None and t - alert.resolved_at > RESOLVED_RETENTION_MS
                ):
                    del active[fp]
                if alert.state != INACTIVE and not keep_firing:
                    alert.state = INACTIVE
                    alert.resolved_at = t
                if not keep_firing:
                    continue
            else:
                alert.keep_firing_since = None
            live += 1
            if alert.state == PENDING and t - alert.active_at >= self.for_ms:
                alert.state = FIRING
                alert.fired_at = t
        if limit and live > limit:
            active.clear()
            raise EvaluationError(f"alert {self.name}: exceeded limit of {limit} with {live} alerts")
        return self._transitions(before, active, t)

    def notifications(self, t_ms: int, active: dict[int, Alert], interval_ms: int, resend_delay_ms: int) -> list[AlertNotification]:
        """The alerts due to be (re-)sent at ``t_ms``, marked as sent."""
        due = (alert.notify(t_ms, interval_ms, resend_delay_ms, self.expr_text) for alert in active.values())
        return [n for n in due if n is not None]

    def alert_series(self, active: dict[int, Alert]) -> tuple[list[bytes], list[float]]:
        """The ``ALERTS`` and ``ALERTS_FOR_STATE`` samples Prometheus writes after an evaluation.

        ``ALERTS{alertstate="pending"|"firing", <alert labels>} 1`` and
        ``ALERTS_FOR_STATE{<alert labels>} <active_at in seconds>`` for every
        pending or firing alert, as canonical label keys and values.
        """
        keys, values = [], []
        for alert in active.values():
            if alert.state == INACTIVE:
                continue
            base = tuple(p for p in alert.labels if p[0] != METRIC_NAME)
            keys.append(canonical_bytes(tuple(sorted(base + ((METRIC_NAME, "ALERTS"), ("alertstate", alert.state))))))
            values.append(1.0)
            keys.append(canonical_bytes(tuple(sorted(base + ((METRIC_NAME, "ALERTS_FOR_STATE"),)))))
            values.append(alert.active_at / 1000)
        return keys, values

    def _alert_for(self, sample_labels: Labels, value: float, t: int, query: QueryFunc | None = None) -> Alert:
        label_map = dict(sample_labels)
        out = {k: v for k, v in sample_labels if k != METRIC_NAME}
        for name, template in self.labels:
            rendered = template.render(label_map, value, self.external_labels, self.external_url, query)
            if rendered:
                out[name] = rendered
            else:  # an empty label value means no label, as in Prometheus
                out.pop(name, None)
        out["alertname"] = self.name
        annotations = tuple(
            (name, template.render(label_map, value, self.external_labels, self.external_url, query))
            for name, template in self.annotations
        )
        return Alert(tuple(sorted(out.items())), annotations, value, active_at=t)

    def _transitions(self, before: dict[int, tuple[str, Alert]], active: dict[int, Alert], t: int) -> list[AlertTransition]:
        out = []
        for fp, alert in active.items():
            previous = before[fp][0] if fp in before else INACTIVE
            if alert.state != previous:
                out.append(self._transition(alert, previous, t))
        for fp, (previous, alert) in before.items():
            if fp not in active and previous == PENDING:
                # A pending alert whose condition went away is dropped, never fired.
                out.append(self._transition(alert, previous, t))
        return out

    def _transition(self, alert: Alert, previous: str, t: int) -> AlertTransition:
        return AlertTransition(
            rule=self.name,
            group=self.group,
            source=self.source,
            state=alert.state,
            previous=previous,
            labels=alert.labels,
            annotations=alert.annotations,
            value=alert.value,
            active_at=alert.active_at,
            fired_at=alert.fired_at,
            resolved_at=alert.resolved_at,
            eval_time=t,
            expr=self.expr_text,
        )


def fingerprint(labels: Labels) -> int:
    return stable_hash(canonical_bytes(labels))


@lru_cache(maxsize=1024)
def _compiled_query(expr: str) -> Node:
    return compile_expr(expr)


def template_query(ctx: EvalContext) -> QueryFunc:
    """The templates' ``query``: PromQL at the rule's evaluation time over what this engine holds.

    A scalar is one sample without labels, as in Prometheus. Samples come
    sorted by labels (Prometheus's order is its index's, which no rule can rely on).
    Which series an engine holds: see :mod:`detector.output.templates.template`.

    >>> from detector.store import SeriesStore
    >>> template_query(EvalContext(SeriesStore(retention_ms=60_000), 0))("1 + 1")
    [((), 2.0)]
    """

    def run(expr: str) -> list[tuple[Labels, float]]:
        result = _compiled_query(expr).evaluate(ctx)
        if isinstance(result, Scalar):
            return [((), result.value)]
        return sorted(result.samples())

    return run
