"""Which rule groups run next to their targets, and which in the global lane."""

from __future__ import annotations

import pytest

from detector.promql import compile_expr
from detector.rules import AlertingRule, RecordingRule, RuleGroup
from detector.rules.placement import needs_global_lane, place_groups


@pytest.mark.parametrize(
    ("expr", "global_"),
    [
        ("api_circuit_breaker_state == 2", False),
        ("rate(api_requests_rejected_total[5m]) > 0.1", False),
        ("pgmq_queue_depth / pgmq_queue_max_depth > 0.8", False),  # same labels but the name: same target
        ("histogram_quantile(0.99, worker_handler_semaphore_wait_ms_bucket) > 2000", False),
        ("a / on(job, instance, q) b", False),
        ("a / ignoring(q) b", False),
        ("a and b", False),
        ("a / on(queue_name) group_left b", True),
        ("a / ignoring(instance) b", True),
        ("a unless on(job) b", True),
        ("-(x / on() group_left y)", True),
        ("sum by (reason) (rate(api_requests_rejected_total[5m])) > 0.1", True),
        ("sum by (job, instance) (rate(x[5m])) > 1", False),
        ("sum without (queue_name) (x) > 1", False),
        ("sum without (instance) (x) > 1", True),
        ("count(up) < 3", True),
        ("topk(3, x)", True),
        ('absent(up{job="api"})', True),
        ("absent_over_time(x[5m])", True),
        ("x > scalar(y)", True),
        ("time() - x > 300", False),
        ("vector(1)", True),  # the Watchdog: no series, so it must fire once, not once per partition
        ("vector(time()) > 0", True),
        ("1 > bool 0", True),
    ],
)
def test_an_expression_needs_the_global_lane_when_it_matches_across_targets(expr, global_):
    assert needs_global_lane(compile_expr(expr)) is global_


def alert(name: str, expr: str) -> AlertingRule:
    return AlertingRule(name, compile_expr(expr), expr)


def record(name: str, expr: str) -> RecordingRule:
    return RecordingRule(name, compile_expr(expr), expr)


def test_a_group_recording_what_a_global_group_reads_goes_global_too():
    feeder = RuleGroup("feeder", "f.yml", 15_000, (record("job:limit:max", "limit_config"),))
    local = RuleGroup("local", "f.yml", 15_000, (alert("Down", "up == 0"),))
    cross = RuleGroup("cross", "f.yml", 15_000, (alert("Near", "depth / on(q) group_left job:limit:max > 0.8"),))
    placement = place_groups([feeder, local, cross])
    assert [g.name for g in placement.local] == ["local"]
    assert [g.name for g in placement.global_] == ["feeder", "cross"]


def test_only_the_inputs_of_global_groups_feed_the_global_lane():
    cross = RuleGroup("cross", "f.yml", 15_000, (alert("Near", 'depth{q=~"o.*"} / on(q) group_left limit > 0.8'),))
    placement = place_groups([cross, RuleGroup("local", "f.yml", 15_000, (alert("Down", "up == 0"),))])
    assert placement.feeds_global_lane((("__name__", "depth"), ("q", "orders")))
    assert placement.feeds_global_lane((("__name__", "limit"), ("job", "config")))
    assert not placement.feeds_global_lane((("__name__", "depth"), ("q", "payments")))
    assert not placement.feeds_global_lane((("__name__", "up"), ("job", "api")))


