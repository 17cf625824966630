"""Stale series are retired: their model, forecast and store state freed, their rows reused."""

from __future__ import annotations

import numpy as np

from detector.wire.batch import SampleBatch
from detector.labels import canonical_bytes
from detector.partition import PartitionDetectors
from detector.promql import EvalContext, compile_expr
from detector.rules import load_rule_files
from detector.store import STALE_NAN_BITS, SeriesStore

STALE = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])
T0 = 1_700_000_000_000 // 60_000 * 60_000
STEP = 15_000
LOOKBACK = 300_000


def series(name: str, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"__name__": name, **labels}.items()))


def scrape(detectors: PartitionDetectors, t_ms: int, samples: dict) -> object:
    return detectors.ingest(SampleBatch.from_series([(s, [(t_ms, v)]) for s, v in samples.items()]))


def clock(detectors: PartitionDetectors, t_ms: int) -> object:
    """A sample of a series that stays alive, to move the watermark to ``t_ms``."""
    return scrape(detectors, t_ms, {series("heartbeat"): 1.0})


A = series("queue_depth", queue="a")
B = series("queue_depth", queue="b")


def test_a_series_ended_by_a_staleness_marker_is_retired_and_its_rows_reused():
    det = PartitionDetectors([], retire_every_ms=STEP)
    for i in range(10):
        scrape(det, T0 + i * STEP, {A: float(i), series("heartbeat"): 1.0})
    a_score_row = det.scorer.scorers["default"].rows[canonical_bytes(A)]
    a_store_row = det.store._ids[canonical_bytes(A)]
    out = scrape(det, T0 + 10 * STEP, {A: STALE})
    assert canonical_bytes(A) not in det.scorer.scorers["default"].rows  # at the marker, not a lookback later
    assert out.retired == 1 and det.retired_series == 1
    # Its samples stay readable until no rule can reach them; then its store row is freed.
    assert canonical_bytes(A) in det.store._ids
    freed = sum(clock(det, T0 + (11 + i) * STEP).freed for i in range(30))
    assert freed >= 1 and canonical_bytes(A) not in det.store._ids
    scrape(det, T0 + 41 * STEP, {B: 1.0})
    assert det.scorer.scorers["default"].rows[canonical_bytes(B)] == a_score_row
    assert det.store._ids[canonical_bytes(B)] == a_store_row


def test_a_series_silent_past_the_lookback_is_retired():
    det = PartitionDetectors([], retire_every_ms=STEP)
    scrape(det, T0, {A: 1.0, series("heartbeat"): 1.0})
    retired_at = None
    for i in range(1, 40):
        if clock(det, T0 + i * STEP).retired:
            retired_at = i * STEP
            break
    assert retired_at is not None and LOOKBACK < retired_at <= LOOKBACK + 2 * STEP
    assert canonical_bytes(A) not in det.scorer.scorers["default"].rows and not det.forecaster.knows(canonical_bytes(A))


def test_a_series_that_comes_back_starts_fresh_and_is_not_read_as_its_rows_new_owner():
    rules = load_rule_files(["anomaly"])
    det = PartitionDetectors(rules, retire_every_ms=STEP)
    for i in range(400):  # warmed up: a steady series scores something nonzero on a jump
        scrape(det, T0 + i * STEP, {A: 10.0 + i % 3})
    t = T0 + 400 * STEP
    scrape(det, t, {A: STALE})
    for i in range(1, 40):
        clock(det, t + i * STEP)
    assert canonical_bytes(A) not in det.store._ids
    t += 40 * STEP
    scrape(det, t, {B: 500.0})  # B takes A's rows
    out = scrape(det, t + STEP, {A: 1000.0, B: 500.0})
    # A is new again: warming up, scored 0.0 whatever its value.
    assert det.scorer.scorers["default"].rows[canonical_bytes(A)] != det.scorer.scorers["default"].rows[canonical_bytes(B)]
    scores = det.scorer.scorers["default"].score_batch(SampleBatch.from_series([(A, [(t + 2 * STEP, 5000.0)])]))
    assert scores.tolist() == [0.0]
    # Rules see each series with its own samples, never A's through B's old row or the reverse.
    ctx = EvalContext(det.store, t + STEP)
    got = dict(compile_expr("queue_depth").evaluate(ctx).samples())
    assert got == {A: 1000.0, B: 500.0}
    got = dict(compile_expr("max_over_time(queue_depth[1h])").evaluate(ctx).samples())
    assert got == {A[1:]: 1000.0, B[1:]: 500.0}
    assert out.transitions == []


