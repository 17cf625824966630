"""Shared bench machinery: per-run rows, median tables with same-run ratios, the bench context
(temp dir, one Kafka broker shared by the benches that need it), and worker processes.

Every figure is kept per run; tables show the median and the min/max over the
runs. A ratio is the median of the per-run ratios to the baseline row measured
in the same run (paired, so a noisy moment slows both sides and mostly cancels).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- rows and tables


@dataclass
class Row:
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    baseline: bool = False
    target: float | None = None  # pass if median >= target (or <= when lower_is_better)
    lower_is_better: bool = False
    note: str = ""
    ratio: bool = True  # show a ratio to the table's baseline

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def verdict(self) -> str:
        if self.target is None or not self.values:
            return ""
        ok = self.median <= self.target if self.lower_is_better else self.median >= self.target
        sign = "<" if self.lower_is_better else ">="
        return f"{'PASS' if ok else 'MISS'} ({sign} {fmt(self.target, self.unit)})"


class Table:
    """Rows measured once per run; the first row added with ``baseline=True`` is the baseline."""

    def __init__(self, title: str, caption: str = "") -> None:
        self.title = title
        self.caption = caption
        self.rows: dict[str, Row] = {}

    def row(self, name: str, unit: str, **kw: object) -> Row:
        if name not in self.rows:
            self.rows[name] = Row(name, unit, **kw)  # type: ignore[arg-type]
        return self.rows[name]

    def baseline_for(self, row: Row) -> Row | None:
        """The first baseline row with the same unit (a table may have one in samples/s and one in samples/CPU-s)."""
        return next((r for r in self.rows.values() if r.baseline and r.unit == row.unit), None)

    def ratio(self, row: Row) -> float | None:
        base = self.baseline_for(row)
        if base is None or row.baseline or not row.ratio or not row.values or not base.values:
            return None
        if len(row.values) == len(base.values):
            return statistics.median(v / b for v, b in zip(row.values, base.values) if b)
        return row.median / base.median if base.median else None

    def render(self, console: Console) -> None:
        table = RichTable(title=self.title, caption=self.caption or None, title_justify="left", caption_justify="left")
        for column, justify in (("measurement", "left"), ("median", "right"), ("min", "right"), ("max", "right"),
                                ("unit", "left"), ("× baseline", "right"), ("target", "left"), ("runs", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for row in self.rows.values():
            ratio = self.ratio(row)
            name = f"[bold]{row.name}[/bold] (baseline)" if row.baseline else row.name
            if row.note:
                name += f"\n[dim]{row.note}[/dim]"
            verdict = row.verdict()
            if verdict:
                verdict = f"[green]{verdict}[/green]" if verdict.startswith("PASS") else f"[red]{verdict}[/red]"
            table.add_row(
                name,
                fmt(row.median, row.unit),
                fmt(min(row.values), row.unit) if row.values else "-",
                fmt(max(row.values), row.unit) if row.values else "-",
                row.unit,
                "1" if row.baseline else (f"{ratio:.3g}" if ratio is not None else ""),
                verdict,
                str(len(row.values)),
            )
        console.print(table)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        if self.caption:
            lines += [self.caption, ""]
        lines += ["| measurement | median | min | max | unit | × baseline | target |", "|---|---:|---:|---:|---|---:|---|"]
        for row in self.rows.values():
            ratio = self.ratio(row)
            name = f"{row.name} (baseline)" if row.baseline else row.name
            lines.append(
                f"| {name} | {fmt(row.median, row.unit)} | {fmt(min(row.values), row.unit) if row.values else '-'} | "
                f"{fmt(max(row.values), row.unit) if row.values else '-'} | {row.unit} | "
                f"{'1' if row.baseline else (f'{ratio:.3g}' if ratio is not None else '')} | {row.verdict()} |"
            )
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "rows": [
                {"name": r.name, "unit": r.unit, "values": r.values, "median": r.median, "baseline": r.baseline,
                 "ratio": self.ratio(r), "target": r.target, "verdict": r.verdict()}
                for r in self.rows.values()
            ],
        }


def fmt(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "-"
    if unit.endswith("/s") or unit.endswith("/CPU-s") or unit in ("samples", "series", "count"):
        for div, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(value) >= div:
                return f"{value / div:.3g}{suffix}"
        return f"{value:.3g}"
    if unit == "ms":
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return f"{value:.3g}"


# --------------------------------------------------------------------------- context


class BenchContext:
    """Runs, quick mode, console, one temp dir, and at most one Kafka broker (started on first use).

    ``close()`` stops the broker and removes the temp dir; :func:`bench_context` does it in a finally.
    """

    def __init__(self, runs: int, quick: bool, console: Console, profile: bool = False) -> None:
        self.runs = runs
        self.quick = quick
        self.console = console
        self.profile = profile
        self._tmp = tempfile.TemporaryDirectory(prefix="headroom-bench-")
        self.tmp = Path(self._tmp.name)
        self._broker = None
        self.tables: list[Table] = []
        self.notes: list[str] = []

    def log(self, text: str) -> None:
        self.console.log(text)

    def broker(self):  # -> KafkaBroker
        if self._broker is None:
            from pipelines.stack.kafka import KafkaBroker

            broker = KafkaBroker(self.tmp / "kafka")
            started = time.monotonic()
            self._broker = broker  # registered before start: a half-started broker is still stopped
            broker.start()
            self.log(f"Kafka broker up on {broker.bootstrap} in {time.monotonic() - started:.1f}s")
        return self._broker

    def close(self) -> None:
        try:
            if self._broker is not None:
                self._broker.stop()
                self._broker = None
        finally:
            self._tmp.cleanup()


@contextmanager
def bench_context(runs: int, quick: bool, console: Console, profile: bool = False) -> Iterator[BenchContext]:
    ctx = BenchContext(runs, quick, console, profile)
    try:
        yield ctx
    finally:
        ctx.close()


# --------------------------------------------------------------------------- processes


class WorkerProcess:
    """``python -m pipelines.cli worker`` configured by HEADROOM_* variables, as a user runs it."""

    def __init__(self, bootstrap: str, run_dir: Path, *, app_id: str, samples_topic: str, rule_files: list[str],
                 partitions: int, extra_env: Mapping[str, str] | None = None, profile_to: Path | None = None) -> None:
        from pipelines.stack.process import free_port

        self.run_dir = run_dir
        # Under cProfile, the stats are written when the worker exits (SIGTERM: Faust shuts down cleanly).
        self.argv = [sys.executable, "-m", "pipelines.cli", "worker"]
        if profile_to is not None:
            self.argv = [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", "pipelines.cli", "worker"]
        self.port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            HEADROOM_KAFKA_BOOTSTRAP=bootstrap,
            HEADROOM_APP_ID=app_id,
            HEADROOM_SAMPLES_TOPIC=samples_topic,
            HEADROOM_ALERTS_TOPIC=f"{app_id}-alerts",
            HEADROOM_STATE_TOPIC=f"{app_id}-state",
            # Every topic this worker reads or writes is its own: another pipeline on the broker
            # (a LocalPipeline, an earlier run) must not feed it (the partials topic follows app_id).
            HEADROOM_GLOBAL_SAMPLES_TOPIC=f"{app_id}-samples-global",
            HEADROOM_METADATA_TOPIC=f"{app_id}-metadata",
            HEADROOM_SCORES_TOPIC=f"{app_id}-scores",
            HEADROOM_FORECASTS_TOPIC=f"{app_id}-forecasts",
            HEADROOM_PARTITIONS=str(partitions),
            HEADROOM_RULE_FILES=json.dumps(rule_files),
            HEADROOM_WORKER_WEB_PORT=str(self.port),
            HEADROOM_DATA_DIR=str(run_dir / "worker-data"),
        )
        self.env.update(extra_env or {})
        self.pid: int | None = None
        self.log_file = run_dir / "worker.log"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self, timeout: float = 60.0) -> None:
        from pipelines.stack.process import StackError, log_tail, start_process

        self.run_dir.mkdir(parents=True, exist_ok=True)
        proc = start_process(self.argv, self.log_file, cwd=REPO, env=self.env)
        self.pid = proc.pid
        self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"worker exited with {proc.returncode}; log ends:\n{log_tail(self.log_file)}")
            if scrape(self.metrics_url) is not None:
                return
            time.sleep(0.1)
        raise StackError(f"worker /metrics not answering; log ends:\n{log_tail(self.log_file)}")

    def stop(self) -> None:
        from pipelines.stack.process import stop_pid

        if self.pid is not None:
            stop_pid(self.pid, grace=15.0)
            self._proc.wait()
            self.pid = None


_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(url: str, timeout: float = 1.0) -> dict[str, float] | None:
    """A /metrics page as {name{labels}: value}; None if it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        m = _METRIC_LINE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --------------------------------------------------------------------------- rules