def test_a_group_whose_templates_query_goes_global_and_its_constant_queries_feed_the_lane():
    """query may read any target's series, which only the global lane can see."""
    from detector.output.templates import Template

    summary = Template.parse('{{ $labels.instance }} down; {{ query "count(up == 1)" | first | value }} up')
    owner = Template.parse('{{ with printf "owner{instance=%q}" $labels.instance | query }}{{ . | first }}{{ end }}')
    querying = AlertingRule("Down", compile_expr("up == 0"), "up == 0", annotations=(("summary", summary),))
    dynamic = AlertingRule("Owned", compile_expr("x > 1"), "x > 1", annotations=(("owner", owner),))
    feeder = RuleGroup("feeder", "f.yml", 15_000, (record("job:up:sum", "sum by (job) (up)"),))
    reads_feeder = AlertingRule(
        "Jobs", compile_expr("y > 0"), "y > 0", annotations=(("n", Template.parse('{{ query "job:up:sum" }}')),)
    )
    placement = place_groups([
        RuleGroup("q", "f.yml", 15_000, (querying,)),
        RuleGroup("d", "f.yml", 15_000, (dynamic,)),
        RuleGroup("local", "f.yml", 15_000, (alert("Hot", "temp > 90"),)),
        feeder,
        RuleGroup("r", "f.yml", 15_000, (reads_feeder,)),
    ])
    assert [g.name for g in placement.global_] == ["q", "d", "feeder", "r"]
    assert placement.feeds_global_lane((("__name__", "up"), ("instance", "b"), ("job", "api")))  # the query's series
    assert placement.feeds_global_lane((("__name__", "x"), ("instance", "b")))  # the rule's own
    assert not placement.feeds_global_lane((("__name__", "owner"), ("instance", "b")))  # built at render time
    assert not placement.feeds_global_lane((("__name__", "temp"),))


def test_a_local_group_reading_what_a_global_group_records_goes_global_too():
    """The recording exists only in the global lane: a partition would read nothing, and never alert."""
    total = RuleGroup("total", "f.yml", 15_000, (record("job:up:count", "count by (job) (up)"),))
    reader = RuleGroup("reader", "f.yml", 15_000, (alert("FewUp", "job:up:count < 3"),))
    downstream = RuleGroup("downstream", "f.yml", 15_000, (record("job:up:few", "job:up:count < bool 3"),))
    reads_downstream = RuleGroup("chained", "f.yml", 15_000, (alert("Few", '{__name__=~"job:up:f.*"} > 0'),))
    local = RuleGroup("local", "f.yml", 15_000, (alert("Down", "up == 0"),))
    placement = place_groups([reads_downstream, total, local, reader, downstream])
    assert [g.name for g in placement.local] == ["local"]
    assert [g.name for g in placement.global_] == ["chained", "total", "reader", "downstream"]


def test_every_group_recording_a_name_a_global_group_reads_goes_global():
    a = RuleGroup("a", "f.yml", 15_000, (record("x:sum", "x"),))
    b = RuleGroup("b", "f.yml", 15_000, (record("x:sum", "y"),))
    cross = RuleGroup("cross", "f.yml", 15_000, (alert("Many", "count(x:sum) > 3"),))
    assert [g.name for g in place_groups([a, b, cross]).global_] == ["a", "b", "cross"]


def test_the_kubernetes_rule_set_placed_in_partitions_and_the_lane_alerts_as_one_engine():
    """Staging off: a replay through 8 partitions plus the global lane gives one engine's transitions."""
    import numpy as np

    from bench.stages import RULES, kubernetes_fleet
    from detector.labels import labels_from_canonical
    from detector.replay import Recording, Replay
    from detector.rules import load_rule_files
    from detector.rules.engine import RuleEngine

    groups = load_rule_files([str(RULES)])
    batches, _ = kubernetes_fleet(nodes=6, pods_per_node=5, steps=12, seed=3)
    keys: dict[bytes, int] = {}
    columns: list[tuple] = []
    for b in batches:
        ids = np.array([keys.setdefault(k, len(keys)) for k in b.series_keys])
        columns.append((ids[b.series_index], b.timestamps, b.values))
    index, stamps, values = (np.concatenate(c) for c in zip(*columns))
    order = np.argsort(stamps, kind="stable")
    recording = Recording(list(keys), [labels_from_canonical(k) for k in keys],
                          index[order].astype(np.uint32), stamps[order], values[order])
    replay = Replay(groups, partitions=8, scores=False, forecasts=False)
    got = sorted((e["rule"], tuple(sorted(e["labels"].items())), e["state"], e["eval_time"])
                 for e in replay.run(recording) if e["kind"] == "alert")
    single = RuleEngine(groups)
    expected = sorted((t.rule, tuple((k, v) for k, v in t.labels), t.state, t.eval_time)
                      for b in batches for t in single.ingest(b).transitions)
    assert len(expected) > 100
    assert got == expected
