"""A seeded, labelled corpus of machine and service metrics, in NAB's layout.

What Headroom's users send: CPU with daily and weekly cycles, bursty network
throughput, spiky disk writes, heavy-tailed request latency, quantized
temperatures and a request counter (``requests_total``, scored on its rate as
the pipeline does for counters). One seed makes one category
``machine-s<seed>`` of files, each one series every 5 minutes over 14 days:

- one file per *anomaly kind* operators meet (:data:`ANOMALIES`: a level shift
  that persists, a variance change, a slow drift, a stuck value, a daily
  pattern that breaks, a spike, a dropout), on a metric where it happens, with
  one labelled window centered on its onset (NAB's rule: 10% of the file);
- one file per *benign event* (:data:`BENIGN`: a deploy restart, a counter
  reset, a traffic burst that recovers, a new series with 1.5 days of history)
  with no window: any detection there is a false positive;
- every anomaly file also carries a benign event far from its window.

Anomalies and benign events start after NAB's probation (15% of the file) and
after two days, so a daily profile could be learned. Everything is drawn from
``numpy.random.default_rng(seed)``: a seed is the corpus, reproducibly.
Development seeds (:data:`DEV_SEEDS`) are for looking and choosing; held-out
seeds (:data:`HELD_OUT_SEEDS`) are scored once, at the end.

>>> files, windows, events = generate(1)
>>> sorted({f.split("/")[0] for f in files})
['machine-s1']
>>> len([f for f in files if windows[f]]), len([f for f in files if not windows[f]])
(7, 4)
>>> generate(1)[0]["machine-s1/cpu.benign_deploy_restart.csv"] == files["machine-s1/cpu.benign_deploy_restart.csv"]
True
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

STEP_S = 300
DAYS = 14
START = datetime(2026, 1, 5)  # a Monday
DEV_SEEDS = (1, 2, 3)
HELD_OUT_SEEDS = (101, 102, 103)
METRICS = ("cpu", "network", "disk_write", "latency", "temperature", "requests_total")
# anomaly kind -> the metrics it is drawn on (one per seed)
ANOMALIES = {
    "level_shift": ("cpu", "latency"),
    "variance_change": ("network", "latency"),
    "drift": ("temperature", "latency"),
    "stuck": ("temperature", "cpu"),
    "broken_daily": ("cpu", "requests_total"),
    "spike": ("latency", "disk_write"),
    "dropout": ("network", "requests_total"),
}
BENIGN = {
    "deploy_restart": ("cpu", "latency"),
    "counter_reset": ("requests_total",),
    "burst_recover": ("network", "requests_total"),
    "new_series": METRICS,
}


# ---------------------------------------------------------------- normal behaviour

def _daily(t: np.ndarray, peak_hour: float = 14.0) -> np.ndarray:
    """0..1, peaking at ``peak_hour``, low at night."""
    h = (t / 3600.0) % 24.0
    return 0.5 * (1.0 + np.cos(2 * np.pi * (h - peak_hour) / 24.0))


def _weekday(t: np.ndarray, weekend: float) -> np.ndarray:
    day = (t // 86_400) % 7  # START is a Monday
    return np.where(day >= 5, weekend, 1.0)


def _ar1(rng, n: int, phi: float, sd: float) -> np.ndarray:
    e = rng.normal(0.0, sd * np.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def normal_behaviour(metric: str, rng, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expected level, observed values) of one metric; for ``requests_total`` per-interval counts."""
    n = len(t)
    if metric == "cpu":
        level = (15 + rng.uniform(0, 10)) + rng.uniform(20, 40) * _daily(t) * _weekday(t, 0.5)
        return level, np.clip(level + _ar1(rng, n, 0.7, 3.0), 0, 100)
    if metric == "network":
        level = rng.uniform(2e6, 8e6) * (1 + 0.6 * _daily(t, 20.0)) * _weekday(t, 0.8)
        x = level * rng.lognormal(0.0, 0.25, n)
        bursts = rng.random(n) < 3 / 288  # routine short bursts, ~3 a day
        x[bursts] *= rng.uniform(1.5, 3.0, bursts.sum())
        return level, x
    if metric == "disk_write":
        level = np.full(n, rng.uniform(1e6, 4e6))
        x = level * rng.lognormal(0.0, 0.3, n)
        flush = (np.arange(n) % 12) == rng.integers(12)  # hourly checkpoint flush
        x[flush] *= rng.uniform(2.0, 4.0, flush.sum())
        return level, x
    if metric == "latency":
        level = rng.uniform(30, 80) * (1 + 0.3 * _daily(t))
        x = level * rng.lognormal(0.0, 0.2, n)
        tail = rng.random(n) < 0.01  # heavy tail: GC pauses, slow queries
        x[tail] *= 1 + rng.pareto(2.5, tail.sum())
        return level, x
    if metric == "temperature":
        level = rng.uniform(40, 55) + 4 * _daily(t, 15.0)
        return level, np.round((level + _ar1(rng, n, 0.95, 0.6)) * 2) / 2  # sensors report 0.5 °C steps
    if metric == "requests_total":
        rate = rng.uniform(50, 200) * (0.3 + _daily(t)) * _weekday(t, 0.4)
        level = rate * STEP_S
        return level, rng.poisson(level).astype(float)
    raise ValueError(f"unknown metric {metric!r}; known: {METRICS}")