def runbook_rules(tmp: Path) -> tuple[list[str], str]:
    """The rule files to use for the runbook's 7 rules, and a note saying what was used.

    If the pack does not load (rate()/histogram_quantile() missing), the rules
    that do compile are written to a temp file and used instead, and the note says so.
    """
    import yaml

    from detector.errors import RuleError
    from detector.promql import UnsupportedExpression, compile_expr
    from detector.rules import load_rule_files
    from detector.rules.files import resolve_rule_file

    try:
        groups = load_rule_files(["backpressure"])
        return ["backpressure"], f"rule pack 'backpressure': all {sum(len(g.rules) for g in groups)} runbook rules"
    except RuleError as exc:
        document = yaml.safe_load(resolve_rule_file("backpressure").read_text())
        kept, dropped = [], []
        for group in document["groups"]:
            rules = []
            for rule in group["rules"]:
                try:
                    compile_expr(rule["expr"])
                    rules.append(rule)
                except UnsupportedExpression:
                    dropped.append(rule.get("alert") or rule.get("record"))
            group["rules"] = rules
            kept += [r["alert"] for r in rules]
        path = tmp / "backpressure-subset.yml"
        path.write_text(yaml.safe_dump(document))
        load_rule_files([path])  # must load now
        return [str(path)], (f"rule pack 'backpressure' did not load ({len(exc.problems)} problem(s)); "
                             f"using the {len(kept)} rules that do ({', '.join(kept)}); left out: {', '.join(dropped)}")


