"""The sample batch (one Kafka message): exact round trips and refusals of what it cannot read."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.wire_bytes import version_1
from detector.wire.batch import MAGIC, READS, VERSION, SampleBatch
from detector.errors import BatchFormatError, HeadroomError
from detector.labels import canonical_bytes

STALE_BITS = 0x7FF0000000000002


def from_bits(*patterns: int) -> np.ndarray:
    return np.array(patterns, dtype=np.uint64).view(np.float64)


def same(a: SampleBatch, b: SampleBatch) -> bool:
    """Equal series tables and columns, values compared by their bits."""
    return (
        a.series_keys == b.series_keys
        and a.series_index.tolist() == b.series_index.tolist()
        and a.timestamps.tolist() == b.timestamps.tolist()
        and a.values.view(np.uint64).tolist() == b.values.view(np.uint64).tolist()
    )


UP = (("__name__", "up"), ("job", "api"))
DEPTH = (("__name__", "queue_depth"), ("queue", "orders"))


def two_series() -> SampleBatch:
    return SampleBatch.from_series([(UP, [(1000, 1.0), (2000, 0.0)]), (DEPTH, [(1500, 42.0)])])


def test_round_trip_keeps_series_timestamps_and_values():
    batch = two_series()
    again = SampleBatch.decode(batch.encode())
    assert same(batch, again)
    assert [again.series_labels(i) for i in range(2)] == [UP, DEPTH]
    assert again.series_index.tolist() == [0, 0, 1]


def test_empty_batch_round_trips():
    batch = SampleBatch.from_series([])
    data = batch.encode()
    assert len(data) == 16  # the header alone
    again = SampleBatch.decode(data)
    assert len(again) == 0 and again.series_keys == []


def test_series_without_samples_round_trips():
    batch = SampleBatch.from_series([(UP, [])])
    again = SampleBatch.decode(batch.encode())
    assert again.series_keys == [canonical_bytes(UP)] and len(again) == 0


def test_nan_payloads_infinities_and_negative_zero_are_bit_exact():
    values = from_bits(STALE_BITS, 0x7FF8000000000000, 0xFFF8000000000123, 0x7FF0000000000001,
                       0x7FF0000000000000, 0xFFF0000000000000, 0x8000000000000000, 0x0000000000000001)
    batch = SampleBatch(
        [canonical_bytes(UP)], np.zeros(len(values), dtype=np.uint32), np.arange(len(values), dtype=np.int64), values
    )
    again = SampleBatch.decode(batch.encode())
    assert again.values.view(np.uint64).tolist() == values.view(np.uint64).tolist()


def test_stale_marker_built_from_python_floats_stays_the_stale_marker():
    stale = struct.unpack("<d", struct.pack("<Q", STALE_BITS))[0]
    batch = SampleBatch.from_series([(UP, [(1000, stale)])])
    assert SampleBatch.decode(batch.encode()).values.view(np.uint64).tolist() == [STALE_BITS]


def test_extreme_timestamps_round_trip():
    stamps = [-(2**63), -1, 0, 2**63 - 1]
    batch = SampleBatch.from_series([(UP, [(t, 1.0) for t in stamps])])
    assert SampleBatch.decode(batch.encode()).timestamps.tolist() == stamps


def test_wire_layout_is_the_documented_one():
    data = SampleBatch.from_series([(UP, [(1000, 1.0)]), (DEPTH, [(1500, 2.0), (2500, 3.0)])]).encode()
    up, depth = canonical_bytes(UP), canonical_bytes(DEPTH)
    assert data[:4] == b"HRSB" and data[4] == 2 and data[5:8] == b"\0\0\0"
    assert struct.unpack_from("<II", data, 8) == (2, 3)
    pos = 16
    for key in (up, depth):
        assert struct.unpack_from("<I", data, pos) == (len(key),) and data[pos + 4 : pos + 4 + len(key)] == key
        pos += 4 + len(key)
    # index steps 0, 1, 0 (series 0, 1, 1); then timestamps; then values
    assert struct.unpack("<3i3q3d", data[pos:]) == (0, 1, 0, 1000, 1500, 2500, 1.0, 2.0, 3.0)


def test_version_1_messages_are_still_read():
    assert READS == (1, 2)
    batch = two_series()
    assert same(SampleBatch.decode(version_1(batch)), batch)  # as receivers before v2 wrote it


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40), st.integers(1, 6))
def test_any_index_order_round_trips(index, n_series):
    """Steps may go down as well as up: samples need not be grouped by series."""
    index = [i % n_series for i in index]
    batch = SampleBatch([canonical_bytes((("__name__", f"s{i}"),)) for i in range(n_series)],
                        np.asarray(index, dtype=np.uint32), np.arange(len(index), dtype=np.int64),
                        np.ones(len(index)))
    assert same(SampleBatch.decode(batch.encode()), batch)


def test_steps_leading_outside_the_table_are_refused():
    data = bytearray(two_series().encode())
    samples_at = len(data) - 20 * 3
    struct.pack_into("<i", data, samples_at + 4, -1)  # series 0, then -1
    assert "outside its table" in decode_error(bytes(data))
    struct.pack_into("<i", data, samples_at + 4, 5)
    assert "outside its table" in decode_error(bytes(data))


# --- refusals ---------------------------------------------------------------------


def decode_error(data: bytes) -> str:
    with pytest.raises(BatchFormatError) as err:
        SampleBatch.decode(data)
    assert isinstance(err.value, HeadroomError)
    return str(err.value)


def test_wrong_magic_is_refused_naming_it():
    data = two_series().encode()
    message = decode_error(b"JUNK" + data[4:])
    assert "not a Headroom sample batch" in message and "JUNK" in message


def test_newer_version_is_refused_saying_what_to_do():
    data = bytearray(two_series().encode())
    data[4] = VERSION + 1
    message = decode_error(bytes(data))
    assert f"version {VERSION + 1}" in message and "upgrade the workers" in message


def test_message_shorter_than_the_header_is_refused():
    assert "too short" in decode_error(MAGIC + bytes([VERSION]))


def test_truncation_at_any_byte_is_refused():
    data = two_series().encode()
    for end in range(len(data)):
        decode_error(data[:end])


def test_truncated_series_table_says_truncated():
    """Minor (message quality): cut inside the only series key, the reader takes a short
    slice for the key and then reports "sample batch holds -23 bytes of samples, expected
    40" - a negative size - instead of saying the series table is truncated."""
    data = SampleBatch.from_series([(UP, [(1000, 1.0), (2000, 0.0)])]).encode()
    message = decode_error(data[: 16 + 4 + 5])
    assert "truncated" in message


def test_samples_region_of_the_wrong_size_is_refused_with_both_sizes():
    data = two_series().encode()
    message = decode_error(data[:-1])
    assert "expected 60" in message
    decode_error(data + b"\0")


def test_sample_pointing_outside_the_series_table_is_refused():
    batch = two_series()
    bad = SampleBatch(batch.series_keys, np.array([0, 0, 2], dtype=np.uint32), batch.timestamps, batch.values)
    assert "outside its table" in decode_error(bad.encode())


# --- property --------------------------------------------------------------------

labels = st.lists(
    st.tuples(st.text(min_size=1, max_size=12), st.text(max_size=12)), max_size=5, unique_by=lambda p: p[0]
).map(lambda pairs: tuple(sorted(pairs)))
samples = st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1)), max_size=8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(labels, samples), max_size=6))
def test_any_batch_round_trips_exactly(series):
    batch = SampleBatch.from_series(
        [(l, [(t, float(from_bits(b)[0])) for t, b in s]) for l, s in series]
    )
    again = SampleBatch.decode(batch.encode())
    assert same(batch, again)
    assert [again.series_labels(i) for i in range(len(series))] == [l for l, _ in series]
    assert again.values.view(np.uint64).tolist() == [b for _, s in series for _, b in s]
