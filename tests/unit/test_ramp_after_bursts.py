"""Ramps after bursts: benign bursts of a bounded series that recover, then a real ramp of the same
series to its bound (the scenarios the leave-one-seed-out bench uses to see what the dip gate costs)."""

from __future__ import annotations

import pytest

from bench.early_warning import START_S, TARGETS, alert_events, record_and_replay, series_samples
from simulator.runbook import (_AFTER_BURSTS_PEAKS, AFTER_BURSTS_MINUTES, AFTER_BURSTS_RAMP_START_S, LOSO_DEV_SEEDS,
                               LOSO_FINAL_SEEDS, RAMP_KINDS, SCENARIOS, ramp_after_bursts, ramp_start_s)

RULES_BELOW = 0.8  # the runbook's warning level on the channel, the queue fill and handler utilisation


def scripts(seeds, kind: str, minutes: int) -> list[tuple]:
    return [SCENARIOS[ramp_after_bursts(kind, minutes, seed)] for seed in seeds]


@pytest.mark.parametrize("kind", list(RAMP_KINDS))
def test_every_seed_has_bursts_under_the_warning_levels_drained_before_its_ramp(kind):
    for seed in (*LOSO_DEV_SEEDS, *LOSO_FINAL_SEEDS):
        for minutes in AFTER_BURSTS_MINUTES:
            name = ramp_after_bursts(kind, minutes, seed)
            *bursts, ramp = SCENARIOS[name]
            assert ramp.peak == 1.0 and ramp.ramp_s == 60 * minutes and ramp_start_s(name) == AFTER_BURSTS_RAMP_START_S
            assert 1 <= len(bursts) <= 3
            for burst in bursts:
                assert burst.kind == ramp.kind == RAMP_KINDS[kind] and burst.target == ramp.target
                assert 0.6 <= burst.peak <= _AFTER_BURSTS_PEAKS[burst.kind][1] < RULES_BELOW
                assert burst.start_s >= 900 and burst.start_s + burst.ramp_s + burst.hold_s + burst.recover_s <= (
                    AFTER_BURSTS_RAMP_START_S - 600)
    # the final seeds' bursts are other draws than the development seeds'
    for minutes in AFTER_BURSTS_MINUTES:
        dev = {b for script in scripts(LOSO_DEV_SEEDS, kind, minutes) for b in script[:-1]}
        final = {b for script in scripts(LOSO_FINAL_SEEDS, kind, minutes) for b in script[:-1]}
        assert dev.isdisjoint(final)


def used_share(kind: str, value: float, bound: float) -> float:
    return 1.0 - value / 10.0 if kind == "permits" else value / bound


@pytest.mark.parametrize("kind", list(RAMP_KINDS))
def test_the_deepest_bursts_recover_fire_no_rule_and_the_ramp_then_reaches_the_bound(kind, tmp_path):
    # of every seed's 15-minute scenario, the one whose burst goes deepest: the hardest for "fires no rule"
    seed = max((*LOSO_DEV_SEEDS, *LOSO_FINAL_SEEDS),
               key=lambda s: max(b.peak for b in SCENARIOS[ramp_after_bursts(kind, 15, s)][:-1]))
    name = ramp_after_bursts(kind, 15, seed)
    *bursts, _ = SCENARIOS[name]
    recording, out = record_and_replay(name, seed, AFTER_BURSTS_RAMP_START_S / 60 + 15 + 5, tmp_path, 1)
    target = TARGETS[kind]
    ramp_ms = (START_S + AFTER_BURSTS_RAMP_START_S) * 1000
    events = alert_events(out)
    fired_before = [e for e in events if e["state"] == "firing" and e["eval_time"] < ramp_ms
                    and e["rule"] != "SaturationForecast"]
    assert fired_before == []  # the bursts are benign: no runbook rule
    samples = {labels: points for labels, points in series_samples(recording, target.metric).items()
               if all(dict(labels).get(k) == v for k, v in target.match.items())}
    bound = 1.0
    if kind == "queue":
        (bound,) = {points[0][1] for labels, points in series_samples(recording, "pgmq_queue_max_depth").items()
                    if dict(labels)["queue_name"] == "orders"}
    for labels, points in samples.items():
        at = lambda t_s: [used_share(kind, v, bound) for t, v in points if abs(t / 1000 - START_S - t_s) < 60]
        for burst in bursts:
            top = burst.start_s + burst.ramp_s + burst.hold_s / 2
            drained = burst.start_s + burst.ramp_s + burst.hold_s + burst.recover_s + 120
            assert max(at(top)) >= burst.peak - 0.12, labels  # it did go deep ...
            assert max(at(drained)) <= burst.peak - 0.2, labels  # ... and came back (by the gate's dip_recovery)
        after = [used_share(kind, v, bound) for t, v in points if t >= ramp_ms]
        assert max(after) >= 1.0, labels  # the ramp reaches the bound
    if target.critical:
        assert any(e["state"] == "firing" and e["rule"] == target.critical and e["eval_time"] >= ramp_ms for e in events)
