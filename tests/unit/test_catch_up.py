"""Issue 9, item 1 (engine half): one timestamp must not freeze a worker.

A sample stamped a year ahead, or at 0 (what proto3 encoders send for a
timestamp left out), used to make the engine evaluate every 15 s step between
the oldest and newest sample in one call: millions of group evaluations in one
event loop. Now one call runs at most ``max_evaluations_per_step`` group
evaluations (the caller runs the rest in further steps), and ticks more than
``max_catch_up_ms`` behind the watermark are skipped and counted.
"""

from __future__ import annotations

from detector.partition import PartitionDetectors
from detector.promql import compile_expr
from detector.replay import Replay, read_openmetrics
from detector.rules import AlertingRule, RuleGroup
from detector.rules.engine import RuleEngine
from detector.rules.recording import RecordingRule
from detector.wire.batch import SampleBatch

T0 = 1_700_000_000_000 // 15_000 * 15_000
YEAR = 365 * 24 * 3_600_000
HOUR = 3_600_000
STEP = 32
A = (("__name__", "up"), ("instance", "a"))
B = (("__name__", "up"), ("instance", "b"))


def groups() -> list[RuleGroup]:
    down = AlertingRule("Down", compile_expr("up == 0"), "up == 0", for_ms=60_000)
    count = RecordingRule("up:count", compile_expr("count(up)"), "count(up)")
    return [RuleGroup("g", "inline", 15_000, (down, count))]


def limited_engine() -> RuleEngine:
    return RuleEngine(groups(), max_evaluations_per_step=STEP, max_catch_up_ms=HOUR)


def scrape(t: int, *series: tuple) -> SampleBatch:
    return SampleBatch.from_series([(labels, [(t, value)]) for labels, value in series])


def group_evaluations(out) -> int:  # noqa: ANN001 - EngineOutput
    return out.evaluations // 2  # two rules per group evaluation


def drain(engine: RuleEngine) -> list:
    """Run the steps a worker would run between yields; every step within the bound."""
    steps = []
    while engine.pending:
        out = engine.advance_to(engine.watermark)
        assert 0 < group_evaluations(out) <= STEP
        steps.append(out)
    return steps


def test_a_sample_a_year_ahead_costs_at_most_the_catch_up_bound_in_bounded_steps():
    engine = limited_engine()
    for k in range(21):  # five minutes of normal scrapes
        assert group_evaluations(engine.ingest(scrape(T0 + k * 15_000, (A, 1.0)))) == 1
    ahead = T0 + YEAR
    out = engine.ingest(scrape(ahead, (B, 1.0)))
    assert group_evaluations(out) == STEP and out.pending
    resume = -(-(ahead - HOUR) // 15_000) * 15_000
    assert out.skipped == (resume - (T0 + 21 * 15_000)) // 15_000 > 2_000_000
    assert out.skipped_span == (T0 + 21 * 15_000, resume)
    assert engine.stats.skipped_evaluations == out.skipped
    steps = drain(engine)
    evaluated = group_evaluations(out) + sum(group_evaluations(s) for s in steps)
    assert evaluated == (ahead - resume) // 15_000 + 1  # the last hour, every tick once
    assert len(steps) == -(-evaluated // STEP) - 1


def test_the_engine_evaluates_correctly_after_the_jump():
    engine = limited_engine()
    engine.ingest(scrape(T0, (A, 1.0)))
    ahead = T0 + YEAR
    engine.ingest(scrape(ahead, (B, 1.0)))
    drain(engine)
    # After the jump, instance b goes down: pending at the first tick, firing one minute later.
    events = []
    for k in range(1, 8):
        out = engine.ingest(scrape(ahead + k * 15_000, (B, 0.0)))
        assert group_evaluations(out) == 1 and not out.pending and out.skipped == 0
        events += [(t.eval_time - ahead, t.state) for t in out.transitions]
    assert events == [(15_000, "pending"), (75_000, "firing")]


def test_a_first_sample_at_zero_does_not_set_the_first_evaluation():
    engine = limited_engine()
    out = engine.ingest(SampleBatch.from_series([(B, [(0, 1.0)]), (A, [(T0, 0.0)])]))
    assert group_evaluations(out) <= STEP
    resume = -(-(T0 - HOUR) // 15_000) * 15_000
    assert out.skipped == resume // 15_000 and out.skipped_span == (0, resume)
    drain(engine)
    # Then it goes on at one evaluation per scrape, and the alert keeps its for-clock.
    events = []
    for k in range(1, 6):
        out = engine.ingest(scrape(T0 + k * 15_000, (A, 0.0)))
        assert group_evaluations(out) == 1
        events += [(t.eval_time - T0, t.state) for t in out.transitions]
    assert events == [(60_000, "firing")]  # pending since T0, as without the bogus sample


def test_without_limits_the_engine_evaluates_every_tick_as_before():
    engine = RuleEngine(groups())
    engine.ingest(scrape(T0, (A, 1.0)))
    out = engine.ingest(scrape(T0 + 2 * HOUR, (A, 1.0)))
    assert group_evaluations(out) == 2 * HOUR // 15_000 and not out.pending and out.skipped == 0


def test_a_snapshot_taken_between_steps_resumes_the_remaining_steps():
    live = PartitionDetectors(groups(), engine_options={"max_evaluations_per_step": STEP, "max_catch_up_ms": HOUR},
                              scores=False, forecasts=False)
    live.ingest(scrape(T0, (A, 0.0)))
    first = live.ingest(scrape(T0 + 2 * HOUR, (A, 0.0)))
    assert first.engine.pending and first.engine.skipped == HOUR // 15_000 - 1
    back = PartitionDetectors.restore(live.snapshot(), groups(),
                                      engine_options={"max_evaluations_per_step": STEP, "max_catch_up_ms": HOUR},
                                      scores=False, forecasts=False)
    assert back.pending
    rest = {"live": [], "back": []}
    for name, det in (("live", live), ("back", back)):
        while det.pending:
            out = det.catch_up()
            rest[name] += [(t.eval_time, t.state) for t in out.transitions]
        rest[name].append(det.rules.stats.evaluations)
    assert rest["live"] == rest["back"]


def test_replay_runs_all_steps_and_skips_what_a_bogus_sample_would_cost():
    rule = AlertingRule("Down", compile_expr("up == 0"), "up == 0", for_ms=30_000)
    real = "".join(f'up{{job="api",instance="a"}} {0 if k >= 4 else 1} {(T0 + k * 15_000) / 1000:.3f}\n' for k in range(12))
    bogus = 'up{job="api",instance="a"} 1 0\n'
    options = {"max_evaluations_per_step": STEP, "max_catch_up_ms": HOUR}
    runs = {}
    for name, text in (("clean", real), ("bogus", bogus + real)):
        replay = Replay([RuleGroup("g", "inline", 15_000, (rule,))], partitions=1, engine_options=options,
                        scores=False, forecasts=False)
        runs[name] = ([(e["eval_time"], e["state"]) for e in replay.run(read_openmetrics(text + "# EOF\n"))],
                      replay.limits.skipped_evaluations)
    assert runs["bogus"][0] == runs["clean"][0] == [(T0 + 60_000, "pending"), (T0 + 90_000, "firing")]
    # The bogus sample, alone in the first slice, was evaluated at 0; then every tick up to an hour before T0 skipped.
    assert runs["clean"][1] == 0 and runs["bogus"][1] == (T0 - HOUR) // 15_000 - 1
