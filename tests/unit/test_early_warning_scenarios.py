"""Early-warning scenarios end to end, short: `headroom record` + `headroom replay` with the runbook's packs.

The same code as ``python -m bench.early_warning`` (which runs every speed, several
seeds and whole benign days), on one 30-minute ramp and the first hours of a
benign day.
"""

from __future__ import annotations

import pytest

from bench.early_warning import alert_events, measure_ramp, record_and_replay
from detector.forecast import ALERT_NAME
from simulator.runbook import RAMP_START_S, SCENARIOS


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
