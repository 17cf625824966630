"""Staged rules in the worker (pipelines.stages, pipelines.worker), without Kafka: frames routed by hand.

Stage-1 partitions' frames are fed to the combine lane as Kafka would deliver
them (per combine partition, in order, with offsets); the alerts must be those
of one rule engine over all the series, also after a combine partition is
snapshotted, dropped and restored, and frames after the snapshot re-delivered.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np
import pytest

from detector.labels import partition_for
from detector.store import STALE_NAN_BITS
from detector.promql import compile_expr
from detector.rules import AlertingRule, RuleGroup
from detector.rules.engine import RuleEngine
from detector.wire.batch import SampleBatch
from pipelines.settings import Settings
from pipelines.stages import StagedRules
from pipelines.worker import Outgoing, Worker

SAMPLES, PARTIALS, ALERTS = "headroom-samples", "headroom-partials", "headroom-alerts"
T0 = 1_700_000_000_000 // 15_000 * 15_000
STEP = 15_000
PARTITIONS = 4
EXPR = "sum by (namespace) (up) < 5"


def groups() -> list[RuleGroup]:
    rule = AlertingRule("FewUp", compile_expr(EXPR), EXPR, for_ms=30_000)
    return [RuleGroup("g", "inline", STEP, (rule,))]


def series(i: int) -> tuple:
    return (("__name__", "up"), ("instance", f"host-{i}:9100"), ("job", "node"), ("namespace", f"ns-{i % 2}"))


def value(i: int, step: int) -> float:
    return 0.0 if (i % 2 == 0 and 5 <= step < 15 and i < 6) else 1.0  # ns-0 loses 3 of its 5 targets for a while


TARGETS = [series(i) for i in range(10)]
STEPS = 25


class Kafka:
    """Topic partitions as lists: what the worker produced, for the combine lane to consume."""

    def __init__(self) -> None:
        self.log: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        self.read: dict[tuple[str, int], int] = defaultdict(int)

    def produce(self, out: Outgoing) -> None:
        for topic, partition, frame in out.to_partitions:
            self.log[(topic, partition)].append(frame)

    def drain(self, worker: Worker, alerts: list[dict]) -> None:
        """Deliver every frame not read yet (the first level's frames send more to the second)."""
        progress = True
        while progress:
            progress = False
            for (topic, partition), frames in sorted(self.log.items()):
                while self.read[(topic, partition)] < len(frames):
                    offset = self.read[(topic, partition)]
                    self.read[(topic, partition)] += 1
                    out = worker.handle(topic, partition, offset, frames[offset])
                    self.produce(out)
                    alerts += [json.loads(v) for _, v in out.records.get(ALERTS, [])]
                    progress = True


def staged_worker() -> Worker:
    settings = Settings(partitions=PARTITIONS, staged_rules=True, combine_partitions=3, anomaly_scores=False,
                        forecasts=False, max_lateness="0s")
    return Worker(settings, groups(), clock=lambda: T0 / 1000 + 10 * 365 * 86400)


def expected() -> list[tuple]:
    engine = RuleEngine(groups())
    out = engine.ingest(SampleBatch.from_series([(s, [(T0 + k * STEP, value(i, k)) for k in range(STEPS)])
                                                for i, s in enumerate(TARGETS)]))
    return sorted((t.labels, t.state, t.eval_time, t.value) for t in out.transitions)


def got(alerts: list[dict]) -> list[tuple]:
    return sorted((tuple(sorted(a["labels"].items())), a["state"], a["eval_time"], float(a["value"])) for a in alerts)


def run(restore_at: int | None = None, frame_max_bytes: int | None = None, kafka: Kafka | None = None) -> tuple[Worker, list[dict]]:
    worker, kafka, alerts = staged_worker(), kafka or Kafka(), []
    if frame_max_bytes is not None:
        worker.frame_max_bytes = frame_max_bytes
    by_partition = defaultdict(list)
    for i, s in enumerate(TARGETS):
        by_partition[partition_for(s, PARTITIONS)].append(i)
    assert len(by_partition) == PARTITIONS  # every stage-1 partition has targets
    for k in range(STEPS):
        for p in range(PARTITIONS):
            batch = SampleBatch.from_series([(TARGETS[i], [(T0 + k * STEP, value(i, k))]) for i in by_partition[p]])
            kafka.produce(worker.handle(SAMPLES, p, k, batch.encode()))
        kafka.drain(worker, alerts)
        if k == restore_at:
            lane = worker.lanes[PARTIALS]
            saved = {p: lane.snapshot(p) for p in list(lane.engines)}
            worker.forget(PARTIALS, set(saved))
            for p, (offset, data) in saved.items():
                assert lane.restore(p, data, offset - 2)  # as if the snapshot were older: two frames come again
                kafka.read[(PARTIALS, p)] = offset - 1
    return worker, alerts


def test_staged_alerts_equal_one_engine_over_all_series() -> None:
    want = expected()
    assert {s for _, s, _, _ in want} == {"pending", "firing", "inactive"}
    worker, alerts = run()
    assert got(alerts) == want
    rows = [c.partition.rows_received for c in worker.lanes[PARTIALS].engines.values()]
    assert sum(rows) > 0
    assert worker.placement.global_ == []  # nothing left for the global lane


def test_combine_partitions_restored_from_snapshots_drop_what_comes_again() -> None:
    worker, alerts = run(restore_at=8)
    # The transitions made again from the restored state are the same; the worker writes what it makes.
    assert sorted(set(got(alerts))) == expected()
    dropped = sum(c.partition.duplicate_rows for c in worker.lanes[PARTIALS].engines.values())
    assert dropped > 0


@pytest.mark.parametrize("restore_at", [None, 8])
def test_one_ticks_frame_too_big_for_a_record_goes_in_parts_and_alerts_as_one_engine(restore_at) -> None:
    """A record of at most 100 bytes holds one partial row: every tick's frame goes as parts, and
    the combine stage waits for the last (also when a restore re-delivers a frame's last part alone)."""
    from detector.stages.frames import decode_frame

    kafka = Kafka()
    worker, alerts = run(restore_at=restore_at, frame_max_bytes=100, kafka=kafka)
    assert sorted(set(got(alerts))) == expected()
    combiners = [c.partition for c in worker.lanes[PARTIALS].engines.values()]
    records = [decode_frame(r) for (topic, _), log in kafka.log.items() if topic == PARTIALS for r in log]
    assert sum(f.parts > 1 for f in records) > len(records) / 2  # most frames went as parts
    assert max(sum(len(b.labels) for b in f.blocks) for f in records) == 1
    assert all(c.parts.held == {} for c in combiners)  # every frame completed
    if restore_at is not None:
        assert sum(c.parts.abandoned for c in combiners) > 0  # a re-delivered last part, alone, could never complete


def test_an_unreadable_partials_frame_is_skipped_not_a_crash() -> None:
    worker = staged_worker()
    assert not worker.handle(PARTIALS, 0, 0, b"not a frame")
    assert worker.metrics.bad_messages._value.get() == 1
    assert worker.lanes[PARTIALS].folded(0, 0)  # counted as done (a snapshot may cover it), as an unreadable batch


def test_a_samples_partition_without_any_sample_still_lets_the_combine_stage_evaluate() -> None:
    """Live data in three of four partitions: the fourth, assigned and empty, follows the wall clock after
    HEADROOM_IDLE_ADVANCE, so the combine partitions (which wait for every upstream) evaluate."""
    now = {"ms": T0}
    settings = Settings(partitions=PARTITIONS, staged_rules=True, anomaly_scores=False, forecasts=False,
                        max_lateness="0s", idle_advance="5s")
    worker = Worker(settings, groups(), clock=lambda: now["ms"] / 1000, monotonic=lambda: now["ms"] / 1000)
    worker.assign(SAMPLES, range(PARTITIONS))
    kafka, alerts = Kafka(), []
    quiet = PARTITIONS - 1
    used = [(i, s) for i, s in enumerate(TARGETS) if partition_for(s, PARTITIONS) != quiet]
    steps = 9
    for k in range(steps):
        now["ms"] = T0 + k * STEP + 1000
        for p in range(quiet):
            batch = SampleBatch.from_series([(s, [(T0 + k * STEP, value(i, k))]) for i, s in used
                                             if partition_for(s, PARTITIONS) == p])
            kafka.produce(worker.handle(SAMPLES, p, k, batch.encode()))
        kafka.drain(worker, alerts)
    assert alerts == []  # the combine stage waits for partition 3
    now["ms"] = T0 + (steps - 1) * STEP + 6000  # quiet for more than 5 s
    kafka.produce(worker.advance_idle())
    kafka.drain(worker, alerts)
    engine = RuleEngine(groups())
    out = engine.ingest(SampleBatch.from_series([(s, [(T0 + k * STEP, value(i, k)) for k in range(steps)]) for i, s in used]))
    want = sorted((t.labels, t.state, t.eval_time, t.value) for t in out.transitions)
    assert {s for _, s, _, _ in want} == {"pending", "firing"}
    assert got(alerts) == want


def test_a_second_combine_level_over_a_join_that_copies_labels() -> None:
    """sum by (team) over a join on ns: the first level joins and sums by team, the second level
    (the "-2" partials topic) adds those up; the alerts are one engine's."""
    expr = "sum by (team) (x * on(ns) group_left(team) ns_team) > 5"
    rule_groups = [RuleGroup("g", "inline", STEP, (AlertingRule("TeamBusy", compile_expr(expr), expr),))]
    settings = Settings(partitions=PARTITIONS, staged_rules=True, combine_partitions=3, anomaly_scores=False,
                        forecasts=False, max_lateness="0s")
    worker = Worker(settings, rule_groups, clock=lambda: T0 / 1000 + 10 * 365 * 86400)
    assert worker.combine_lanes == (PARTIALS, PARTIALS + "-2")
    xs = [(("__name__", "x"), ("instance", f"i{i}"), ("job", "app"), ("ns", f"ns-{i % 3}")) for i in range(9)]
    teams = [(("__name__", "ns_team"), ("instance", "ksm"), ("job", "kube"), ("ns", f"ns-{k}"), ("team", f"t{k % 2}"))
             for k in range(3)]
    data = [(s, [(T0 + k * STEP, float((i + k) % 4)) for k in range(12)]) for i, s in enumerate(xs)]
    data += [(s, [(T0 + k * STEP, 1.0) for k in range(12)]) for s in teams]
    kafka, alerts = Kafka(), []
    for k in range(12):
        for p in range(PARTITIONS):
            batch = SampleBatch.from_series([(s, [pt for pt in points if pt[0] == T0 + k * STEP]) for s, points in data
                                             if partition_for(s, PARTITIONS) == p])
            if len(batch):
                kafka.produce(worker.handle(SAMPLES, p, k, batch.encode()))
        kafka.drain(worker, alerts)
    engine = RuleEngine(rule_groups)
    want = sorted((t.labels, t.state, t.eval_time, t.value) for t in engine.ingest(SampleBatch.from_series(data)).transitions)
    assert {s for _, s, _, _ in want} >= {"firing", "inactive"}
    assert got(alerts) == want
    assert any(topic == PARTIALS + "-2" for topic, _ in kafka.log)


def test_the_receiver_copies_to_the_global_lane_only_what_the_stages_cannot_separate() -> None:
    from detector.rules import RecordingRule
    from pipelines.stages import global_lane_placement

    def rule(cls, name, expr):
        return cls(name, compile_expr(expr), expr)

    rule_groups = [
        RuleGroup("up", "inline", STEP, (rule(AlertingRule, "FewUp", EXPR),)),  # staged
        # A staged recording read at another interval: the stages cannot separate them, both stay global.
        RuleGroup("rec", "inline", STEP, (rule(RecordingRule, "ns:x:sum", "sum by (ns) (x)"),)),
        RuleGroup("all", "inline", 2 * STEP, (rule(AlertingRule, "Total", "sum(ns:x:sum) > 1"),)),
    ]
    x = (("__name__", "x"), ("instance", "a"), ("job", "api"), ("ns", "n"))
    today = global_lane_placement(Settings(staged_rules=False), rule_groups)
    staged = global_lane_placement(Settings(staged_rules=True), rule_groups)
    assert [g.name for g in today.global_] == ["up", "rec", "all"] and today.feeds_global_lane(TARGETS[0])
    assert [g.name for g in staged.global_] == ["rec", "all"]
    assert not staged.feeds_global_lane(TARGETS[0]) and staged.feeds_global_lane(x)


def test_evaluations_left_for_later_steps_are_not_claimed_done_by_a_frame() -> None:
    """A message with every step at once, two evaluations per step (HEADROOM_MAX_EVALUATIONS_PER_STEP):
    a frame's watermark says only what was evaluated, so the combine stage waits for the rest."""
    import asyncio

    settings = Settings(partitions=PARTITIONS, staged_rules=True, combine_partitions=3, anomaly_scores=False,
                        forecasts=False, max_lateness="0s", max_evaluations_per_step=2)
    worker = Worker(settings, groups(), clock=lambda: T0 / 1000 + 10 * 365 * 86400)
    kafka, alerts = Kafka(), []

    async def send(out: Outgoing) -> None:
        kafka.produce(out)
        kafka.drain(worker, alerts)

    for p in range(PARTITIONS):
        batch = SampleBatch.from_series([(s, [(T0 + k * STEP, value(i, k)) for k in range(STEPS)])
                                         for i, s in enumerate(TARGETS) if partition_for(s, PARTITIONS) == p])
        first = worker.handle(SAMPLES, p, 0, batch.encode())
        assert worker.lanes[SAMPLES].engines[p].pending  # steps left for catch_up
        asyncio.run(send(first))
        assert asyncio.run(worker.catch_up(SAMPLES, p, send)) > 0
    assert got(alerts) == expected()


def test_a_frame_too_big_for_one_record_goes_as_several_records() -> None:
    """Every step in one message: one frame per combine partition with 25 ticks, cut into parts of
    600 bytes; the alerts are still one engine's."""
    worker, kafka, alerts = staged_worker(), Kafka(), []
    worker.frame_max_bytes = 600
    for p in range(PARTITIONS):
        batch = SampleBatch.from_series([(s, [(T0 + k * STEP, value(i, k)) for k in range(STEPS)])
                                         for i, s in enumerate(TARGETS) if partition_for(s, PARTITIONS) == p])
        out = worker.handle(SAMPLES, p, 0, batch.encode())
        assert len(out.to_partitions) > 3  # more records than combine partitions
        kafka.produce(out)
    kafka.drain(worker, alerts)
    assert got(alerts) == expected()


def test_a_stage1_partition_sends_frames_only_for_partials_or_a_watermark_past_a_tick() -> None:
    worker = staged_worker()
    target = next(s for s in TARGETS if partition_for(s, PARTITIONS) == 0)

    def sent(offset: int, t_ms: int) -> int:
        out = worker.handle(SAMPLES, 0, offset, SampleBatch.from_series([(target, [(t_ms, 1.0)])]).encode())
        out.extend(worker.advance_idle())
        return len(out.to_partitions)

    assert sent(0, T0) == 3  # tick T0 evaluated: its partials to each of the 3 combine partitions
    assert sent(1, T0 + 5_000) == 0  # the watermark moved, but past no tick
    assert sent(2, T0 + STEP) == 3


# --- The gaps the first wiring left (issue 13): origin, skipped ticks, silent upstreams, steps. ----


STALE = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])


