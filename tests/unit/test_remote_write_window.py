"""Remote-write refusals of issue 9: the accepted time window, name schemes, series per request.

The window is checked against a fixed clock passed in; every test builds its
bodies with :func:`encode_write_request`, as a well-behaved sender would.
"""

from __future__ import annotations

import pytest

from detector.errors import InvalidRequest
from detector.wire.remote_write import RemoteWriteDecoder, SampleWindow, WriteLimits, encode_write_request

NOW = 1_800_000_000_000
HOUR = 3_600_000
WINDOW = SampleWindow(max_age_ms=2 * HOUR, max_ahead_ms=5 * 60_000)
UP = (("__name__", "up"), ("instance", "a:1"), ("job", "api"))
DOWN = (("__name__", "up"), ("instance", "b:1"), ("job", "api"))


def decoder(**kwargs) -> RemoteWriteDecoder:
    return RemoteWriteDecoder(4, window=WINDOW, clock=lambda: NOW, **kwargs)


def delivered(decoded) -> dict:
    out: dict = {}
    for batches in decoded.batches.values():
        for batch in batches:
            for i, t in zip(batch.series_index.tolist(), batch.timestamps.tolist()):
                out.setdefault(batch.series_labels(i), []).append(t)
    return out


def test_samples_inside_the_window_are_all_delivered_including_both_edges():
    stamps = [NOW - 2 * HOUR, NOW - 1, NOW, NOW + 5 * 60_000]
    decoded = decoder().decode(encode_write_request([(UP, [(t, 1.0) for t in stamps])]))
    assert (decoded.samples, decoded.out_of_window, decoded.problems) == (4, {}, [])
    assert delivered(decoded) == {UP: stamps}


@pytest.mark.parametrize("stamp, reason", [
    (0, "too_old"),  # proto3's default when the sender leaves the timestamp out
    (-5, "too_old"),
    (NOW - 2 * HOUR - 1, "too_old"),
    (NOW + 5 * 60_000 + 1, "too_new"),
    (NOW + 365 * 24 * HOUR, "too_new"),  # a year ahead: the sample that froze the worker
])
def test_a_request_with_only_out_of_window_samples_is_refused_naming_the_series(stamp, reason):
    decoded = decoder().decode(encode_write_request([(UP, [(stamp, 1.0)])]))
    assert decoded.batches == {} and decoded.samples == 0
    assert decoded.out_of_window == {reason: 1}
    assert (decoded.refused_series, decoded.refused_samples) == (1, 1)
    (problem,) = decoded.problems
    assert problem.startswith('series {__name__="up", instance="a:1", job="api"}: 1 samples outside the accepted window '
                              "[2027-01-15T06:00:00Z, 2027-01-15T08:05:00Z]")
    assert ("too old" if reason == "too_old" else "too new") in problem


def test_mixed_requests_keep_the_good_samples_and_count_the_dropped_ones_without_a_problem():
    body = encode_write_request([
        (UP, [(0, 1.0), (NOW - 15_000, 1.0), (NOW, 1.0), (NOW + 400 * 86_400_000, 1.0)]),
        (DOWN, [(NOW + 10 * HOUR, 0.0)]),  # this series loses its only sample; the request is still good
    ])
    decoded = decoder().decode(body)
    assert delivered(decoded) == {UP: [NOW - 15_000, NOW]}
    assert (decoded.series, decoded.samples, decoded.problems) == (1, 2, [])
    assert decoded.out_of_window == {"too_old": 1, "too_new": 2}
    assert decoded.out_of_window_example.startswith('series {__name__="up", instance="a:1", job="api"}: 2 samples outside')


def test_the_window_moves_with_the_clock():
    now = [NOW]
    moving = RemoteWriteDecoder(4, window=WINDOW, clock=lambda: now[0])
    body = encode_write_request([(UP, [(NOW, 1.0)])])
    assert moving.decode(body).samples == 1
    now[0] = NOW + 3 * HOUR
    assert moving.decode(body).out_of_window == {"too_old": 1}