def _bounded(metric: str, x: np.ndarray) -> np.ndarray:
    x = np.maximum(x, 0.0)
    return np.minimum(x, 100.0) if metric == "cpu" else x


# ---------------------------------------------------------------- events

def inject_anomaly(kind: str, metric: str, rng, t, level, x, i0: int) -> np.ndarray:
    """``x`` with an anomaly of ``kind`` starting at row ``i0``."""
    x = x.copy()
    n = len(x)
    mean = float(np.mean(level))
    if kind == "level_shift":
        x[i0:] += rng.uniform(0.4, 0.7) * mean
    elif kind == "variance_change":
        x[i0:] = level[i0:] + rng.uniform(2.5, 4.0) * (x[i0:] - level[i0:])
    elif kind == "drift":  # a leak: +15% to 30% of the mean level over 12 hours, then it stays
        ramp = np.clip(np.arange(n - i0) / 144.0, 0, 1) * rng.uniform(0.15, 0.3) * mean
        x[i0:] += ramp
    elif kind == "stuck":
        x[i0:i0 + int(rng.integers(72, 145))] = x[i0]
    elif kind == "broken_daily":  # the daily pattern stops (a batch job, a region's traffic) for two days
        end = min(n, i0 + 576)
        x[i0:end] = x[i0:end] - level[i0:end] + float(np.min(level[i0 - 288:i0]))
    elif kind == "spike":
        k = int(rng.integers(1, 4))
        x[i0:i0 + k] = level[i0:i0 + k] * rng.uniform(6.0, 10.0)
    elif kind == "dropout":
        x[i0:i0 + int(rng.integers(6, 25))] = 0.0
    else:
        raise ValueError(f"unknown anomaly {kind!r}; known: {sorted(ANOMALIES)}")
    return _bounded(metric, x)


def inject_benign(kind: str, metric: str, rng, level, x, i0: int) -> np.ndarray:
    """``x`` (per-interval counts for counters) with a benign event at row ``i0``; counter resets are applied later."""
    x = x.copy()
    if kind == "deploy_restart":  # two samples down, two warming up, back to normal in 20 minutes
        x[i0:i0 + 2] = level[i0:i0 + 2] * rng.uniform(0.1, 0.4)
        x[i0 + 2:i0 + 4] = x[i0 + 2:i0 + 4] * rng.uniform(1.2, 1.5)
    elif kind == "burst_recover":  # a raised-cosine bump for 30 to 60 minutes
        k = int(rng.integers(6, 13))
        x[i0:i0 + k] *= 1 + rng.uniform(0.6, 1.2) * np.sin(np.pi * (np.arange(k) + 0.5) / k)
    elif kind in ("counter_reset", "new_series"):
        pass
    else:
        raise ValueError(f"unknown benign event {kind!r}; known: {sorted(BENIGN)}")
    return _bounded(metric, x)


def _as_counter(counts: np.ndarray, resets: list[int], rng) -> np.ndarray:
    total = np.cumsum(counts) + rng.integers(1_000, 1_000_000)
    for r in resets:  # the process restarted: the counter starts again from the interval's count
        total[r:] -= total[r - 1]
    return total


# ---------------------------------------------------------------- files

