"""The worker's message handling (pipelines.worker), without Kafka: a fake clock, messages in, Outgoing out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.partition import DEFAULT_SCORE_THRESHOLD
from detector.promql import compile_expr
from detector.rules import AlertingRule, RuleGroup
from detector.wire.batch import SampleBatch
from pipelines.settings import Settings
from pipelines.worker import Worker

SAMPLES, GLOBAL = "headroom-samples", "headroom-samples-global"
ALERTS, SCORES = "headroom-alerts", "headroom-scores"
T0 = 1_700_000_000_000 // 15_000 * 15_000
STEP = 15_000


def up(instance: str, job: str = "api") -> tuple:
    return (("__name__", "up"), ("instance", instance), ("job", job))


class FakeClock:
    """Wall-clock seconds, set by the test."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def down_rule(for_ms: int = 2 * 60_000) -> RuleGroup:
    return RuleGroup("g", "inline", STEP, (AlertingRule("Down", compile_expr("up == 0"), "up == 0", for_ms=for_ms),))


def make_worker(clock: FakeClock, groups=None, **settings) -> Worker:
    """A worker with staged rules off (the global lane), whatever the default: what these tests assert."""
    settings.setdefault("staged_rules", False)
    # One sender shard here: the completeness start-up wait (tested in test_completeness) only delays.
    settings.setdefault("start_wait", "0s")
    return Worker(Settings(**settings), [down_rule()] if groups is None else groups, clock=clock, monotonic=clock)


def message(series: list[tuple[tuple, list[tuple[int, float]]]]) -> bytes:
    return SampleBatch.from_series(series).encode()


def alert_records(out) -> list[dict]:
    return [json.loads(value) for _, value in out.records.get(ALERTS, [])]


def test_alert_goes_pending_then_fires_at_event_time_not_message_count() -> None:
    clock = FakeClock(T0)
    worker = make_worker(clock)
    pending = worker.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0, 0.0)])]))
    assert [(a["state"], a["eval_time"]) for a in alert_records(pending)] == [("pending", T0)]
    key, _ = pending.records[ALERTS][0]
    assert key == json.loads(pending.records[ALERTS][0][1])["fingerprint"].encode()  # keyed by the alert's fingerprint
    # one message with the next 2m of samples: the rule fires at T0 + 2m exactly, in the same Outgoing
    clock.ms = T0 + 3 * 60_000
    fired = worker.handle(SAMPLES, 0, 1, message([(up("a:1"), [(T0 + i * STEP, 0.0) for i in range(1, 10)])]))
    assert [(a["state"], a["eval_time"], a["active_at"]) for a in alert_records(fired)] == [("firing", T0 + 120_000, T0)]
    assert [dict(n.labels)["alertname"] for n in fired.notifications] == ["Down"]
    assert fired.notifications[0].starts_at == T0 + 120_000  # Prometheus's startsAt: when it fired
    assert worker.metrics.messages._value.get() == 2 and worker.metrics.samples._value.get() == 10
    assert worker.metrics.registry.get_sample_value("headroom_alert_transitions_total", {"state": "firing"}) == 1
    # Complete up to the newest sample plus 0.9 of the series' 15 s spacing (detector.completeness).
    complete_until = T0 + 135_000 + STEP - STEP // 10
    assert worker.metrics.registry.get_sample_value("headroom_worker_watermark_seconds", {"lane": f"{SAMPLES}/0"}) == complete_until / 1000


def test_a_fresh_partition_waits_for_every_sender_shard_before_its_first_evaluation() -> None:
    """HEADROOM_START_WAIT (default 10s): other shards' samples of the first scrape may still come."""
    clock = FakeClock(T0)
    worker = make_worker(clock, start_wait="10s")
    assert alert_records(worker.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0, 0.0)])]))) == []
    clock.ms = T0 + 5_000  # another shard: the same scrape, a second target
    assert alert_records(worker.handle(SAMPLES, 0, 1, message([(up("b:1"), [(T0, 0.0)])]))) == []
    # One scrape interval plus 5 s of event time and 10 s of the clock later, both are evaluated at T0.
    clock.ms = T0 + 30_500
    out = worker.handle(SAMPLES, 0, 2, message([(up(i), [(T0 + STEP, 0.0), (T0 + 2 * STEP, 0.0)]) for i in ("a:1", "b:1")]))
    assert sorted((a["labels"]["instance"], a["state"], a["eval_time"]) for a in alert_records(out)) == [
        ("a:1", "pending", T0), ("b:1", "pending", T0)]


