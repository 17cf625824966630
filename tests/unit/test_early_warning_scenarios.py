"""Early-warning scenarios end to end, short: `headroom record` + `headroom replay` with the runbook's packs.

The same code as ``python -m bench.early_warning`` (which runs every speed, several
seeds and whole benign days), on one 30-minute ramp and the first hours of a
benign day.
"""

from __future__ import annotations

import pytest

from bench.early_warning import SPLITS, alert_events, measure_ramp, record_and_replay
from detector.forecast import ALERT_NAME
from simulator.runbook import _BURST_PEAKS, HELDOUT_DAYS, RAMP_START_S, SCENARIOS


def test_the_scenarios_are_registered():
    for kind in ("queue", "channel", "permits"):
        for minutes in (5, 15, 30, 60):
            (incident,) = SCENARIOS[f"ramp-{kind}-{minutes}m"]
            assert incident.start_s == RAMP_START_S and incident.ramp_s == 60 * minutes and incident.peak == 1.0
    day = SCENARIOS["benign-day"]
    assert sum(1 for incident in day if incident.kind == "load") == 1
    assert len(day) > 20 and max(incident.start_s for incident in day) < 86_400


@pytest.mark.parametrize("kind", ["channel"])
def test_a_30_minute_ramp_is_warned_at_least_5_minutes_before_the_critical_rule(kind, tmp_path):
    # recorded up to 2 minutes after the ramp reaches 1 (the critical rule fires about 26 minutes in)
    minutes = RAMP_START_S / 60 + 32
    result = measure_ramp(f"ramp-{kind}-30m", kind, 30, seed=1, workdir=tmp_path, partitions=1, record_minutes=minutes)
    (detail,) = result.detail
    assert detail["critical_min"] is not None  # TaskerCommandChannelSaturationCritical fired
    assert result.leads_min[0] >= 5.0, detail
    assert result.early == 0
    assert "reaches 1 in about" in detail["text"]


def test_hours_of_a_benign_day_raise_no_early_warning(tmp_path):
    # 0-3 h: bursts on the orders and payments queues and on the handler pools (to 54-64% full/busy)
    assert sum(1 for incident in SCENARIOS["benign-day"] if incident.start_s < 3 * 3600 and incident.kind != "load") >= 4
    recording, out = record_and_replay("benign-day", seed=1, minutes=3 * 60, workdir=tmp_path, partitions=1)
    events = alert_events(out)
    assert [e for e in events if e["rule"] == ALERT_NAME and e["state"] == "firing"] == []
    assert [e for e in events if e["state"] == "firing"] == []  # no runbook rule either: no incident


def test_held_out_days_share_nothing_with_the_development_split():
    (dev_days, dev_seed), (held_days, held_seed) = SPLITS["dev"], SPLITS["heldout"]
    assert set(dev_days).isdisjoint(held_days) and set(held_days) == set(HELDOUT_DAYS)
    assert held_seed - dev_seed >= 100  # simulator seeds 101.. never meet the development seeds 1..3
    # other burst patterns: two load incidents on the "two-peak" day, many more bursts on the "sharp" one
    assert sum(1 for i in SCENARIOS["benign-heldout-103"] if i.kind == "load") == 2
    assert len(SCENARIOS["benign-heldout-102"]) > max(len(SCENARIOS[day]) for day in dev_days)
    for day in held_days:  # still benign: every burst stays under its kind's alert threshold
        for incident in SCENARIOS[day]:
            if incident.kind != "load":
                assert incident.peak <= _BURST_PEAKS[incident.kind][1]