def _stamps(n: int) -> list[str]:
    return [(START + timedelta(seconds=STEP_S * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)]


def _csv(stamps: list[str], x: np.ndarray) -> str:
    return "timestamp,value\n" + "".join(f"{s},{v:.6g}\n" for s, v in zip(stamps, x.tolist()))


def _window(stamps: list[str], i0: int) -> list[str]:
    half = int(0.1 * len(stamps)) // 2
    return [stamps[max(0, i0 - half)], stamps[min(len(stamps) - 1, i0 + half)]]


def generate(seed: int) -> tuple[dict[str, str], dict[str, list], dict[str, dict]]:
    """One seed's corpus: (CSV text per file, label windows per file, events per file)."""
    rng = np.random.default_rng(seed)
    cat = f"machine-s{seed}"
    n = DAYS * 288
    files: dict[str, str] = {}
    windows: dict[str, list] = {}
    events: dict[str, dict] = {}
    lo = max(2 * 288, int(0.15 * n) + 12)
    for kind, metrics in ANOMALIES.items():
        metric = metrics[int(rng.integers(len(metrics)))]
        t = STEP_S * np.arange(n, dtype=float)
        level, x = normal_behaviour(metric, rng, t)
        i0 = int(rng.integers(lo + 288, n - 3 * 288))
        if kind == "broken_daily":
            i0 = i0 - i0 % 288 + 96  # 08:00, when the daily rise should begin
        # a benign event at least 1.5 days from the window, after the probation
        benign = "burst_recover" if metric in ("network", "requests_total") else "deploy_restart"
        far = [i for i in range(lo, n - 20) if abs(i - i0) > 432]
        j0 = int(far[int(rng.integers(len(far)))])
        x = inject_benign(benign, metric, rng, level, x, j0)
        x = inject_anomaly(kind, metric, rng, t, level, x, i0)
        if metric == "requests_total":
            x = _as_counter(x, [], rng)
        rel = f"{cat}/{metric}.{kind}.csv"
        stamps = _stamps(n)
        files[rel], windows[rel] = _csv(stamps, x), [_window(stamps, i0)]
        events[rel] = {"metric": metric, "anomaly": kind, "onset": i0, "benign": [[benign, j0]]}
    for kind, metrics in BENIGN.items():
        metric = metrics[int(rng.integers(len(metrics)))]
        m = int(1.5 * 288) if kind == "new_series" else n
        t = STEP_S * np.arange(m, dtype=float)
        level, x = normal_behaviour(metric, rng, t)
        j0 = int(rng.integers(int(0.15 * m) + 12, m - 20)) if kind == "new_series" else int(rng.integers(lo, n - 20))
        x = inject_benign(kind, metric, rng, level, x, j0)
        if metric == "requests_total":
            x = _as_counter(x, [j0] if kind == "counter_reset" else [], rng)
        rel = f"{cat}/{metric}.benign_{kind}.csv"
        files[rel], windows[rel] = _csv(_stamps(m), x), []
        events[rel] = {"metric": metric, "anomaly": None, "onset": None, "benign": [[kind, j0]]}
    return files, windows, events


def write(root: Path, seeds) -> Path:
    """Write seeds' files under ``root/data``, windows to ``root/labels/windows_dev.json``; returns that file.

    A file whose text is unchanged is not rewritten, so cached scores keyed by
    its modification time stay valid.
    """
    all_windows: dict[str, list] = {}
    all_events: dict[str, dict] = {}
    for seed in seeds:
        files, windows, events = generate(seed)
        for rel, text in files.items():
            path = root / "data" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        all_windows |= windows
        all_events |= events
    labels = root / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    out = labels / f"windows_{'-'.join(map(str, seeds))}.json"
    out.write_text(json.dumps(all_windows, indent=1, sort_keys=True) + "\n")
    (labels / f"events_{'-'.join(map(str, seeds))}.json").write_text(json.dumps(all_events, indent=1, sort_keys=True) + "\n")
    return out


def kind_of(rel: str) -> str:
    """The anomaly kind (or ``benign_<event>``) a file of the corpus holds."""
    return rel.rsplit("/", 1)[-1].split(".")[1]


def is_counter_file(rel: str) -> bool:
    """Whether the file's series is a counter (scored on its rate, as the pipeline does by its name)."""
    return rel.rsplit("/", 1)[-1].startswith("requests_total")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="write the machine corpus in NAB's layout")
    ap.add_argument("root", type=Path)
    ap.add_argument("--seeds", default=",".join(map(str, DEV_SEEDS)))
    a = ap.parse_args()
    print(write(a.root, [int(s) for s in a.seeds.split(",")]))