def test_partitions_are_independent() -> None:
    clock = FakeClock(T0)
    worker = make_worker(clock)
    worker.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0 + i * STEP, 0.0) for i in range(3)])]))
    out = worker.handle(SAMPLES, 1, 0, message([(up("b:1"), [(T0, 1.0)])]))
    assert alert_records(out) == []
    assert sorted(worker.lanes[SAMPLES].engines) == [0, 1]
    assert worker.assigned(SAMPLES, 0) and not worker.assigned(SAMPLES, 2)


def test_outputs_by_topic_scores_and_alerts() -> None:
    clock = FakeClock(T0)
    # The first message brings 150 scrapes: all their evaluations in its own call, none left for catch-up steps.
    worker = make_worker(clock, max_evaluations_per_step=200)
    x = (("__name__", "x"), ("job", "api"))
    rng = np.random.default_rng(1)
    calm = [(T0 + i * STEP, float(rng.normal(10, 1))) for i in range(150)]
    assert SCORES not in worker.handle(SAMPLES, 0, 0, message([(x, calm)])).records
    out = worker.handle(SAMPLES, 0, 1, message([(x, [(T0 + 150 * STEP, 400.0)]), (up("a:1"), [(T0 + 150 * STEP, 0.0)])]))
    assert set(out.records) == {ALERTS, SCORES}
    (score,) = [json.loads(v) for k, v in out.records[SCORES]]
    assert out.records[SCORES][0][0] is None
    assert score["labels"] == dict(x) and score["t"] == T0 + 150 * STEP and score["score"] >= DEFAULT_SCORE_THRESHOLD
    assert worker.metrics.anomalies._value.get() == 1
    assert 'headroom_anomaly_score{job="api",metric="x"}' in worker.gauges.exposition()


def test_replayed_old_data_goes_to_topics_but_never_to_sinks() -> None:
    clock = FakeClock(T0 + 24 * 3_600_000)  # a day after the samples
    worker = make_worker(clock, groups=[down_rule(for_ms=0)])
    out = worker.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0, 0.0)])]))
    assert [a["state"] for a in alert_records(out)] == ["firing"]
    assert out.notifications == []


def test_idle_advance_resolves_a_quiet_live_partition_on_wall_clock() -> None:
    clock = FakeClock(T0)
    worker = make_worker(clock, groups=[down_rule(for_ms=0)], idle_advance="30s")
    assert [a["state"] for a in alert_records(worker.handle(SAMPLES, 3, 0, message([(up("a:1"), [(T0, 0.0)])])))] == ["firing"]
    clock.ms = T0 + 20_000
    assert not worker.advance_idle()  # quiet, but not for 30 s yet
    clock.ms = T0 + 5 * 60_000 + 30_000 + 15_000  # the sample is out of the 5m lookback
    out = worker.advance_idle()
    assert [(a["previous"], a["state"], a["eval_time"]) for a in alert_records(out)] == [("firing", "inactive", T0 + 315_000)]
    assert out.notifications and out.notifications[-1].ends_at == T0 + 315_000  # the last one says resolved
    assert out.snapshots == []


def test_snapshots_are_requested_after_the_first_message_then_every_interval() -> None:
    clock = FakeClock(T0)
    worker = make_worker(clock, snapshot_interval="30s", snapshot_cpu_share=0)  # no CPU budget: every interval
    # at once: offsets are committed only up to a snapshot, the first must not wait
    assert worker.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0, 1.0)])])).snapshots == [(SAMPLES, 0)]
    clock.ms += 29_000
    assert worker.handle(SAMPLES, 0, 1, message([(up("a:1"), [(T0 + STEP, 1.0)])])).snapshots == []
    assert worker.handle(SAMPLES, 1, 0, message([(up("b:1"), [(T0 + STEP, 1.0)])])).snapshots == [(SAMPLES, 1)]
    clock.ms += 1_000
    assert worker.handle(SAMPLES, 0, 2, message([(up("a:1"), [(T0 + 2 * STEP, 1.0)])])).snapshots == [(SAMPLES, 0)]
    assert worker.handle(SAMPLES, 0, 3, message([(up("a:1"), [(T0 + 3 * STEP, 1.0)])])).snapshots == []
    assert worker.handle(SAMPLES, 1, 1, message([(up("b:1"), [(T0 + 2 * STEP, 1.0)])])).snapshots == []
    worker.forget(SAMPLES, {0})  # revoked, assigned again later: its first message snapshots at once again
    assert worker.handle(SAMPLES, 0, 4, message([(up("a:1"), [(T0 + 4 * STEP, 1.0)])])).snapshots == [(SAMPLES, 0)]
    off = make_worker(clock, snapshot_interval="0s")
    clock.ms += 3_600_000
    assert off.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0, 1.0)])])).snapshots == []
    clock.ms += 3_600_000
    assert off.handle(SAMPLES, 0, 1, message([(up("a:1"), [(T0 + STEP, 1.0)])])).snapshots == []


