"""Alerts whose state changes come from outside the rule engine, sent on the rules' schedule.

Early warnings (:mod:`detector.forecast`) decide pending / firing / resolved
themselves and report it as :class:`~detector.output.alerts.AlertTransition`s. An
:class:`AlertBook` keeps those alerts as :class:`~detector.rules.alerting.Alert`
instances and sends them exactly as alerting rules send theirs
(:meth:`Alert.notify <detector.rules.alerting.Alert.notify>`): a firing alert when
it starts firing and whenever ``resend_delay`` has passed, with
``ends_at = t + 4 * max(interval, resend_delay)``; a resolved one at once with
``ends_at`` = its resolve time, re-sent while it is kept (15 minutes); pending
ones never. Alertmanager therefore sees one kind of alert.

Pure and on event time: ``t_ms`` is passed in.

>>> from detector.output.alerts import AlertTransition
>>> def change(state, previous, t, fired=None, resolved=None):
...     return AlertTransition(rule="W", group="g", source="forecast", state=state, previous=previous,
...         labels=(("alertname", "W"),), annotations=(("summary", state),), value=1.0, active_at=0,
...         fired_at=fired, resolved_at=resolved, eval_time=t, expr="w")
>>> book = AlertBook(interval_ms=15_000, resend_delay_ms=60_000)
>>> book.apply([change("pending", "inactive", 0)]); book.notifications(0)
[]
>>> book.apply([change("firing", "pending", 30_000, fired=30_000)])
>>> [(n.starts_at, n.ends_at) for n in book.notifications(30_000)]
[(30000, 270000)]
>>> book.notifications(60_000), len(book.notifications(105_000))
([], 1)
>>> book.apply([change("inactive", "firing", 120_000, fired=30_000, resolved=120_000)])
>>> [(n.ends_at, dict(n.annotations)["summary"]) for n in book.notifications(120_000)]
[(120000, 'inactive')]
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from detector.output.alerts import AlertNotification, AlertTransition
from detector.labels import Labels
from detector.rules.alerting import FIRING, INACTIVE, PENDING, RESOLVED_RETENTION_MS, Alert, fingerprint


class AlertBook:
    """Pending, firing and recently resolved alerts fed by transitions; what is due to be sent."""

    def __init__(self, interval_ms: int, resend_delay_ms: int) -> None:
        self.interval_ms = int(interval_ms)
        self.resend_delay_ms = int(resend_delay_ms)
        self._alerts: dict[int, tuple[Alert, str]] = {}  # fingerprint -> (alert, expr for generatorURL)

    # Snapshots (detector.snapshot) carry the alerts; the timings are configuration.
    SNAPSHOT_SKIP = frozenset({"interval_ms", "resend_delay_ms"})

    def __len__(self) -> int:
        return len(self._alerts)

    def apply(self, transitions: Iterable[AlertTransition]) -> None:
        """Take state changes in the order they happened."""
        for t in transitions:
            fp = fingerprint(t.labels)
            known = self._alerts.get(fp)
            alert = known[0] if known is not None else None
            if t.state == INACTIVE:
                if alert is None:
                    continue
                if alert.state == PENDING:  # dropped before it fired: never sent, nothing to resolve
                    del self._alerts[fp]
                    continue
                alert.state = INACTIVE
                alert.resolved_at = t.resolved_at if t.resolved_at is not None else t.eval_time
            elif alert is None or alert.state == INACTIVE or t.state == PENDING:
                alert = Alert(t.labels, t.annotations, t.value, active_at=t.active_at, state=t.state, fired_at=t.fired_at)
            elif t.state == FIRING:
                alert.state, alert.fired_at = FIRING, t.fired_at if t.fired_at is not None else t.eval_time
            alert.annotations, alert.value = t.annotations, t.value
            self._alerts[fp] = (alert, t.expr)

    def refresh(self, labels: Labels, annotations: Labels, value: float) -> None:
        """New words for a pending or firing alert (a resend carries the latest, as Prometheus
        re-renders annotations at every evaluation); unknown or resolved alerts are left alone."""
        known = self._alerts.get(fingerprint(labels))
        if known is not None and known[0].state != INACTIVE:
            known[0].annotations, known[0].value = annotations, value

    def notifications(self, t_ms: int, quiet: Container[int] = ()) -> list[AlertNotification]:
        """The alerts due to be (re-)sent at ``t_ms``, marked as sent; resolved ones past retention are dropped.

        ``quiet``: fingerprints of alerts whose source has gone quiet (no samples): they are
        not re-sent while firing, so Alertmanager lets them expire, as it does when
        Prometheus itself stops.
        """
        out = []
        for fp, (alert, expr) in list(self._alerts.items()):
            if alert.resolved_at is not None and t_ms - alert.resolved_at > RESOLVED_RETENTION_MS:
                del self._alerts[fp]
                continue
            if alert.state != INACTIVE and fp in quiet:
                continue
            note = alert.notify(t_ms, self.interval_ms, self.resend_delay_ms, expr)
            if note is not None:
                out.append(note)
        return out
