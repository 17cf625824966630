"""The worker's per-partition engines: quiet partitions evaluate on wall-clock time."""

from __future__ import annotations

from detector.wire.batch import SampleBatch
from detector.rules import AlertingRule, RuleGroup
from detector.promql import compile_expr
from pipelines.engines import PartitionEngines
from pipelines.settings import Settings

UP = (("__name__", "up"), ("instance", "a:1"), ("job", "api"))
T0 = 1_700_000_000_000 // 15_000 * 15_000


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def engines_with_down_rule(clock: FakeClock) -> PartitionEngines:
    rule = AlertingRule("Down", compile_expr("up == 0"), "up == 0")
    return PartitionEngines([RuleGroup("g", "inline", 15_000, (rule,))], Settings(idle_advance="30s", start_wait="0s"),
                            clock=clock)


def test_a_quiet_live_partition_resolves_its_alert_once_the_lookback_passes():
    clock = FakeClock(T0)
    engines = engines_with_down_rule(clock)
    fired = engines.ingest(0, SampleBatch.from_series([(UP, [(T0, 0.0)])]))
    assert [t.state for t in fired.transitions] == ["firing"]
    clock.ms = T0 + 20_000  # quiet, but not for 30 s yet
    assert engines.advance_idle() == {}
    clock.ms = T0 + 5 * 60_000 + 30_000 + 15_000  # the sample is now out of the 5m lookback
    (out,) = engines.advance_idle().values()
    assert [(t.previous, t.state) for t in out.transitions] == [("firing", "inactive")]
    assert out.transitions[0].eval_time == T0 + 5 * 60_000 + 15_000


def test_a_replay_of_old_data_stays_on_event_time():
    clock = FakeClock(T0 + 24 * 3_600_000)  # a day after the samples
    engines = engines_with_down_rule(clock)
    engines.ingest(0, SampleBatch.from_series([(UP, [(T0, 0.0)])]))
    clock.ms += 10 * 60_000
    assert engines.advance_idle() == {}