def test_seen_series_are_windowed_on_the_fast_path_too():
    windowed = decoder()
    windowed.decode(encode_write_request([(UP, [(NOW, 1.0)])]))  # learnt
    again = windowed.decode(encode_write_request([(UP, [(NOW, 1.0), (0, 2.0)])]))
    assert again.new_series == 0 and delivered(again) == {UP: [NOW]} and again.out_of_window == {"too_old": 1}


def test_out_of_window_samples_do_not_reach_the_global_lane_nor_move_its_clock():
    lane = decoder(feeds_global_lane=lambda labels: True)
    decoded = lane.decode(encode_write_request([(UP, [(NOW, 1.0), (NOW + 24 * HOUR, 1.0)])]))
    copies = [t for batch in decoded.global_batches for t in batch.timestamps.tolist()]
    assert copies == [NOW, NOW]  # the copy and the lane clock, both at the newest good sample


def test_without_a_window_every_timestamp_is_taken():
    decoded = RemoteWriteDecoder(4).decode(encode_write_request([(UP, [(0, 1.0), (NOW + 400 * 86_400_000, 1.0)])]))
    assert decoded.samples == 2 and decoded.out_of_window == {}


def test_the_400_lists_ten_series_and_counts_the_rest():
    series = [((("__name__", "up"), ("instance", f"i{i}"), ("job", "api")), [(0, 1.0)]) for i in range(25)]
    decoded = decoder().decode(encode_write_request(series))
    assert decoded.refused_series == 25 and len(decoded.problems) == 10
    assert "and 15 more invalid series" in decoded.problem_summary()


# --- names -----------------------------------------------------------------


BAD_LEGACY_NAMES = [
    (("__name__", "up"), ("a-b", "1")),
    (("1abc", "1"), ("__name__", "up")),
    (("__name__", "up"), ("a:b", "1")),
    (("__name__", "0bad metric"),),
]


@pytest.mark.parametrize("labels", BAD_LEGACY_NAMES)
def test_legacy_scheme_refuses_names_prometheus_2_refuses_and_still_delivers_the_rest(labels):
    body = encode_write_request([(labels, [(NOW, 1.0)]), (UP, [(NOW, 1.0)])])
    decoded = decoder().decode(body)
    assert delivered(decoded) == {UP: [NOW]}
    (problem,) = decoded.problems
    assert problem.startswith("series {") and "legacy name scheme" in problem


def test_legacy_scheme_is_the_default_and_accepts_colons_in_metric_names():
    assert WriteLimits().name_validation == "legacy"
    labels = (("__name__", "job:up:sum"), ("_private", "x"), ("le", "0.5"))
    assert delivered(decoder().decode(encode_write_request([(labels, [(NOW, 1.0)])]))) == {labels: [NOW]}


@pytest.mark.parametrize("labels", BAD_LEGACY_NAMES + [(("__name__", "http.server.duration"), ("service.name", "é"))])
def test_utf8_scheme_accepts_any_utf8_name(labels):
    utf8 = decoder(limits=WriteLimits(name_validation="utf8"))
    decoded = utf8.decode(encode_write_request([(labels, [(NOW, 1.0)])]))
    assert decoded.problems == [] and delivered(decoded) == {labels: [NOW]}


def test_an_unknown_scheme_is_a_configuration_error():
    with pytest.raises(ValueError, match="legacy, utf8"):
        WriteLimits(name_validation="loose")


# --- series per request ----------------------------------------------------


def test_more_series_than_the_per_request_limit_is_413_before_any_series_is_decoded():
    series = [((("__name__", "up"), ("instance", f"i{i}")), [(NOW, 1.0)]) for i in range(11)]
    limited = decoder(limits=WriteLimits(max_series_per_request=10))
    with pytest.raises(InvalidRequest) as refused:
        limited.decode(encode_write_request(series))
    assert refused.value.status == 413 and "11 series in one request, over the limit of 10" in str(refused.value)
    assert limited.decode(encode_write_request(series[:10])).series == 10