def load_groups(files: list[str], **kw: object):
    from detector.rules import load_rule_files

    return load_rule_files(files, **kw)


def profile_call(console: Console, title: str, fn, top: int = 18) -> None:
    """Run ``fn()`` under cProfile and print the top functions by own time and by cumulative time."""
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    print_profile(console, title, profiler, top)


def print_profile(console: Console, title: str, source, top: int = 18) -> None:
    """Print cProfile stats (a Profile or a stats file) by own time and by cumulative time."""
    import io
    import pstats

    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(str(source) if isinstance(source, Path) else source, stream=out)
        stats.strip_dirs().sort_stats(order)
        stats.print_stats(top)
        text = out.getvalue()
        body = text[text.find("   ncalls"):] if "   ncalls" in text else text
        console.rule(f"cProfile: {title}, by {order}")
        console.print(body.rstrip(), markup=False, highlight=False)


class PercentileTable:
    """Latency distributions pooled over all runs: one row per quantity, columns n, p50, p90, p99, max."""

    QUANTILES = (50, 90, 99)

    def __init__(self, title: str, caption: str = "") -> None:
        self.title = title
        self.caption = caption
        self.rows: dict[str, tuple[list[float], float | None]] = {}

    def add(self, name: str, values_ms: list[float], target_p99: float | None = None) -> None:
        self.rows[name] = (list(values_ms), target_p99)

    def _cells(self, values: list[float], target: float | None) -> list[str]:
        cells = [str(len(values))] + [fmt(percentile(values, q), "ms") for q in self.QUANTILES]
        cells.append(fmt(max(values), "ms") if values else "-")
        if target is not None and values:
            p99 = percentile(values, 99)
            cells.append(f"{'PASS' if p99 < target else 'MISS'} (p99 < {target:g} ms)")
        else:
            cells.append("")
        return cells

    def render(self, console: Console) -> None:
        table = RichTable(title=self.title, caption=self.caption or None, title_justify="left", caption_justify="left")
        table.add_column("measurement (ms)")
        for column in ("n", *(f"p{q}" for q in self.QUANTILES), "max"):
            table.add_column(column, justify="right")
        table.add_column("target")
        for name, (values, target) in self.rows.items():
            cells = self._cells(values, target)
            if cells[-1]:
                cells[-1] = f"[green]{cells[-1]}[/green]" if cells[-1].startswith("PASS") else f"[red]{cells[-1]}[/red]"
            table.add_row(name, *cells)
        console.print(table)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        if self.caption:
            lines += [self.caption, ""]
        lines += ["| measurement (ms) | n | " + " | ".join(f"p{q}" for q in self.QUANTILES) + " | max | target |",
                  "|---|---:|" + "---:|" * len(self.QUANTILES) + "---:|---|"]
        for name, (values, target) in self.rows.items():
            lines.append(f"| {name} | " + " | ".join(self._cells(values, target)) + " |")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {"title": self.title, "rows": [
            {"name": name, "values_ms": values, **{f"p{q}": percentile(values, q) for q in self.QUANTILES}}
            for name, (values, _) in self.rows.items()]}
