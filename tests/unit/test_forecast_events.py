"""Forecast events: the estimates themselves, once per evaluation slot, only when they read differently."""

from __future__ import annotations

import json

import numpy as np

from detector.wire.batch import SampleBatch
from detector.forecast import ForecastEngine
from detector.forecast.warning import humanize

T0_MS = 1_700_000_000_000
SCRAPE_MS = 15_000
DEPTH = (("__name__", "pgmq_queue_depth"), ("queue_name", "orders"))
MAX_DEPTH = (("__name__", "pgmq_queue_max_depth"), ("queue_name", "orders"))
SATURATION = (("__name__", "worker_dispatch_channel_saturation"), ("worker_id", "w1"))


def forecasts(series: dict, steps: int, engine: ForecastEngine | None = None, scrape_ms: int = SCRAPE_MS) -> list:
    """Feed ``series`` (labels -> f(step) -> value) one scrape per call; the Forecast events."""
    engine = engine or ForecastEngine()
    table = list(series)
    out: list = []
    for k in range(steps):
        t = T0_MS + k * scrape_ms
        engine.ingest(table, range(len(table)), [t] * len(table), [float(series[s](k)) for s in table], out)
    return out


def shown(f) -> tuple:
    return f.state, humanize(f.eta_s), humanize(f.eta_low_s, "floor"), humanize(f.eta_high_s, "ceil")


def turning(k: int) -> float:
    """Flat for an hour, up for 40 minutes, then down."""
    rng = np.random.default_rng(k)
    v = 0.2 + 0.017 * min(max(k - 240, 0), 160) / 4 - 0.02 * max(k - 400, 0) / 4
    return float(np.clip(v + rng.normal(0, 0.02), 0, 1))


def test_a_ramp_emits_an_event_only_when_its_estimate_reads_differently():
    events = forecasts({DEPTH: lambda k: 6000.0 + 40 * k + (-1) ** k * 30, MAX_DEPTH: lambda k: 10000.0}, 90)
    assert len(events) >= 10
    assert all(f.labels == DEPTH and f.bound_name == "pgmq_queue_max_depth" and f.bound == 10000.0 for f in events)
    # never two in a row that a person would read the same, never two in one evaluation slot
    assert all(shown(a) != shown(b) for a, b in zip(events, events[1:]))
    assert len({f.t_ms // SCRAPE_MS for f in events}) == len(events)
    # the ETA shrinks as the queue fills, with its interval around it
    assert events[-1].eta_s < events[0].eta_s
    assert all(f.eta_low_s <= f.eta_s <= f.eta_high_s for f in events)
    assert [f.state for f in events].index("firing") > [f.state for f in events].index("pending")


def test_a_ramp_evaluated_90_times_emits_far_fewer_events():
    """The change rule is what keeps the topic small: a 22-minute ramp is evaluated 90 times."""
    events = forecasts({DEPTH: lambda k: 6000.0 + 40 * k, MAX_DEPTH: lambda k: 10000.0}, 90)
    assert 10 <= len(events) <= 60


def test_a_flat_series_and_a_bound_never_seen_emit_nothing():
    rng = np.random.default_rng(1)
    flat = {SATURATION: lambda k: 0.3 + rng.normal(0, 0.01)}
    assert forecasts(flat, 400) == []
    assert forecasts({DEPTH: lambda k: 6000.0 + 40 * k}, 90) == []  # no max depth: no estimate


def test_a_ramp_that_turns_says_once_that_it_no_longer_heads_to_the_bound():
    events = forecasts({SATURATION: turning}, 640)
    assert events and events[0].heading and events[0].direction == "up" and events[0].bound == 1.0
    stopped = [f for f in events if not f.heading]
    assert stopped, "the turn must be reported"
    last = events[-1]
    assert not last.heading and last.state == "inactive"
    d = last.to_dict()
    assert d["eta_seconds"] is None and d["eta_low_seconds"] is None and d["eta_high_seconds"] is None


def test_forecast_events_are_strict_json_with_the_series_labels():
    events = forecasts({SATURATION: turning}, 640)
    for f in events:
        line = json.loads(json.dumps(f.to_dict(), allow_nan=False))
        assert line["kind"] == "forecast" and line["labels"] == dict(SATURATION) and line["t"] == f.t_ms
        assert line["state"] in ("inactive", "pending", "firing") and line["value"] == f.value
    assert len({f.key for f in events}) == 1


def test_forecast_events_do_not_depend_on_how_the_stream_is_batched():
    samples = []
    for k in range(640):
        t = T0_MS + k * SCRAPE_MS + (k * 37) % 900  # jittered scrapes
        samples += [(SATURATION, t, turning(k)), (DEPTH, t, 2000.0 + 25 * k), (MAX_DEPTH, t, 10000.0)]

    def replay(per_message: int) -> list:
        engine, out = ForecastEngine(), []
        for lo in range(0, len(samples), per_message):
            chunk = samples[lo:lo + per_message]
            table = sorted({labels for labels, _, _ in chunk})
            batch = SampleBatch.from_series((s, [(t, v) for lab, t, v in chunk if lab == s]) for s in table)
            engine.ingest_batch(SampleBatch.decode(batch.encode()), out)
        return sorted((f.t_ms, f.labels, f.to_dict()["eta_seconds"], f.state) for f in out)

    one = replay(1)
    assert len(one) >= 10
    assert replay(3 * 40) == one


# --- rounding an estimate as people read it ------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from detector.forecast.warning import round_duration, round_durations  # noqa: E402

_seconds = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1, 90_000),
                     st.sampled_from([0.0, 9.5, 10.0, 59.999999999, 60.0, 779.9999999999, 780.0000000000017, 86400.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_seconds, _seconds, _seconds), min_size=1, max_size=20),
       st.lists(st.sampled_from(["round", "floor", "ceil"]), min_size=3, max_size=3))
