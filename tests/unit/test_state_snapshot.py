"""Partition snapshots: restore gives the run an uninterrupted stream would have given."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from detector.wire.batch import SampleBatch
from detector.forecast.engine import ForecastEngine
from detector.partition import SNAPSHOT_RECORDS, PartitionDetectors, PartitionOutput
from detector.promql import compile_expr
from detector.rules import AlertingRule, RuleGroup, load_rule_files
from simulator.runbook import RunbookSimulator
from detector.snapshot import SnapshotError, decode, encode
from detector.output.templates import Template
from pipelines.engines import PartitionEngines
from pipelines.settings import Settings

T0 = 1_700_000_000_000 // 15_000 * 15_000
STEPS = 160


@pytest.fixture(scope="module")
def groups() -> list[RuleGroup]:
    return load_rule_files(["backpressure", "anomaly"])


@pytest.fixture(scope="module")
def stream() -> list[SampleBatch]:
    """The runbook's incident, every series every 15 s: rules fire, forecasts warn, models score."""
    sim = RunbookSimulator("backpressure", seed=1, start_ms=T0)
    out = []
    for k in range(STEPS):
        t = T0 + k * 15_000
        out.append(SampleBatch.from_series([(labels, [(t, value)]) for labels, value in sim.sample(t)]))
    return out


def outputs(out: PartitionOutput) -> tuple:
    """Everything a partition emits for one batch, comparable with ==."""
    return (
        [repr(t) for t in out.transitions],
        [repr(n) for n in out.engine.notifications],
        [(s.labels, s.t_ms, s.score) for s in out.scores],
    )


def run(detectors: PartitionDetectors, batches: list[SampleBatch]) -> list[tuple]:
    return [outputs(detectors.ingest(b)) for b in batches]


# 20: mid-incident, alerts pending and firing, forecasts warming; 110: models past warm-up.
@pytest.mark.parametrize("cut", [20, 110])
def test_restored_partition_emits_what_an_uninterrupted_one_does(groups, stream, cut):
    uninterrupted = PartitionDetectors(groups)
    run(uninterrupted, stream[:cut])
    snapshot = uninterrupted.snapshot()
    expected = run(uninterrupted, stream[cut:])

    restored = PartitionDetectors.restore(snapshot, groups)
    assert run(restored, stream[cut:]) == expected

    # The comparison can fail: a partition that starts empty emits something else.
    assert run(PartitionDetectors(groups), stream[cut:]) != expected


def test_every_kind_of_output_is_covered_by_the_stream(groups, stream):
    out = run(PartitionDetectors(groups), stream)
    rules = {t.split("rule='")[1].split("'")[0] for transitions, _, _ in out for t in transitions}
    assert {"SaturationForecast", "AnomalousSeries", "TaskerCircuitBreakerOpen"} <= rules
    assert any(scores for _, _, scores in out) and any(notes for _, notes, _ in out)


def test_models_are_not_refit_after_a_restore(groups, stream):
    live = PartitionDetectors(groups)
    run(live, stream[:120])
    restored = PartitionDetectors.restore(live.snapshot(), groups)
    live_scorer, restored_scorer = live.scorer.scorers["default"], restored.scorer.scorers["default"]
    rows = np.fromiter(live_scorer.rows.values(), dtype=np.intp)
    assert np.array_equal(restored_scorer.model.scalars[rows], live_scorer.model.scalars[rows])
    assert (restored_scorer.model.scalars[rows, 0] >= 100).all()  # N: past the 100-sample warm-up
    assert len(restored.forecaster) == len(live.forecaster) > 0


def up_rule(name: str = "Down", for_ms: int = 300_000, labels: tuple = ()) -> AlertingRule:
    return AlertingRule(name, compile_expr("up == 0"), "up == 0", for_ms=for_ms,
                        labels=tuple((k, Template.parse(v)) for k, v in labels))


def up_batch(minutes_from: int, minutes_to: int, value: float = 0.0) -> SampleBatch:
    up = (("__name__", "up"), ("instance", "a:1"), ("job", "api"))
    return SampleBatch.from_series([(up, [(T0 + s * 15_000, value) for s in range(minutes_from * 4, minutes_to * 4)])])