def test_a_selector_never_reads_a_reused_row_as_its_old_series():
    store = SeriesStore(retention_ms=LOOKBACK)
    select = compile_expr('queue_depth{queue="a"}')
    ranged = compile_expr("count_over_time(queue_depth[5m])")
    store.append(SampleBatch.from_series([(A, [(0, 1.0)])]))
    assert len(select.evaluate(EvalContext(store, 0))) == 1
    assert list(ranged.evaluate(EvalContext(store, 0)).samples()) == [((("queue", "a"),), 1.0)]
    store.retire(np.array([store._ids[canonical_bytes(A)]]))
    store.append(SampleBatch.from_series([(B, [(1000, 2.0)])]))  # the same row, now B
    assert len(select.evaluate(EvalContext(store, 1000))) == 0
    assert list(ranged.evaluate(EvalContext(store, 1000)).samples()) == [((("queue", "b"),), 1.0)]
    store.append(SampleBatch.from_series([(A, [(2000, 3.0)])]))  # A again, in a new row
    assert list(select.evaluate(EvalContext(store, 2000)).samples()) == [(A, 3.0)]
    assert sorted(ranged.evaluate(EvalContext(store, 2000)).samples()) == [
        ((("queue", "a"),), 1.0), ((("queue", "b"),), 1.0)]


def test_a_firing_early_warning_resolves_when_its_series_goes_stale():
    det = PartitionDetectors([], retire_every_ms=STEP)
    sat = series("pool_saturation", pool="p")
    states = []
    for i in range(60):
        states += [(t.previous, t.state) for t in scrape(det, T0 + i * STEP, {sat: 0.5 + 0.01 * i}).transitions]
    assert states[-1] == ("pending", "firing")
    out = scrape(det, T0 + 60 * STEP, {sat: STALE})
    [end] = out.transitions
    assert (end.previous, end.state, end.resolved_at) == ("firing", "inactive", T0 + 60 * STEP)
    assert dict(end.labels)["alertname"] == "SaturationForecast"
    assert len(det.forecaster) == 0
    # Alertmanager hears the resolution too: ends_at is the retirement time
    [sent] = [n for n in out.notifications if dict(n.labels)["alertname"] == "SaturationForecast"]
    assert sent.ends_at == T0 + 60 * STEP