def _in_partition(p: int, name: str, **labels: str) -> tuple:
    """A series of ``name`` that the receiver puts in stage-1 partition ``p``."""
    for i in range(1000):
        s = tuple(sorted({"__name__": name, "instance": f"{name}-{i}", "job": "j", **labels}.items()))
        if partition_for(s, PARTITIONS) == p:
            return s
    raise AssertionError("no such series")


def _one_engine(rule_groups, batches, **options) -> list[tuple]:
    engine = RuleEngine(rule_groups, **options)
    transitions = []
    for batch in batches:
        transitions += engine.ingest(batch).transitions
    return sorted((t.labels, t.state, t.eval_time, t.value) for t in transitions)


def test_the_combine_stage_starts_at_the_first_tick_any_upstream_evaluated_even_without_rows_for_it() -> None:
    """absent() fires where nothing matches: from the first tick of all the data, as one engine, though
    no upstream has a row for the combine partition before the series appears (step 4)."""
    expr = 'absent(cpu{ns="web"})'
    rule_groups = [RuleGroup("g", "inline", STEP, (AlertingRule("NoWebCpu", compile_expr(expr), expr, for_ms=STEP),))]
    settings = Settings(partitions=PARTITIONS, staged_rules=True, combine_partitions=3, anomaly_scores=False,
                        forecasts=False, max_lateness="0s")
    worker = Worker(settings, rule_groups, clock=lambda: T0 / 1000 + 10 * 365 * 86400)
    others = [_in_partition(p, "other") for p in range(PARTITIONS)]
    web = _in_partition(1, "cpu", ns="web")
    kafka, alerts, steps = Kafka(), [], []
    for k in range(8):
        everything = []
        for p in range(PARTITIONS):
            series = [(others[p], [(T0 + k * STEP, 1.0)])] + ([(web, [(T0 + k * STEP, 1.0)])] if p == 1 and k >= 4 else [])
            everything += series
            kafka.produce(worker.handle(SAMPLES, p, k, SampleBatch.from_series(series).encode()))
        steps.append(SampleBatch.from_series(everything))
        kafka.drain(worker, alerts)
    want = _one_engine(rule_groups, steps)  # each step's samples at once
    assert [s for _, s, _, _ in want] == ["firing", "inactive", "pending"]
    assert got(alerts) == want


