"""Early warnings are notified like rule alerts: at firing, every resend delay, and once resolved."""

from __future__ import annotations

import numpy as np

from detector.output.alert_book import AlertBook
from detector.output.alerts import AlertTransition
from detector.wire.batch import SampleBatch
from detector.partition import PartitionDetectors

T0_MS = 1_700_000_000_000
SCRAPE_MS = 15_000
SATURATION = (("__name__", "worker_dispatch_channel_saturation"), ("worker_id", "w1"))


def turning(k: int) -> float:
    """Flat for an hour, up for 40 minutes, then down."""
    rng = np.random.default_rng(k)
    v = 0.2 + 0.017 * min(max(k - 240, 0), 160) / 4 - 0.02 * max(k - 400, 0) / 4
    return float(np.clip(v + rng.normal(0, 0.02), 0, 1))


def run(resend_delay_ms: int = 60_000, steps: int = 640):
    detectors = PartitionDetectors([], engine_options={"resend_delay_ms": resend_delay_ms}, scores=False)
    transitions, notes = [], []
    for k in range(steps):
        t = T0_MS + k * SCRAPE_MS
        out = detectors.ingest(SampleBatch.from_series([(SATURATION, [(t, turning(k))])]))
        transitions += out.transitions
        notes += [(t, n) for n in out.notifications]
    return transitions, notes


def test_a_firing_warning_is_sent_when_it_fires_then_every_resend_delay_then_resolved():
    transitions, notes = run()
    fired = next(t for t in transitions if t.state == "firing")
    resolved = next(t for t in transitions if t.previous == "firing" and t.state == "inactive")
    assert notes, "a firing early warning must be notified"
    sent_at = [t for t, _ in notes]
    assert sent_at[0] == fired.eval_time
    firing = [(t, n) for t, n in notes if t < resolved.eval_time]
    # Prometheus's schedule: a resend once more than resend_delay has passed, on an evaluation
    assert all(60_000 < b - a <= 60_000 + SCRAPE_MS for a, b in zip(sent_at, sent_at[1:len(firing)]))
    for t, n in firing:
        assert n.starts_at == fired.fired_at and n.ends_at == t + 4 * 60_000
        assert dict(n.labels) == dict(fired.labels) and dict(n.labels)["alertname"] == "SaturationForecast"
    # the resolved one goes out at once, ends at its resolve time, then is re-sent while kept
    t, last = next((t, n) for t, n in notes if t >= resolved.eval_time)
    assert t == resolved.eval_time and last.ends_at == resolved.eval_time
    assert "no longer expected" in dict(last.annotations)["summary"]
    assert all(n.ends_at == resolved.eval_time for t, n in notes if t >= resolved.eval_time)
    assert max(t for t, _ in notes) - resolved.eval_time <= 15 * 60_000


def test_resends_carry_the_newest_estimate():
    _, notes = run()
    summaries = [dict(n.annotations)["summary"] for t, n in notes if n.ends_at > t]  # the firing ones
    assert len(summaries) >= 3 and len(set(summaries)) >= 2, summaries
    assert all("reaches 1 in about" in s or "has reached 1" in s or "about to reach" in s for s in summaries)


def test_a_longer_resend_delay_sends_fewer_and_lasts_longer():
    _, every_minute = run(60_000)
    _, every_five = run(300_000)
    firing = [n for t, n in every_five if n.ends_at > t]
    assert 0 < len(firing) < len([n for t, n in every_minute if n.ends_at > t])
    assert all(n.ends_at - t == 4 * 300_000 for t, n in every_five if n.ends_at > t)


def change(state: str, previous: str, t: int, fired: int | None = None) -> AlertTransition:
    return AlertTransition(
        rule="W", group="g", source="forecast", state=state, previous=previous, labels=(("alertname", "W"),),
        annotations=(("summary", state),), value=1.0, active_at=0, fired_at=fired,
        resolved_at=t if state == "inactive" and previous == "firing" else None, eval_time=t, expr="w",
    )


def test_a_pending_warning_that_is_dropped_is_never_sent_and_resolved_ones_are_forgotten():
    book = AlertBook(interval_ms=15_000, resend_delay_ms=60_000)
    book.apply([change("pending", "inactive", 0), change("inactive", "pending", 15_000)])
    assert book.notifications(15_000) == [] and len(book) == 0
    book.apply([change("pending", "inactive", 30_000), change("firing", "pending", 60_000, fired=60_000)])
    assert len(book.notifications(60_000)) == 1
    book.apply([change("inactive", "firing", 90_000, fired=60_000)])
    assert [n.ends_at for n in book.notifications(90_000)] == [90_000]
    assert len(book.notifications(90_000 + 15 * 60_000)) == 1  # re-sent while kept
    assert book.notifications(91_000 + 15 * 60_000) == [] and len(book) == 0


def test_a_new_warning_after_a_resolved_one_starts_afresh_and_refresh_leaves_resolved_alone():
    book = AlertBook(interval_ms=15_000, resend_delay_ms=60_000)
    book.apply([change("firing", "pending", 0, fired=0), change("inactive", "firing", 30_000, fired=0)])
    book.refresh((("alertname", "W"),), (("summary", "late words"),), 2.0)
    (resolved,) = book.notifications(30_000)
    assert dict(resolved.annotations)["summary"] == "inactive"
    book.apply([change("pending", "inactive", 45_000), change("firing", "pending", 75_000, fired=75_000)])
    book.refresh((("alertname", "W"),), (("summary", "new words"),), 2.0)
    (firing,) = book.notifications(75_000)
    assert firing.starts_at == 75_000 and firing.ends_at == 75_000 + 240_000
    assert dict(firing.annotations)["summary"] == "new words"
    book.refresh((("alertname", "unknown"),), (), 0.0)  # unknown alerts are ignored
    assert len(book) == 1


def test_a_firing_warning_whose_series_goes_silent_resolves_once_the_series_is_retired():
    other = (("__name__", "up"), ("job", "x"))
    detectors = PartitionDetectors([], scores=False)
    sent: list[tuple[int, int]] = []  # (event time, ends_at) of each notification

    def step(k: int, with_ramp: bool) -> None:
        t = T0_MS + k * SCRAPE_MS
        series = [(other, [(t, 1.0)])] + ([(SATURATION, [(t, turning(k))])] if with_ramp else [])
        sent.extend((t, n.ends_at) for n in detectors.ingest(SampleBatch.from_series(series)).notifications)

    for k in range(372):  # the ramp fires near step 369 (see above)
        step(k, True)
    assert detectors.forecaster.state(SATURATION) == "firing" and sent
    last_sample = T0_MS + 371 * SCRAPE_MS
    for k in range(372, 400):  # 7 minutes of the other series only
        step(k, False)
    after = [(t, ends) for t, ends in sent if t > last_sample]
    firing = [t for t, ends in after if ends > t]
    resolved = [(t, ends) for t, ends in after if ends <= t]
    # re-sent firing only while the series is within the lookback, then retired (the sweep runs
    # once a minute of event time) and sent resolved, ending when it was retired
    assert firing and max(firing) - last_sample <= 5 * 60_000
    assert resolved and all(5 * 60_000 < ends - last_sample <= 6 * 60_000 for _, ends in resolved)
    assert min(t for t, _ in resolved) > max(firing)
    assert detectors.forecaster.state(SATURATION) == "inactive"