def transitions(out: PartitionOutput) -> list[tuple]:
    return [(t.rule, t.previous, t.state, (t.eval_time - T0) // 1000) for t in out.transitions]


def test_a_for_clock_survives_a_restore():
    groups = [RuleGroup("g", "inline", 15_000, (up_rule(),))]
    before = PartitionDetectors(groups, scores=False, forecasts=False)
    assert transitions(before.ingest(up_batch(0, 3))) == [("Down", "inactive", "pending", 0)]
    after = PartitionDetectors.restore(before.snapshot(), groups, scores=False, forecasts=False)
    # pending since 0 s: fires at 300 s, not 5 minutes after the restore
    assert transitions(after.ingest(up_batch(3, 6))) == [("Down", "pending", "firing", 300)]


def test_state_of_removed_rules_is_dropped_and_kept_rules_keep_theirs():
    old = [RuleGroup("g", "inline", 15_000, (up_rule("Down"), up_rule("Gone"))), RuleGroup("other", "inline", 15_000, (up_rule("X"),))]
    before = PartitionDetectors(old, scores=False, forecasts=False)
    before.ingest(up_batch(0, 3))
    assert sorted(a.labels[0][1] for a in before.rules.active_alerts()) == ["Down", "Gone", "X"]

    new = [RuleGroup("g", "inline", 15_000, (up_rule("Added"), up_rule("Down")))]  # reordered, one removed, a group gone
    after = PartitionDetectors.restore(before.snapshot(), new, scores=False, forecasts=False)
    assert [dict(a.labels)["alertname"] for a in after.rules.active_alerts()] == ["Down"]
    # Down keeps its clock (fires at 300 s); Added is new and starts pending at the first evaluation after the restore
    assert transitions(after.ingest(up_batch(3, 6))) == [("Added", "inactive", "pending", 180), ("Down", "pending", "firing", 300)]


def test_same_named_rules_get_their_own_alerts_back_by_their_labels():
    rules = (up_rule("Down", 60_000, (("severity", "warning"),)), up_rule("Down", 300_000, (("severity", "critical"),)))
    before = PartitionDetectors([RuleGroup("g", "inline", 15_000, rules)], scores=False, forecasts=False)
    before.ingest(up_batch(0, 2))  # warning fired at 60 s, critical pending
    swapped = [RuleGroup("g", "inline", 15_000, rules[::-1])]
    after = PartitionDetectors.restore(before.snapshot(), swapped, scores=False, forecasts=False)
    by_rule = {pos & 0xFFFFF: sorted(dict(a.labels)["severity"] + ":" + a.state for a in alerts.values())
               for pos, alerts in after.rules._alerts.items()}
    assert by_rule == {0: ["critical:pending"], 1: ["warning:firing"]}


@pytest.mark.parametrize("damage", ["truncate", "flip", "version", "garbage"])
def test_a_bad_snapshot_is_refused_with_a_reason(damage):
    groups = [RuleGroup("g", "inline", 15_000, (up_rule(),))]
    live = PartitionDetectors(groups)
    live.ingest(up_batch(0, 3))
    data = bytearray(live.snapshot())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-20] ^= 0xFF
    elif damage == "version":
        data[6] += 1
    else:
        data = bytearray(b"\x00" * 100)
    with pytest.raises(SnapshotError):
        PartitionDetectors.restore(bytes(data), groups)


def test_a_bad_snapshot_starts_the_partition_empty_with_a_logged_error(caplog):
    groups = [RuleGroup("g", "inline", 15_000, (up_rule(),))]
    engines = PartitionEngines(groups, Settings(start_wait="0s"))  # one sender shard: evaluates at once
    engines.ingest(0, up_batch(0, 3), offset=41)
    _, good = engines.snapshot(0)
    later = PartitionEngines(groups, Settings())
    with caplog.at_level(logging.ERROR, logger="headroom.worker"):
        assert later.restore(0, good[:-50], offset=41) is False
    assert "cannot load its snapshot at offset 41" in caplog.text
    assert later.engines[0].rules.active_alerts() == [] and not later.folded(0, 41)
    assert later.restore(1, good, offset=41) and later.folded(1, 41) and len(later.engines[1].rules.active_alerts()) == 1


def test_a_snapshot_taken_with_other_forecast_settings_keeps_the_rules_state_and_starts_forecasts_afresh():
    # An upgrade that changes a forecast or model default must not lose a firing alert or a for clock.
    groups = [RuleGroup("g", "inline", 15_000, (up_rule(),))]
    before = PartitionDetectors(groups, forecasts=False, engine_options={"start_wait_ms": 0})
    before.ingest(up_batch(0, 3))
    assert len(before.rules.active_alerts()) == 1
    back = PartitionDetectors.restore(before.snapshot(), groups, engine_options={"start_wait_ms": 0})
    assert back.fresh_components == ("forecasts",)
    assert back.rules.active_alerts() == before.rules.active_alerts()
    assert back.forecaster is not None and back.forecaster._keys == {}  # built afresh: nothing learned
    same = PartitionDetectors.restore(before.snapshot(), groups, forecasts=False, engine_options={"start_wait_ms": 0})
    assert same.fresh_components == ()


def test_a_snapshot_whose_settings_cannot_be_read_is_refused():
    groups = [RuleGroup("g", "inline", 15_000, (up_rule(),))]
    state = decode(PartitionDetectors(groups).snapshot(), SNAPSHOT_RECORDS)
    state["_config"] = "something else"
    with pytest.raises(SnapshotError, match="settings cannot be read"):
        PartitionDetectors.restore(encode(state, SNAPSHOT_RECORDS), groups)


def test_new_plain_attributes_are_carried_without_snapshot_code(monkeypatch):
    original = ForecastEngine.__init__

    def with_extra(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.free_rows = []  # e.g. rows of retired series, added by a later change
        self.last_published = np.zeros(4)

    monkeypatch.setattr(ForecastEngine, "__init__", with_extra)
    groups = [RuleGroup("g", "inline", 15_000, (up_rule(),))]
    live = PartitionDetectors(groups)
    live.forecaster.free_rows += [3, 5]
    live.forecaster.last_published[2] = 7.5
    back = PartitionDetectors.restore(live.snapshot(), groups)
    assert back.forecaster.free_rows == [3, 5] and back.forecaster.last_published.tolist() == [0, 0, 7.5, 0]


def test_state_the_format_cannot_hold_fails_the_snapshot_loudly():
    live = PartitionDetectors([RuleGroup("g", "inline", 15_000, (up_rule(),))])
    live.scorer.scorer("default").callback = lambda: None  # neither data, nor a component, nor declared configuration
    with pytest.raises(SnapshotError, match="cannot snapshot a value of type builtins.function"):
        live.snapshot()


def test_a_snapshot_of_code_with_other_attributes_is_refused():
    groups = [RuleGroup("g", "inline", 15_000, (up_rule(),))]
    live = PartitionDetectors(groups)
    live.scorer.scorer("default").renamed_column = np.zeros(3)
    with pytest.raises(SnapshotError, match=r"AnomalyScorer: snapshot from other code \(missing \[\], unknown \['renamed_column'\]\)"):
        PartitionDetectors.restore(live.snapshot(), groups)


def forge(header: str, payload: bytes = b"") -> bytes:
    """Bytes in the snapshot format with a hand-written tree, as an attacker could write them."""
    import cramjam

    from detector.snapshot import _HEADER, MAGIC, VERSION

    body = header.encode()
    return _HEADER.pack(MAGIC, VERSION, len(body)) + bytes(cramjam.zstd.compress(body + payload))


@pytest.mark.parametrize("tree, reason", [
    ('{"r":"Popen","f":{"args":"true"}}', "unknown element"),  # a record not on the allow-list
    ('{"a":["|O",[1],0]}', "dtype |O is not allowed"),  # object arrays would unpickle
    ('{"a":["<f8",[1000],0]}', "array outside the payload"),
])
def test_the_loader_builds_nothing_but_data(tree, reason):
    assert decode(forge('{"a":["<f8",[2],0]}', np.arange(2.0).tobytes())).tolist() == [0.0, 1.0]
    with pytest.raises(SnapshotError, match=reason):
        decode(forge(tree, b"\0" * 64))
    with pytest.raises(SnapshotError, match="cannot snapshot"):
        encode(np.array([object()]))


def test_label_sets_and_key_lists_round_trip_as_buffers():
    """Lists of label sets and of series keys leave the JSON tree as arrays; every string survives."""
    sets = [(("__name__", "up"), ("job", "api")), (), (("pod", "ü-ß-日本"), ("empty", "")), (("a", "\x00b"),)]
    keys = [b"", b"\x00\xff", "k-ü".encode()]
    back = decode(encode({"sets": sets, "keys": keys}))
    assert back == {"sets": sets, "keys": keys}


def test_label_sets_in_the_format_of_earlier_snapshots_still_load():
    """Snapshots written before the buffer form held each label set as its own flat list."""
    assert decode(forge('[{"p":["job","api","instance","a:1"]},{"p":[]}]', b"")) == [
        (("job", "api"), ("instance", "a:1")), ()]


@pytest.mark.parametrize("tree", [
    '{"P":[["<i8",[2],0],["<i8",[2],8],["|u1",[3],24]]}',  # 2 sets of 1 pair each, but 2 strings
    '{"P":[["<i8",[1],0],["<i8",[2],8],["|u1",[1],24]]}',  # string lengths past the text
    '{"B":[["|u1",[2],24],["<i8",[1],0]]}',  # key lengths that do not add up to the buffer
])
def test_buffers_whose_sizes_disagree_are_refused(tree):
    payload = np.array([1, 1, 1], dtype=np.int64).tobytes() + b"abc"
    with pytest.raises(SnapshotError, match="sizes disagree"):
        decode(forge(tree, payload))


def test_forecast_series_share_the_stores_label_pairs_also_after_a_restore():
    """The forecaster holds each bounded series' labels: built from the store's shared pairs, they
    cost it an outer tuple, not a second copy of every string (about 270 B per series at 100k)."""
    sat = (("__name__", "worker_dispatch_channel_saturation"), ("job", "api"), ("worker_id", "w1"))
    live = PartitionDetectors([RuleGroup("g", "inline", 15_000, (up_rule(),))])
    live.ingest(SampleBatch.from_series([(sat, [(t * 15_000, 0.1) for t in range(3)])]))

    def shares_pairs(detectors: PartitionDetectors) -> bool:
        (row,) = [r for r in range(len(detectors.forecaster._labels)) if detectors.forecaster.labels(r)]
        held = detectors.forecaster.labels(row)
        return held == sat and all(pair is detectors.store.share_labels((pair,))[0] for pair in held)

    assert shares_pairs(live)
    back = PartitionDetectors.restore(live.snapshot(), [RuleGroup("g", "inline", 15_000, (up_rule(),))])
    assert shares_pairs(back)