def test_rounding_rows_at_once_equals_rounding_each(triples, modes):
    """One pass over an ETA and its interval gives, bit for bit, what rounding each with its mode gives."""
    values = np.array(triples).T
    together = round_durations(values, modes)
    for row, mode in zip(range(3), modes):
        alone = round_duration(values[row], mode)
        assert np.array_equal(together[row], alone, equal_nan=True)


def test_replay_takes_a_forecasts_file(tmp_path):
    """headroom replay --forecasts: the file's specs decide which series are forecast."""
    from click.testing import CliRunner

    from pipelines.replay_cli import replay

    lines = [f'node_disk_used_bytes{{instance="db"}} {60e9 + 1e9 * i / 4:.0f} {i * 15}' for i in range(120)]
    lines += [f'node_disk_size_bytes{{instance="db"}} 100000000000 {i * 15}' for i in range(120)]
    (tmp_path / "rec.om").write_text("\n".join(sorted(lines, key=lambda s: int(s.rsplit(" ", 1)[1]))) + "\n# EOF\n")
    (tmp_path / "forecasts.yml").write_text("forecasts:\n  - {selector: node_disk_used_bytes, bound: node_disk_size_bytes}\n")
    found = {}
    for name, extra in (("default", []), ("file", ["--forecasts", str(tmp_path / "forecasts.yml")])):
        out = tmp_path / f"{name}.jsonl"
        result = CliRunner().invoke(replay, [str(tmp_path / "rec.om"), "--rules", "backpressure", "--out", str(out),
                                             "--scores", "none", *extra])
        assert result.exit_code == 0, result.output
        found[name] = [e for e in map(json.loads, out.read_text().splitlines()) if e["kind"] == "forecast"]
    assert found["default"] == [] and found["file"]
    assert {e["labels"]["__name__"] for e in found["file"]} == {"node_disk_used_bytes"}
