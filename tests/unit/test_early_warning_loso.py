"""Leave-one-seed-out early-warning bench: its benign patterns, its choice of knobs, and its own
forecast run agreeing with ``headroom replay``."""

from __future__ import annotations

import math

import pytest

from bench.early_warning_loso import (DEFAULTS, GRIDS, Score, changed, choose, grid_settings, leads, ramp_job,
                                      RampRun)
from simulator.runbook import (_BURST_PEAKS, DAY_S, LOSO_DEV_PATTERNS, LOSO_DEV_SEEDS, LOSO_FINAL_PATTERNS,
                               LOSO_FINAL_SEEDS, MAX_EXTRA_LOAD, SCENARIOS, RunbookSimulator, _benign_day, _Script,
                               loso_day)
from detector.labels import labels_from_dict


def test_final_seeds_and_patterns_are_not_development_ones():
    assert set(LOSO_DEV_SEEDS).isdisjoint(LOSO_FINAL_SEEDS)
    assert set(LOSO_FINAL_PATTERNS) - {"everyday"} and set(LOSO_FINAL_PATTERNS).isdisjoint(set(LOSO_DEV_PATTERNS) - {"everyday"})
    for seeds, patterns in ((LOSO_DEV_SEEDS, LOSO_DEV_PATTERNS), (LOSO_FINAL_SEEDS, LOSO_FINAL_PATTERNS)):
        for seed in seeds:
            for pattern in patterns:
                assert loso_day(pattern, seed) in SCENARIOS


def test_unknown_pattern_is_refused():
    with pytest.raises(ValueError, match="unknown benign pattern"):
        _benign_day(1, pattern="nope")


def test_load_bursts_are_the_everyday_day_plus_clusters_of_handler_pool_bursts_that_stay_benign():
    everyday, bursty = _benign_day(7), _benign_day(7, pattern="load-bursts")
    added = [i for i in bursty if i not in set(everyday)]
    assert set(everyday) < set(bursty) and len(added) >= 8  # at least 4 clusters of 2
    low, high = _BURST_PEAKS["worker_capacity"]
    for incident in added:
        assert incident.kind == "worker_capacity" and 0.6 <= incident.peak <= high
        assert incident.start_s < DAY_S