def test_between_the_intervals_a_snapshot_waits_until_processing_has_cost_ten_times_the_last_one() -> None:
    clock, cpu = FakeClock(T0), [0.0]

    def handle(offset: int, cpu_s: float) -> list:
        def costly_cpu_clock() -> float:  # handle() reads it before and after the work: cpu_s apart
            cpu[0] += cpu_s
            return cpu[0]
        worker.cpu_clock = costly_cpu_clock
        return worker.handle(SAMPLES, 0, offset, message([(up("a:1"), [(T0 + offset * STEP, 1.0)])])).snapshots

    worker = make_worker(clock, snapshot_interval="30s", snapshot_max_interval="5m")
    assert handle(0, 0.01) == [(SAMPLES, 0)]  # the first at once
    worker.snapshot_taken(SAMPLES, 0, cpu_s=0.2)  # it cost 0.2 CPU-s: the next waits for 2 CPU-s of work
    clock.ms += 60_000
    assert handle(1, 1.0) == []  # past the interval, but 1 CPU-s of work so far
    clock.ms += 60_000
    assert handle(2, 1.1) == [(SAMPLES, 0)]  # 2.1 CPU-s: due
    worker.snapshot_taken(SAMPLES, 0, cpu_s=0.2)
    clock.ms += 4 * 60_000
    assert handle(3, 0.001) == []
    clock.ms += 60_000  # 5 minutes since the last: due whatever it cost
    assert handle(4, 0.001) == [(SAMPLES, 0)]
    worker.snapshot_taken(SAMPLES, 0, cpu_s=0.2)
    clock.ms += 1_000
    assert handle(5, 100.0) == []  # however much work, never sooner than the interval


def test_fold_cpu_is_counted_by_lane_and_an_unreadable_message_adds_none() -> None:
    clock, cpu = FakeClock(T0), [0.0]

    def costly_cpu_clock() -> float:  # 0.25 CPU-s between any two reads
        cpu[0] += 0.25
        return cpu[0]

    worker = make_worker(clock)
    worker.cpu_clock = costly_cpu_clock
    fold_cpu = worker.metrics.fold_cpu
    worker.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0, 1.0)])]))
    worker.handle(SAMPLES, 1, 0, message([(up("b:1"), [(T0, 1.0)])]))
    worker.handle(SAMPLES, 0, 1, b"not a batch")
    assert fold_cpu.labels(SAMPLES)._value.get() == pytest.approx(0.5)
    assert fold_cpu.labels(GLOBAL)._value.get() == 0.0


def test_a_partition_that_grew_since_its_last_snapshot_waits_for_work_in_proportion() -> None:
    """The first snapshot, of one series, cost next to nothing; the partition then holds ten: the next
    one is expected to cost ten times as much, so it waits for ten times the work."""
    clock, cpu = FakeClock(T0), [0.0]

    def handle(offset: int, cpu_s: float, instances: int) -> list:
        def costly_cpu_clock() -> float:
            cpu[0] += cpu_s
            return cpu[0]
        worker.cpu_clock = costly_cpu_clock
        series = [(up(f"a:{i}"), [(T0 + offset * STEP, 1.0)]) for i in range(instances)]
        return worker.handle(SAMPLES, 0, offset, message(series)).snapshots

    worker = make_worker(clock, snapshot_interval="30s", snapshot_max_interval="5m")
    assert handle(0, 0.01, 1) == [(SAMPLES, 0)]
    worker.snapshot_taken(SAMPLES, 0, cpu_s=0.01)  # one series: 0.1 CPU-s of work would have been enough
    clock.ms += 60_000
    assert handle(1, 0.5, 10) == []  # ten series now: the next is expected at 0.1 CPU-s, so 1 CPU-s of work
    clock.ms += 60_000
    assert handle(2, 0.6, 10) == [(SAMPLES, 0)]