def test_ticks_an_upstream_skipped_after_a_jump_are_skipped_by_the_combine_stage_too() -> None:
    """Partition 0 gets steps 2..24 in one message, 60 s of catch-up allowed (HEADROOM_MAX_CATCH_UP): it
    skips steps 2..20, as one engine given the same jump; the combine stage must not evaluate them with
    partition 0's partials missing (ns-0 would look short of targets and FewUp fire)."""
    settings = Settings(partitions=PARTITIONS, staged_rules=True, combine_partitions=3, anomaly_scores=False,
                        forecasts=False, max_lateness="0s", max_catch_up="60s")
    worker = Worker(settings, groups(), clock=lambda: T0 / 1000 + 10 * 365 * 86400)
    by_partition = defaultdict(list)
    for i, s in enumerate(TARGETS):
        by_partition[partition_for(s, PARTITIONS)].append(i)
    kafka, alerts = Kafka(), []

    def batch(p: int, steps: range) -> SampleBatch:
        return SampleBatch.from_series([(TARGETS[i], [(T0 + k * STEP, 1.0) for k in steps]) for i in by_partition[p]])

    for k in range(STEPS):
        for p in range(1, PARTITIONS):
            kafka.produce(worker.handle(SAMPLES, p, k, batch(p, range(k, k + 1)).encode()))
        if k < 2:
            kafka.produce(worker.handle(SAMPLES, 0, k, batch(0, range(k, k + 1)).encode()))
        kafka.drain(worker, alerts)
    kafka.produce(worker.handle(SAMPLES, 0, 2, batch(0, range(2, STEPS)).encode()))
    kafka.drain(worker, alerts)
    one = RuleEngine(groups(), max_catch_up_ms=60_000)
    whole = [SampleBatch.from_series([(s, [(T0 + k * STEP, 1.0)]) for s in TARGETS]) for k in range(2)]
    whole.append(SampleBatch.from_series([(s, [(T0 + k * STEP, 1.0) for k in range(2, STEPS)]) for s in TARGETS]))
    want = [t for b in whole for t in one.ingest(b).transitions]
    assert one.stats.skipped_evaluations > 0 and want == []
    assert alerts == []
    combine = [c.partition for c in worker.lanes[PARTIALS].engines.values()]
    assert sum(c.engine.stats.skipped_evaluations for c in combine) > 0
    assert min(c.engine.watermark for c in combine) == T0 + (STEPS - 1) * STEP  # evaluated up to the end
    assert all(not c.pending for c in combine)  # and nothing held for the skipped ticks