def test_a_deploy_restart_frees_every_permit_then_drains_them_again():
    day = SCENARIOS[loso_day("deploy-restarts", 201)]
    restart = next(i for i in day if i.kind == "worker_capacity" and i.peak == 0.0)
    catch_up = next(i for i in day if i.kind == "worker_capacity" and i.start_s > restart.start_s and i.peak > 0.5)
    sim = RunbookSimulator(loso_day("deploy-restarts", 201), seed=201)
    permits = labels_from_dict({"__name__": "worker_handler_semaphore_permits_available", "job": "tasker-worker",
                                "instance": "worker-0:9100", "worker_id": "worker-0"})
    during = restart.start_s + restart.ramp_s + restart.hold_s / 2
    full = catch_up.start_s + catch_up.ramp_s + 1
    seen = {}
    for t_s in range(0, int(full) + 15, 15):
        samples = dict(sim.sample(t_s * 1000))
        seen[t_s] = samples[permits]
    assert seen[int(during // 15 * 15)] == 10.0  # every permit free while the pool restarts
    assert min(v for t, v in seen.items() if t >= catch_up.start_s + catch_up.ramp_s) <= 10 * (1 - 0.5)


def test_traffic_spikes_add_to_the_daily_cycle_and_stay_under_the_bound():
    day = SCENARIOS[loso_day("traffic-spikes", 202)]
    loads = [i for i in day if i.kind == "load"]
    assert len(loads) >= 7  # the daily cycle and 6-12 spikes
    script = _Script(day)
    daily = loads[0] if loads[0].ramp_s > 3600 else max(loads, key=lambda i: i.ramp_s)
    for spike in loads:
        if spike is daily:
            continue
        t = spike.start_s + spike.ramp_s + 1
        assert script.load(t) == pytest.approx(sum(i.level(t) * i.peak for i in loads))
        assert script.load(t) >= spike.peak - 1e-9  # it adds, not the strongest alone
        assert script.load(t) <= MAX_EXTRA_LOAD + 1e-9


def test_old_days_keep_their_load():
    # one daily cycle or two that do not overlap: the sum is what the strongest one gave
    for name in ("benign-day", "benign-heldout-103"):
        script = _Script(SCENARIOS[name])
        loads = [i for i in SCENARIOS[name] if i.kind == "load"]
        for t in range(0, int(DAY_S), 600):
            assert script.load(t) == pytest.approx(max(i.level(t) * i.peak for i in loads))


def test_grid_starts_with_the_defaults_and_is_ordered_by_knobs_changed():
    settings = grid_settings(GRIDS["small"])
    assert changed(settings[0]) == 0 and settings[0]["dip_margin"] == DEFAULTS.dip_margin
    assert [changed(s) for s in settings] == sorted(changed(s) for s in settings)
    for name, size in (("small", 9), ("edge", 8)):  # the defaults are added when the grid lacks them
        grid = GRIDS[name]
        has_defaults = all(getattr(DEFAULTS, knob) in values for knob, values in grid.items())
        found = grid_settings(grid)
        assert len(found) == len({tuple(sorted(s.items())) for s in found}) == size + (not has_defaults)


def s(warned, lead, false, days=4):
    return Score(warned, 10, lead, false, days, 0)


def test_choose_warned_first_then_lead_under_the_false_bound():
    assert choose([s(9, 9.0, 0), s(10, 5.0, 2), s(10, 6.0, 2), s(10, 7.0, 3)]) == 2
    assert choose([s(10, 6.0, 2), s(10, 6.0, 1)]) == 0  # a tie goes to the one closer to the defaults


def test_choose_fewest_false_when_none_meets_the_bound():
    assert choose([s(10, 6.0, 8), s(10, 6.0, 3), s(7, 6.0, 3)]) == 1


def test_leads_count_a_late_or_missing_warning_as_zero():
    run = RampRun("ramp-permits-15m", "permits", 15, 1, deadline_min={"a": 14.0, "b": 14.0, "c": None},
                  warned_min=[{"a": 10.0, "b": 15.0, "c": 3.0}], early=[0])
    assert leads([run], 0) == [4.0, 0.0, 0.0]
    fast = RampRun("ramp-permits-5m", "permits", 5, 1, deadline_min={"a": 5.0}, warned_min=[{"a": 1.0}], early=[0])
    assert leads([fast], 0) == [] and leads([fast], 0, slow_only=False) == [4.0]


def test_the_benchs_own_forecast_run_warns_when_headroom_replay_does(tmp_path):
    settings = grid_settings(GRIDS["tiny"])
    run = ramp_job("ramp-channel-15m", "channel", 15, 3, settings, tmp_path)
    assert run.mismatches == 0
    (deadline,) = run.deadline_min.values()
    assert deadline is not None and not math.isnan(deadline)
    assert len(run.warned_min) == len(settings) and all(w["orch-0:9100"] is not None for w in run.warned_min)


def test_doctests():
    import doctest

    import bench.early_warning_loso
    import simulator.runbook

    for module in (bench.early_warning_loso, simulator.runbook):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_plan_counts_ramps_after_bursts_among_the_incidents_of_every_seed():
    from bench.early_warning_loso import by_kind, plan
    from simulator.runbook import AFTER_BURSTS_MINUTES, ramp_after_bursts

    for seeds in (LOSO_DEV_SEEDS, LOSO_FINAL_SEEDS):
        specs = plan(seeds, (), [DEFAULTS], "/tmp", None)
        after = [args for kind, args, *_ in specs if kind == "ramp" and args[0].startswith("ramp-after-bursts-")]
        assert len(after) == len(seeds) * 3 * len(AFTER_BURSTS_MINUTES)
        assert {args[0] for args in after} == {ramp_after_bursts(k, m, s) for s in seeds for k in ("queue", "channel", "permits")
                                               for m in AFTER_BURSTS_MINUTES}
    calm = RampRun("ramp-queue-30m", "queue", 30, 1, deadline_min={"q": 20.0}, warned_min=[{"q": 10.0}], early=[0])
    burst = RampRun("ramp-after-bursts-queue-30m-s1", "queue", 30, 1, True, deadline_min={"q": 20.0},
                    warned_min=[{"q": None}], early=[1])
    lines = by_kind([calm, burst], [], lambda seed: 0)
    assert "ramp-queue-30m: median lead 10.00 min, warned 1/1" in lines
    assert "ramp-after-bursts-queue-30m: median lead 0.00 min, warned 0/1" in lines
