"""The machine corpus generator (bench/machine_corpus.py): labelled, reproducible, with benign events."""

import csv
import io
import json

import numpy as np
import pytest

from bench import machine_corpus as mc
from bench import nab_loco


def _values(text: str) -> tuple[list[str], np.ndarray]:
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r["timestamp"] for r in rows], np.array([float(r["value"]) for r in rows])


@pytest.mark.parametrize("seed", [1, 101])
def test_windows_lie_inside_the_series_after_probation_around_the_onset(seed):
    files, windows, events = mc.generate(seed)
    assert {e["anomaly"] for e in events.values()} - {None} == set(mc.ANOMALIES)
    for rel, wins in windows.items():
        stamps, x = _values(files[rel])
        assert np.isfinite(x).all()
        probation = int(0.15 * len(stamps))
        onset = events[rel]["onset"]
        if onset is None:
            assert wins == []
            continue
        (a, b), = wins
        lo, hi = stamps.index(a), stamps.index(b)
        assert probation < lo <= onset <= hi < len(stamps)
        for kind, j in events[rel]["benign"]:  # the benign event is far outside the window
            assert probation < j and (j < lo or j > hi)


def test_a_seed_is_reproducible_and_seeds_differ():
    assert mc.generate(7) == mc.generate(7)
    a, b = mc.generate(7)[0], mc.generate(8)[0]
    assert [a[k] for k in sorted(a)] != [b[k] for k in sorted(b)]


def test_benign_events_are_present():
    for seed in (1, 2, 3):
        files, windows, events = mc.generate(seed)
        benign = {rel: e["benign"][0] for rel, e in events.items() if e["anomaly"] is None}
        assert sorted(kind for kind, _ in benign.values()) == sorted(mc.BENIGN)
        for rel, (kind, j) in benign.items():
            _, x = _values(files[rel])
            if kind == "counter_reset":  # the counter drops once, where the event says
                assert rel.split("/")[1].startswith("requests_total")
                assert np.nonzero(np.diff(x) < 0)[0].tolist() == [j - 1]
            elif kind == "new_series":
                assert len(x) < 2 * 288
            elif kind == "deploy_restart":
                assert x[j] < 0.5 * np.median(x[j - 12:j])
            elif kind == "burst_recover":
                rate = np.diff(x) if rel.split("/")[1].startswith("requests_total") else x
                assert rate[j - 1:j + 12].max() > 1.4 * np.median(rate[j - 13:j - 1])


def test_anomalies_change_what_they_say():
    files, windows, events = mc.generate(2)
    for rel, e in events.items():
        if e["anomaly"] is None:
            continue
        _, x = _values(files[rel])
        if rel.split("/")[1].startswith("requests_total"):
            x = np.r_[0.0, np.diff(x)]
        i = e["onset"]
        if e["anomaly"] == "stuck":
            assert np.all(x[i:i + 72] == x[i])
        elif e["anomaly"] == "dropout":
            assert np.all(x[i:i + 6] == 0)
        elif e["anomaly"] == "level_shift":
            assert np.mean(x[i:i + 576]) > 1.3 * np.mean(x[i - 576:i])
        elif e["anomaly"] == "spike":
            assert x[i] > 3 * np.median(x[i - 288:i])


def test_written_corpus_is_scored_by_the_nab_scorer(tmp_path):
    windows_file = mc.write(tmp_path, [1])
    windows = json.loads(windows_file.read_text())
    nab = nab_loco.load_scorer(nab_loco.NAB)
    geoms = nab.load_geometry(str(tmp_path), str(windows_file), sorted(windows))
    assert sum(g.n_windows for g in geoms.values()) == len(mc.ANOMALIES)
    assert mc.kind_of("machine-s1/cpu.benign_deploy_restart.csv") == "benign_deploy_restart"
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*.csv")}
    mc.write(tmp_path, [1])  # unchanged files are not rewritten (the score cache keys on them)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*.csv")} == before
