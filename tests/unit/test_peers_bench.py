"""The pure parts of the peers bench (bench/peers.py): the shard splitter, the request plan, the /proc readers."""

from __future__ import annotations

import doctest
import os
import time
from collections import Counter

from bench import peers
from bench.peers import SHARDS, cpu_seconds, parse_proc_stat, plan_requests, rss_bytes, shard_of, topic_bytes
from bench.workload import runbook_fleet


def test_doctests() -> None:
    result = doctest.testmod(peers)
    assert result.attempted >= 3 and result.failed == 0


def test_shards_take_series_round_robin_like_prometheus_refs() -> None:
    counts = Counter(shard_of(i, 5) for i in range(10_000))
    assert counts == {s: 2000 for s in range(5)}
    assert shard_of(7, 5) == shard_of(12, 5) == 2  # a series keeps its shard


def _fleet_offsets():
    return runbook_fleet(10_000).offset_ms[:10_000]


def test_2000x1_plan_is_one_full_request_per_shard_per_scrape() -> None:
    offsets = _fleet_offsets()
    reqs = plan_requests(offsets, SHARDS, 2000, 1, first_scrape=3, scrapes=4)
    assert len(reqs) == 4 * SHARDS
    assert all(len(r.rows) == 2000 and len(r.scrapes) == 1 for r in reqs)
    for k in range(3, 7):
        rows = [i for r in reqs if r.scrapes == (k,) for i in r.rows]
        assert sorted(rows) == list(range(10_000))  # every series once per scrape
    assert all(shard_of(i, SHARDS) == r.shard for r in reqs for i in r.rows)
    # A request leaves once its newest sample is stamped: within the scrape's interval, in order.
    assert all(k * 15_000 <= r.due_ms < (k + 1) * 15_000 for r in reqs for k in r.scrapes)
    assert [r.due_ms for r in reqs] == sorted(r.due_ms for r in reqs)


def test_1000x10_plan_sends_ten_scrapes_per_series_every_round() -> None:
    offsets = _fleet_offsets()
    reqs = plan_requests(offsets, SHARDS, 1000, 10, first_scrape=0, scrapes=20)
    assert len(reqs) == 2 * 2 * SHARDS
    assert all(r.samples == 10_000 for r in reqs)
    assert {r.scrapes for r in reqs} == {tuple(range(10)), tuple(range(10, 20))}
    # Within a shard, the half scraped earlier in the interval leaves first.
    first_round = [r for r in reqs if r.scrapes[0] == 0 and r.shard == 0]
    early, late = sorted(first_round, key=lambda r: r.due_ms)
    assert max(offsets[list(early.rows)]) <= min(offsets[list(late.rows)])


def test_parse_proc_stat_survives_odd_process_names() -> None:
    line = "99 (a) b (c) R 1 99 99 0 -1 0 0 0 0 0 321 12 0 0 20 0 1 0"
    assert parse_proc_stat(line) == (1, 321, 12)


def test_cpu_seconds_and_rss_of_this_process() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.1
    assert rss_bytes(os.getpid()) > 10 * 1024 * 1024


def test_topic_bytes_counts_log_segments_of_that_topic_only(tmp_path) -> None:
    for name, files in {"t-samples-0": {"0.log": 100, "0.index": 10_000}, "t-samples-1": {"5.log": 20},
                        "t-samples-global-0": {"0.log": 7000}}.items():
        (tmp_path / name).mkdir()
        for file, size in files.items():
            (tmp_path / name / file).write_bytes(b"x" * size)
    assert topic_bytes(tmp_path, "t-samples") == 120
    assert topic_bytes(tmp_path, "t-samples-global") == 7000
