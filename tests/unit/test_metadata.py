"""Metric types from remote-write metadata and ``# TYPE`` lines decide which series are counters."""

from __future__ import annotations

import numpy as np
import pytest

from detector.anomaly import AnomalyScorer
from detector.wire.batch import SampleBatch
from detector.errors import InvalidRequest
from detector.labels import canonical_bytes
from detector.wire.metadata import MetricTypes, decode_type, encode_type
from detector.wire.proto import remote_pb2
from detector.wire.remote_write import RemoteWriteDecoder, encode_write_request
from detector.replay import Replay, read_openmetrics
from pipelines.metadata_feed import MetadataFeed

import cramjam


@pytest.mark.parametrize(
    ("declared", "series", "expected"),
    [
        ({"jobs": "counter"}, "jobs_total", "counter"),            # OpenMetrics: family without _total
        ({"jobs_total": "counter"}, "jobs_total", "counter"),      # Prometheus text: the series' own name
        ({"jobs": "counter"}, "jobs_created", "gauge"),            # a creation time is not a counter
        ({"lat": "histogram"}, "lat_bucket", "histogram"),
        ({"lat": "summary"}, "lat_count", "summary"),
        ({"lat": "summary"}, "lat", "summary"),                    # the quantile series
        ({"lat": "summary"}, "lat_bucket", None),                  # a summary has no buckets
        ({"depth_count": "gauge"}, "depth_count", "gauge"),
        ({"x": "gauge"}, "x_total", None),                         # a gauge family has no _total series
        ({}, "anything_total", None),
    ],
)
def test_a_series_name_maps_to_its_family_type(declared, series, expected):
    assert MetricTypes(declared).type_of(series) == expected


def test_update_reports_only_news_and_ignores_unknown():
    types = MetricTypes()
    assert types.update({"a": "COUNTER", "b": "unknown", "": "gauge"}) == {"a"}
    version = types.version
    assert types.update({"a": "counter"}) == set() and types.version == version
    assert types.update({"a": "gauge"}) == {"a"} and types.version == version + 1
    assert types.families() == {"a": "gauge"}


def _body(series=(), metadata=()):
    request = remote_pb2.WriteRequest.FromString(cramjam.snappy.decompress_raw(encode_write_request(list(series))).read())
    for kind, family in metadata:
        entry = request.metadata.add()
        entry.type = kind
        entry.metric_family_name = family
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def test_the_decoder_reads_metadata_beside_samples():
    up = ((("__name__", "up"), ("job", "a")), [(1000, 1.0)])
    decoded = RemoteWriteDecoder(2).decode(_body([up], [(1, "jobs_done"), (2, "queue_depth"), (0, "mystery"), (3, "")]))
    assert decoded.metadata == {"jobs_done": "counter", "queue_depth": "gauge"}
    assert decoded.samples == 1


def test_a_corrupt_metadata_entry_is_a_400_naming_it():
    request = remote_pb2.SeriesBytesWriteRequest()
    request.metadata.append(b"\x08\xff")  # a varint cut short
    with pytest.raises(InvalidRequest, match="metadata entry") as refused:
        RemoteWriteDecoder(2).decode(bytes(cramjam.snappy.compress_raw(request.SerializeToString())))
    assert refused.value.status == 400


def _key(name: str) -> bytes:
    return canonical_bytes((("__name__", name), ("job", "a")))


def test_a_declared_type_overrides_the_naming_convention():
    types = MetricTypes({"jobs_done": "counter", "queue_depth_count": "gauge"})
    scorer = AnomalyScorer(metric_types=types)
    rows = scorer.rows_for([_key("jobs_done"), _key("queue_depth_count"), _key("requests_total")])
    assert scorer.is_counter_row(rows).tolist() == [True, False, True]


def test_types_learned_later_reclassify_and_restart_only_the_series_that_changed():
    types = MetricTypes()
    scorer = AnomalyScorer(metric_types=types)
    keys = [_key("jobs_done"), _key("requests_total")]
    n = 150
    stamps = np.arange(n) * 15_000
    batch = SampleBatch.from_series([(((("__name__", "jobs_done"), ("job", "a"))), [(int(t), 10.0 * i) for i, t in enumerate(stamps)]),
                                     (((("__name__", "requests_total"), ("job", "a"))), [(int(t), 5.0 * i) for i, t in enumerate(stamps)])])
    scorer.score_batch(batch)
    rows = scorer.rows_for(keys)
    assert scorer.is_counter_row(rows).tolist() == [False, True]
    before = scorer.model.scalars[rows].copy()
    types.update({"jobs_done": "counter"})
    assert scorer.reclassify() == 1
    assert scorer.is_counter_row(rows).tolist() == [True, True]
    assert not scorer.model.scalars[rows[0]].any()                    # learned raw values: forgotten
    assert np.array_equal(scorer.model.scalars[rows[1]], before[1])   # untouched
    assert scorer.reclassify() == 0


def test_the_feed_folds_records_and_skips_bad_ones():
    types = MetricTypes()
    seen = []
    feed = MetadataFeed("unused:9092", "t", types, seen.append)
    changed = feed.apply([(b"jobs", encode_type("counter")), (None, encode_type("gauge")), (b"x", b"not json"),
                          (b"y", b'{"type": "nonsense"}')])
    assert changed == {"jobs"} and seen == [{"jobs"}]
    assert feed.unreadable == 3 and feed.records == 4
    assert feed.apply([(b"jobs", encode_type("counter"))]) == set() and len(seen) == 1
    assert decode_type(None) is None


def test_replay_reads_type_lines_as_metadata():
    lines = ["# TYPE jobs_done counter", "# TYPE depth_count gauge"]
    for i in range(5):
        lines += [f'jobs_done{{job="a",instance="i"}} {10 * i} {15 * i}', f'depth_count{{job="a",instance="i"}} 3 {15 * i}']
    recording = read_openmetrics("\n".join(lines + ["# EOF"]))
    assert recording.types == {"jobs_done": "counter", "depth_count": "gauge"}
    replay = Replay([], partitions=1)
    list(replay.run(recording))
    scorer = replay.engines[0].scorer.scorers["default"]
    rows = scorer.rows_for([canonical_bytes(s) for s in recording.labels])
    counter = dict(zip([dict(s)["__name__"] for s in recording.labels], scorer.is_counter_row(rows).tolist()))
    assert counter == {"jobs_done": True, "depth_count": False}