def test_state_stays_bounded_while_series_are_replaced():
    det = PartitionDetectors(load_rule_files(["anomaly"]), retire_every_ms=STEP)
    n, sizes = 10_000, []
    t = T0
    for generation in range(4):
        keys = [series("queue_depth", queue=f"g{generation}-{i}") for i in range(n)]
        for _ in range(3):
            det.ingest(SampleBatch.from_series([(k, [(t, float(i % 7))]) for i, k in enumerate(keys)]))
            t += STEP
        for _ in range(LOOKBACK // STEP + 3):  # the generation goes silent; the lookback passes
            clock(det, t)
            t += STEP
        fc = det.forecaster
        sizes.append((det.store.rows_in_use, det.scorer.scorers["default"].capacity, len(fc.trend),  # rows allocated
                      len(det.store), len(det.scorer), len(det._scored), len(fc), len(fc._keys), len(fc._bound_keys)))
    assert det.retired_series >= 3 * n and det.freed_series >= 3 * n
    assert sizes[-1] == sizes[1]  # no growth after the first replacement
    store_rows, score_rows, forecast_rows, *live = sizes[-1]
    assert store_rows <= 2 * n + 10 and score_rows <= 2 * n + 64 and forecast_rows <= n
    assert max(live) < 10  # only the heartbeat is left


RULES = """
groups:
  - name: windows
    interval: 15s
    rules:
      - record: depth:max30m
        expr: max_over_time(queue_depth[30m])
      - alert: DeepFor30m
        expr: depth:max30m > 8
      - alert: Rising
        expr: rate(jobs_total[1h]) > 0.05
      - alert: WasHere
        expr: count_over_time(queue_depth[20m] offset 10m) > 3
      - alert: Gone
        expr: absent_over_time(queue_depth{queue="q0"}[15m])
      - alert: Now
        expr: queue_depth > 9
"""


def churning_stream() -> list[SampleBatch]:
    """Series that come and go (staleness markers, silences), each living a few minutes to an hour."""
    rng = np.random.default_rng(7)
    batches = []
    alive: dict[int, list[int]] = {}  # queue -> [its life (a label: each life is a new series), steps left]
    for step in range(600):
        t = T0 + step * STEP
        rows = []
        if step % 10 == 0:
            for q in rng.choice(40, size=6, replace=False).tolist():
                alive.setdefault(q, [step, int(rng.integers(10, 240))])
        for q, (life, left) in list(alive.items()):
            depth, jobs = (series(name, queue=f"q{q}", life=str(life)) for name in ("queue_depth", "jobs_total"))
            if left == 0:
                del alive[q]
                if q % 2:  # half end with a staleness marker, half just stop
                    rows += [(depth, [(t, STALE)]), (jobs, [(t, STALE)])]
                continue
            alive[q][1] = left - 1
            rows.append((depth, [(t, float(rng.integers(0, 11)))]))
            rows.append((jobs, [(t, float(step * (q % 5)))]))
        rows.append((series("heartbeat"), [(t, 1.0)]))
        batches.append(SampleBatch.from_series(rows))
    return batches


def run(rules, retire_every_ms: int | None) -> tuple[list, PartitionDetectors]:
    det = PartitionDetectors(rules, scores=False, forecasts=False, retire_every_ms=retire_every_ms)
    events = []
    for batch in churning_stream():
        out = det.ingest(batch)
        events += [(t.eval_time, t.rule, t.labels, t.previous, t.state, t.value) for t in out.transitions]
    return sorted(events), det


def test_rules_over_range_windows_give_the_same_alerts_with_and_without_retirement(tmp_path):
    path = tmp_path / "windows.yml"
    path.write_text(RULES)
    rules = load_rule_files([str(path)])
    kept, without = run(rules, None)
    swept, det = run(rules, STEP)
    assert swept == kept
    assert {e[1] for e in kept} == {"DeepFor30m", "Rising", "WasHere", "Gone", "Now"}
    assert det.freed_series > 40 and det.store.rows_in_use < without.store.rows_in_use


def test_score_series_are_stored_only_when_a_rule_can_read_them():
    from detector.partition import SCORE_METRIC

    samples = {A: 3.0, B: 4.0}
    score_key = canonical_bytes(series(SCORE_METRIC, metric="queue_depth", queue="a"))
    read = PartitionDetectors(load_rule_files(["anomaly"]))
    unread = PartitionDetectors(load_rule_files(["backpressure"]))
    outs = [scrape(det, T0, samples) for det in (read, unread)]
    assert score_key in read.store._ids and len(read.store) == 4
    assert score_key not in unread.store._ids and len(unread.store) == 2
    # The scores themselves (gauges, the scores topic) do not depend on it.
    assert outs[0].latest_scores == outs[1].latest_scores and set(outs[1].latest_scores) == {canonical_bytes(A), canonical_bytes(B)}
    assert unread._scored[canonical_bytes(A)] == b""  # scored, and no score series key kept for it