def test_an_upstream_silent_during_a_replay_stops_holding_the_combine_stage_back() -> None:
    """Replay (event time years behind the clock): partition 3 sends steps 0..4, its targets' staleness
    markers at step 5 (they went away), then nothing. After HEADROOM_IDLE_ADVANCE plus the longest
    staged interval without a frame from it, its watermark follows the others', the combine
    stage evaluates every tick and frees its pending rows; the alerts are one engine's over the same data."""
    now = {"s": T0 / 1000 + 10 * 365 * 86400}
    settings = Settings(partitions=PARTITIONS, staged_rules=True, combine_partitions=3, anomaly_scores=False,
                        forecasts=False, max_lateness="0s", idle_advance="30s")
    worker = Worker(settings, groups(), clock=lambda: now["s"], monotonic=lambda: now["s"])
    kafka, alerts, sent = Kafka(), [], []
    quiet = 3
    for k in range(STEPS):
        step = []
        now["s"] += 1  # a second of wall clock per step
        for p in range(PARTITIONS):
            if p == quiet and k > 5:
                continue
            stale = p == quiet and k == 5
            series = [(s, [(T0 + k * STEP, STALE if stale else value(i, k))])
                      for i, s in enumerate(TARGETS) if partition_for(s, PARTITIONS) == p]
            step += series
            kafka.produce(worker.handle(SAMPLES, p, k, SampleBatch.from_series(series).encode()))
        sent.append(SampleBatch.from_series(step))  # one engine: each step's samples at once
        kafka.drain(worker, alerts)
    lane = worker.lanes[PARTIALS]
    held = sum(c.pending_rows() for c in lane.engines.values())
    assert held > 0 and got(alerts) != _one_engine(groups(), sent)
    now["s"] += 24  # partition 3 silent for 43 s: under HEADROOM_IDLE_ADVANCE + the 15 s interval
    idle = worker.advance_idle()
    alerts += [json.loads(v) for _, v in idle.records.get(ALERTS, [])]
    kafka.produce(idle)
    kafka.drain(worker, alerts)
    assert sum(c.pending_rows() for c in lane.engines.values()) == held  # not silent for long enough yet
    now["s"] += 2
    idle = worker.advance_idle()
    alerts += [json.loads(v) for _, v in idle.records.get(ALERTS, [])]
    kafka.produce(idle)
    kafka.drain(worker, alerts)
    assert got(alerts) == _one_engine(groups(), sent)
    assert sum(c.pending_rows() for c in lane.engines.values()) == 0