def test_after_a_takeover_transitions_the_previous_owner_wrote_are_not_written_again() -> None:
    clock = FakeClock(T0)
    first = make_worker(clock)
    batches = [message([(up("a:1"), [(T0 + i * STEP, 0.0)]), (up("b:1"), [(T0 + i * STEP, 1.0 if i < 4 else 0.0)])])
               for i in range(14)]
    first.handle(SAMPLES, 0, 0, batches[0])
    offset, snapshot = first.lanes[SAMPLES].snapshot(0)
    written = []
    for i in range(1, 10):  # after the snapshot, then killed
        written += alert_records(first.handle(SAMPLES, 0, i, batches[i]))
    assert [(a["labels"]["instance"], a["state"]) for a in written] == [("b:1", "pending"), ("a:1", "firing")]
    sent = {(a["fingerprint"], a["state"], a["eval_time"]) for a in written}

    successor = make_worker(clock)
    assert successor.lanes[SAMPLES].restore(0, snapshot, offset)
    successor.already_sent(SAMPLES, 0, sent | {("other-partition", "firing", T0 + 10**9)})
    again = []
    for i in range(1, 14):  # from the snapshot on: the same messages, then new ones
        again += alert_records(successor.handle(SAMPLES, 0, i, batches[i]))
    assert [(a["labels"]["instance"], a["state"], a["eval_time"]) for a in again] == [("b:1", "firing", T0 + 12 * STEP)]
    assert successor.metrics.duplicates._value.get() == 2


def test_unreadable_message_is_counted_and_skipped_and_the_next_one_is_handled() -> None:
    clock = FakeClock(T0)
    worker = make_worker(clock, groups=[down_rule(for_ms=0)])
    assert not worker.handle(SAMPLES, 0, 0, b"\x00not a batch")
    assert worker.metrics.bad_messages._value.get() == 1 and worker.metrics.messages._value.get() == 0
    out = worker.handle(SAMPLES, 0, 1, message([(up("a:1"), [(T0, 0.0)])]))
    assert [a["state"] for a in alert_records(out)] == ["firing"]


def test_messages_already_in_a_restored_snapshot_are_skipped() -> None:
    clock = FakeClock(T0)
    worker = make_worker(clock, groups=[down_rule(for_ms=0)])
    worker.handle(SAMPLES, 0, 5, message([(up("a:1"), [(T0, 0.0)])]))
    offset, snapshot = worker.lanes[SAMPLES].snapshot(0)
    later = make_worker(clock, groups=[down_rule(for_ms=0)])
    assert later.lanes[SAMPLES].restore(0, snapshot, offset)
    assert not later.handle(SAMPLES, 0, 5, message([(up("a:1"), [(T0, 0.0)])]))  # redelivered: already folded in
    assert later.metrics.messages._value.get() == 0
    out = later.handle(SAMPLES, 0, 6, message([(up("a:1"), [(T0 + STEP, 1.0)])]))
    assert [a["state"] for a in alert_records(out)] == ["inactive"]  # the restored alert resolves, not re-fires


def test_cross_target_groups_run_in_the_global_lane(caplog) -> None:
    clock = FakeClock(T0)
    total = RuleGroup("total", "inline", STEP, (AlertingRule("FewUp", compile_expr("sum(up) < 2"), "sum(up) < 2"),))
    with caplog.at_level("WARNING", logger="headroom.worker"):
        worker = make_worker(clock, groups=[down_rule(for_ms=0), total])
        make_worker(clock, groups=[down_rule()])  # all local: nothing to say
        make_worker(clock, groups=[down_rule(), total], staged_rules=True)  # staged: no global lane to speak of
    # at start-up, the operator is told how much runs in the one-partition lane, and which setting spreads it
    assert [r.getMessage()[:76] for r in caplog.records] == [
        "1 of 2 rules (1 of 2 groups) combine series across scrape targets and run in"]
    assert "HEADROOM_STAGED_RULES=true" in caplog.records[0].getMessage()
    assert worker.has_global_lane
    local = worker.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0, 1.0)])]))
    assert alert_records(local) == []  # the local lane does not run the global group
    out = worker.handle(GLOBAL, 0, 0, message([(up("a:1"), [(T0, 1.0)])]))
    assert [(a["rule"], a["state"]) for a in alert_records(out)] == [("FewUp", "firing")]


def test_forget_drops_partitions_and_their_gauges() -> None:
    clock = FakeClock(T0)
    worker = make_worker(clock)
    worker.handle(SAMPLES, 0, 0, message([(up("a:1"), [(T0, 1.0)])]))
    worker.forget(SAMPLES, {0})
    assert not worker.assigned(SAMPLES, 0) and worker.lanes[SAMPLES].offsets == {}


