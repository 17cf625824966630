"""After a catch-up through unsynchronised remote-write shards, Headroom's alerts are promtool's.

The completeness bench's sender (bench/completeness.py) plays two runbook
deployments through 5 shards, with the receiver refusing everything from
minute 5 to minute 15, into one rule engine per partition with the worker's
default watermark. ``promtool test rules`` (Prometheus 2.42, Debian's) then
replays the same samples and must agree, at every 15 s tick, with what the
engines held: firing alerts with labels and annotations, and ``ALERTS`` /
``ALERTS_FOR_STATE`` (pending ones and active-since instants included), and
the recording rule's series (to 1e-6: see bench.promtool_replay.RECORDED_TO).
"""

from __future__ import annotations

import pytest

from bench.common import load_groups
from bench.completeness import OUTAGE_MS, OUTAGE_START_MS, POLICIES, Fleet, play, promtool_check, rule_files

pytestmark = pytest.mark.integration

CLUSTERS = {"c0", "c1"}


@pytest.fixture(scope="module")
def catch_up(tmp_path_factory):
    files = rule_files(tmp_path_factory.mktemp("rules"))
    groups = load_groups(files)
    fleet = Fleet(seed=1, deployments=len(CLUSTERS))
    return files, groups, fleet, fleet.requests(5, outage=True, seed=5)


def test_alerts_after_a_catch_up_equal_promtools(catch_up, promtool, tmp_path):
    files, groups, fleet, requests = catch_up
    got = play(fleet, groups, requests, POLICIES["complete"])
    assert got["late"] == 0
    held = [(t, a) for engine in got["engines"] for t, alerts in engine.alerts_at.items() for a in alerts]
    # Not an empty comparison: alerts pending and firing, among them at instants the outage held back.
    assert {a.state for _, a in held} == {"pending", "firing"}
    assert any(OUTAGE_START_MS < t < OUTAGE_MS and a.state == "firing" for t, a in held)
    assert any(rows for engine in got["engines"] for rows in engine.recorded_at.values())
    verdict = promtool_check(fleet, files, groups, got["engines"], CLUSTERS, tmp_path / "complete.test.yml")
    assert verdict.passed and verdict.failed == 0, verdict.report
    assert verdict.checks > 1000


def test_promtool_tells_a_watermark_that_ran_ahead(catch_up, promtool, tmp_path):
    # The same requests with the watermark at the newest sample: late samples, alerts promtool does not have.
    files, groups, fleet, requests = catch_up
    got = play(fleet, groups, requests, POLICIES["newest"])
    assert got["late"] > 0
    verdict = promtool_check(fleet, files, groups, got["engines"], CLUSTERS, tmp_path / "newest.test.yml")
    assert not verdict.passed and verdict.failed > 0