def test_two_pipelines_on_one_broker_never_share_a_partials_topic(tmp_path, monkeypatch) -> None:
    """A LocalPipeline and a bench WorkerProcess (or two of either) configure their workers by app id:
    each worker's every topic, the partials ones included, is its own."""
    from bench.common import WorkerProcess
    from pipelines.local import LocalPipeline

    def settings_from(env: dict[str, str]) -> Settings:
        for name in [n for n in os.environ if n.startswith("HEADROOM_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            if name.startswith("HEADROOM_"):
                monkeypatch.setenv(name, value)
        return Settings(staged_rules=True)

    envs = {
        "local-a": LocalPipeline("127.0.0.1:1", tmp_path / "a", app_id="local-a").env(),
        "local-b": LocalPipeline("127.0.0.1:1", tmp_path / "b", app_id="local-b").env(),
        "bench-c": WorkerProcess("127.0.0.1:1", tmp_path / "c", app_id="bench-c", samples_topic="bench-c-samples",
                                 rule_files=[], partitions=4).env,
    }
    topics = {app: set(settings_from(env).topics()) | set(settings_from(env).state_topics()) for app, env in envs.items()}
    for app, names in topics.items():
        assert f"{app}-partials" in names and f"{app}-partials-2" in names
        assert all(name.startswith(f"{app}-") for name in names), names
    assert settings_from({}).partials_topics == ("headroom-partials", "headroom-partials-2")  # the default app id's, as before


def test_parts_that_do_not_make_their_frame_before_the_start_are_dropped_not_a_stuck_partition() -> None:
    """A combine partition keeps frames until every upstream reported; a corrupt part among them is
    refused when its frame would be joined, and the others still start the partition."""
    from detector.stages.frames import decode_frame

    worker, kafka, alerts = staged_worker(), Kafka(), []
    worker.frame_max_bytes = 100
    corrupted = False
    for p in range(PARTITIONS):
        batch = SampleBatch.from_series([(s, [(T0 + k * STEP, value(i, k)) for k in range(3)])
                                         for i, s in enumerate(TARGETS) if partition_for(s, PARTITIONS) == p])
        out = worker.handle(SAMPLES, p, 0, batch.encode())
        if p == 0:  # flip a value bit in a middle part of one of partition 0's frames
            for n, (topic, dest, record) in enumerate(out.to_partitions):
                frame = decode_frame(record)
                if frame.parts > 2 and 0 < frame.part < frame.parts - 1 and frame.blocks and not corrupted:
                    bad = bytearray(record)
                    bad[-20] ^= 1
                    out.to_partitions[n] = (topic, dest, bytes(bad))
                    corrupted = True
        kafka.produce(out)
    assert corrupted
    kafka.drain(worker, alerts)
    for p in range(PARTITIONS):  # the next step: partition 0's next frame is whole, so it has reported
        batch = SampleBatch.from_series([(s, [(T0 + 3 * STEP, value(i, 3))])
                                         for i, s in enumerate(TARGETS) if partition_for(s, PARTITIONS) == p])
        kafka.produce(worker.handle(SAMPLES, p, 1, batch.encode()))
    kafka.drain(worker, alerts)
    assert all(c.partition is not None for c in worker.lanes[PARTIALS].engines.values())  # every one started


def test_frames_kept_before_the_start_are_decoded_once_each_also_across_a_restore(monkeypatch) -> None:
    """A combine partition waiting for its last upstream keeps the others' frames; each is decoded
    once as it comes (re-decoding all of them at every new frame was quadratic in the wait: 38% of
    two workers' CPU in a stages_kafka run), and the alerts are still one engine's, also when the
    partition is snapshotted and restored while it waits."""
    import pipelines.stages as staged_lanes

    decoded = []
    real = staged_lanes.decode_frame
    monkeypatch.setattr(staged_lanes, "decode_frame", lambda data: decoded.append(len(data)) or real(data))
    worker, kafka, alerts = staged_worker(), Kafka(), []
    by_partition = defaultdict(list)
    for i, s in enumerate(TARGETS):
        by_partition[partition_for(s, PARTITIONS)].append(i)
    late = PARTITIONS - 1

    def step(p: int, k: int) -> None:
        batch = SampleBatch.from_series([(TARGETS[i], [(T0 + k * STEP, value(i, k))]) for i in by_partition[p]])
        kafka.produce(worker.handle(SAMPLES, p, k, batch.encode()))

    for k in range(10):
        for p in range(PARTITIONS):
            if p != late:
                step(p, k)
        kafka.drain(worker, alerts)
    lane = worker.lanes[PARTIALS]
    assert lane.engines and all(c.partition is None for c in lane.engines.values())  # all wait for `late`
    kept = sum(len(c.early) for c in lane.engines.values())
    assert kept >= 10 * len(lane.engines) and len(decoded) == kept  # once each, not once per frame after it
    saved = {p: lane.snapshot(p) for p in list(lane.engines)}
    worker.forget(PARTIALS, set(saved))
    for p, (offset, data) in saved.items():
        assert lane.restore(p, data, offset)
    decoded.clear()
    for k in range(STEPS):
        for p in range(PARTITIONS):
            if p == late or k >= 10:
                step(p, k)
        kafka.drain(worker, alerts)
    assert all(c.partition is not None for c in lane.engines.values())
    assert len(decoded) <= kept + 3 * len(lane.engines)  # the restored early frames once, and the next frame each
    assert sorted(set(got(alerts))) == expected()


def test_a_partition_started_empty_just_before_its_first_message_does_not_jump_to_the_wall_clock() -> None:
    """The state keeper starts a partition empty at its first message and snapshots it (an await)
    before that message is ingested; the 1 s timer may run in between. A replay two hours old must
    not then follow the wall clock (its samples would all be late): only a partition with no sample
    for HEADROOM_IDLE_ADVANCE since it was assigned does."""
    now = {"ms": T0 + 2 * 3600 * 1000}  # the data is two hours old
    settings = Settings(partitions=PARTITIONS, staged_rules=True, anomaly_scores=False, forecasts=False,
                        max_lateness="0s", idle_advance="10m")
    worker = Worker(settings, groups(), clock=lambda: now["ms"] / 1000, monotonic=lambda: now["ms"] / 1000)
    worker.assign(SAMPLES, range(PARTITIONS))
    lane = worker.lanes[SAMPLES]
    now["ms"] += 5000
    lane.start_empty(0, offset=-1)  # as StateKeeper.recover does, then awaits the snapshot
    worker.advance_idle()  # the timer, meanwhile
    batch = SampleBatch.from_series([(s, [(T0, 1.0)]) for s in TARGETS if partition_for(s, PARTITIONS) == 0])
    worker.handle(SAMPLES, 0, 0, batch.encode())
    assert worker.metrics.late._value.get() == 0 and lane.engines[0].watermark == T0
    now["ms"] += 10 * 60 * 1000  # ten minutes on, partition 1 still has had no sample: it follows the clock
    worker.advance_idle()
    assert lane.engines[1].watermark == now["ms"] - 10 * 60 * 1000


def test_rules_that_are_all_local_have_no_combine_stage_and_send_no_frames() -> None:
    """The runbook's shape: every rule reads one series family. Staged rules on, nothing is left for a
    combine partition, so stage 1 sends no frames at all (not even watermarks to 3 combine partitions at
    every tick) and the worker consumes no partials lane; the alerts are one engine's."""
    expr = "up == 0"
    local = [RuleGroup("g", "inline", STEP, (AlertingRule("Down", compile_expr(expr), expr, for_ms=STEP),))]
    settings = Settings(partitions=PARTITIONS, staged_rules=True, combine_partitions=3, anomaly_scores=False,
                        forecasts=False, max_lateness="0s")
    worker = Worker(settings, local, clock=lambda: T0 / 1000 + 10 * 365 * 86400)
    assert worker.combine_lanes == () and not worker.has_global_lane
    alerts, steps = [], []
    for k in range(STEPS):
        for p in range(PARTITIONS):
            batch = SampleBatch.from_series([(s, [(T0 + k * STEP, value(i, k))]) for i, s in enumerate(TARGETS)
                                             if partition_for(s, PARTITIONS, settings.series_partition_by) == p])
            if len(batch):
                out = worker.handle(SAMPLES, p, k, batch.encode())
                assert out.to_partitions == []
                alerts += [json.loads(v) for _, v in out.records.get(ALERTS, [])]
        assert not worker.advance_idle().to_partitions
        steps.append(SampleBatch.from_series([(s, [(T0 + k * STEP, value(i, k))]) for i, s in enumerate(TARGETS)]))
    want = _one_engine(local, steps)
    assert {s for _, s, _, _ in want} == {"pending", "firing", "inactive"}
    assert got(alerts) == want
    combined = StagedRules(settings, groups())  # a rule across targets still has its combine stage
    assert combined.topics == (PARTIALS,)


def test_the_rows_a_combine_partition_holds_are_reported_on_the_timer() -> None:
    """headroom_combine_pending_rows counts every row held, so it is set on the 1 s timer, not per frame."""
    worker, kafka, alerts = staged_worker(), Kafka(), []
    for p in range(PARTITIONS - 1):  # the last partition silent: the combine partitions hold what came
        batch = SampleBatch.from_series([(s, [(T0, 1.0)]) for s in TARGETS if partition_for(s, PARTITIONS) == p])
        kafka.produce(worker.handle(SAMPLES, p, 0, batch.encode()))
    batch = SampleBatch.from_series([(s, [(T0, 1.0), (T0 + STEP, 1.0)]) for s in TARGETS
                                     if partition_for(s, PARTITIONS) == PARTITIONS - 1])
    kafka.produce(worker.handle(SAMPLES, PARTITIONS - 1, 0, batch.encode()))
    kafka.drain(worker, alerts)
    kafka.produce(worker.advance_idle())
    lane = worker.lanes[PARTIALS]
    values = {p: worker.metrics.registry.get_sample_value("headroom_combine_pending_rows",
                                                          {"lane": PARTIALS, "partition": str(p)}) for p in lane.engines}
    assert values == {p: c.pending_rows() for p, c in lane.engines.items()}
    assert sum(values.values()) > 0