def test_a_run_of_messages_folded_at_once_sends_what_one_at_a_time_sends() -> None:
    """A backlog's messages of one partition taken together (Worker.handle_many) give the same
    alerts, scores and forecasts as the same messages one by one, and count every message."""
    rng = np.random.default_rng(7)
    series = [(("__name__", "x"), ("job", "api"), ("instance", f"i{i}")) for i in range(12)]
    depth = (("__name__", "pgmq_queue_depth"), ("job", "api"), ("queue_name", "orders"))
    limit = (("__name__", "pgmq_queue_max_depth"), ("job", "api"), ("queue_name", "orders"))
    messages = []
    for m in range(40):  # 40 messages of 4 scrapes each: a catch-up's shape
        stamps = [T0 + (4 * m + k) * STEP for k in range(4)]
        batch = [(s, [(t, float(rng.normal(10, 1)) + (300.0 if 100 <= (t - T0) // STEP < 104 else 0.0)) for t in stamps])
                 for s in series]
        batch += [(up("a:1"), [(t, 0.0 if 60 <= (t - T0) // STEP < 80 else 1.0) for t in stamps]),
                  (depth, [(t, 10.0 * ((t - T0) // STEP) + float(rng.normal(0, 5))) for t in stamps]),
                  (limit, [(t, 2000.0) for t in stamps])]
        messages.append(message(batch))
    outputs = []
    for run in (1, 5):
        clock = FakeClock(T0 + 161 * STEP)
        worker = make_worker(clock, groups=[down_rule(for_ms=60_000)], max_evaluations_per_step=1000)
        records: dict[str, list] = {}
        for first in range(0, len(messages), run):
            out = worker.handle_many(SAMPLES, 0, [(o, messages[o]) for o in range(first, min(first + run, len(messages)))])
            for topic, recs in out.records.items():
                records.setdefault(topic, []).extend(json.loads(v) for _, v in recs)
        assert worker.metrics.messages._value.get() == len(messages)
        assert worker.metrics.folds._value.get() == len(messages) // run
        outputs.append(records)
    one_by_one, together = outputs
    assert set(one_by_one) == {ALERTS, SCORES, "headroom-forecasts"}
    assert [a["state"] for a in one_by_one[ALERTS] if a["labels"].get("alertname") == "Down"] == ["pending", "firing", "inactive"]
    for topic in one_by_one:
        assert sorted(map(json.dumps, together[topic])) == sorted(map(json.dumps, one_by_one[topic])), topic


def test_a_forecasts_file_names_the_bounded_series_and_settings_the_worker_uses(tmp_path) -> None:
    """HEADROOM_FORECASTS_FILE: a series no default spec knows (disk bytes against the disk's size)
    is forecast and warned about with the file's horizon; a file with a mistake stops the worker
    before it starts, naming the entry."""
    spec = tmp_path / "forecasts.yml"
    spec.write_text("settings:\n  horizon: 40m\nforecasts:\n"
                    "  - selector: node_disk_used_bytes\n    bound: node_disk_size_bytes\n")
    used = (("__name__", "node_disk_used_bytes"), ("instance", "db:9100"), ("job", "node"))
    size = (("__name__", "node_disk_size_bytes"), ("instance", "db:9100"), ("job", "node"))
    clock = FakeClock(T0 + 200 * STEP)
    runs = {}
    for name, extra in (("default", {}), ("file", {"forecasts_file": spec})):
        worker = make_worker(clock, groups=[down_rule()], **extra)
        forecasts, offset = [], 0
        for first in range(0, 160, 10):  # filling 1 GB of 100 GB a minute from 60 GB: full in 40 minutes
            stamps = [T0 + k * STEP for k in range(first, first + 10)]
            batch = message([(used, [(t, 60e9 + 1e9 * (t - T0) / 60_000) for t in stamps]), (size, [(t, 100e9) for t in stamps])])
            out = worker.handle(SAMPLES, 0, offset, batch)
            offset += 1
            forecasts += [json.loads(v) for _, v in out.records.get("headroom-forecasts", [])]
        runs[name] = forecasts
    assert runs["default"] == []
    assert runs["file"] and {f["labels"]["__name__"] for f in runs["file"]} == {"node_disk_used_bytes"}
    assert any(f["state"] in ("pending", "firing") for f in runs["file"])  # within the file's 40-minute horizon
    bad = tmp_path / "bad.yml"
    bad.write_text("forecasts:\n  - selector: x\n    bound: y\n    direction: sideways\n")
    with pytest.raises(ValueError, match="direction"):
        Settings(forecasts_file=bad)
