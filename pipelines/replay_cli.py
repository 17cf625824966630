"""``headroom replay`` and ``headroom record``: recorded streams in, event-time results out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from detector.anomaly.catalog import ModelCatalog
from detector.forecast.spec import ForecastConfig
from detector.errors import HeadroomError
from detector.labels import DEFAULT_PARTITION_BY
from detector.wire.openmetrics import OpenMetricsError
from detector.replay import Replay, read_openmetrics
from detector.rules import load_rule_files
from pipelines.settings import Settings

console = Console(stderr=True)


@click.command("replay")
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rules", "rule_files", multiple=True, required=True, help="Rule file or pack name; repeatable.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON lines, one per event.")
@click.option("--partitions", type=int, default=None, help="Partitions to emulate (HEADROOM_PARTITIONS).")
@click.option("--scores", "score_mode", type=click.Choice(["above", "all", "none"]), default="above", show_default=True,
              help="Anomaly scores to write: those at or above the threshold, all, or none (no scoring).")
@click.option("--no-forecasts", is_flag=True, help="Skip saturation forecasts.")
@click.option("--models", "models_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Anomaly model per series selector, YAML (HEADROOM_MODELS_FILE); default: the default model for all.")
@click.option("--forecasts", "forecasts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Bounded series and warning settings, YAML (HEADROOM_FORECASTS_FILE); default: the built-in specs.")
def replay(recording: Path, rule_files: tuple[str, ...], out_path: Path, partitions: int | None, score_mode: str, no_forecasts: bool,
           models_file: Path | None, forecasts_file: Path | None) -> None:
    """Run a recording (OpenMetrics with timestamps) through rules, anomaly scores and forecasts.

    Writes one JSON object per event, each with its event time and labels:
    alert state changes (rules, anomalies, early warnings), anomaly scores and
    forecasts (at most one per series per evaluation interval, when the
    estimate changes). Same input, same output.
    """
    settings = Settings(**({"partitions": partitions} if partitions else {}))
    try:
        groups = load_rule_files(
            rule_files,
            default_interval_ms=settings.evaluation_interval_ms,
            external_labels=settings.external_labels,
            external_url=settings.external_url,
        )
        models = ModelCatalog.load(models_file) if models_file is not None else settings.model_catalog()
        forecast_config = ForecastConfig.load(forecasts_file) if forecasts_file is not None else settings.forecast_config()
        with console.status(f"reading {recording}..."):
            with recording.open() as fd:
                samples = read_openmetrics(fd)
    except (HeadroomError, OpenMetricsError) as exc:
        console.print(f"[red]{exc}[/red]")
        sys.exit(2)
    engine_options = {"lookback_ms": settings.lookback_ms, "resend_delay_ms": settings.resend_delay_ms,
                      **settings.engine_limits()}
    runner = Replay(
        groups,
        partitions=settings.partitions,
        # Replay places groups as the global lane does (no stages): by target unless set.
        partition_by=settings.partition_by if settings.partition_by is not None else DEFAULT_PARTITION_BY,
        engine_options=engine_options,
        scores=score_mode != "none",
        forecasts=not no_forecasts,
        models=models,
        forecast_config=forecast_config,
        **({"score_threshold": 0.0} if score_mode == "all" else {}),
    )
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"), TimeRemainingColumn())
    written = 0
    with Progress(*columns, console=console, transient=True) as progress, out_path.open("w") as out:
        task = progress.add_task("replay", total=len(samples))
        for event in runner.run(samples, progress=lambda n: progress.advance(task, n)):
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            written += 1
    console.print(f"{len(samples)} samples of {len(samples.labels)} series, {written} events -> {out_path}")
    for line in runner.limits.describe():
        console.print(f"[yellow]limit: {line}[/yellow]")


@click.command("record")
@click.argument("out_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scenario", default="backpressure", show_default=True, help="Simulator scenario: backpressure, calm, breaker, ramp-{queue,channel,permits}-{5,15,30,60}m, benign-day[-2|-3].")
@click.option("--minutes", type=float, default=30.0, show_default=True, help="Event time to record.")
@click.option("--step", type=float, default=15.0, show_default=True, help="Seconds between scrapes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start", "start_s", type=float, default=1_700_000_000.0, show_default=True, help="Event time of the first scrape, Unix seconds.")
def record(out_path: Path, scenario: str, minutes: float, step: float, seed: int, start_s: float) -> None:
    """Record the runbook simulator to OpenMetrics with timestamps, for `headroom replay`."""
    from simulator.runbook import RunbookSimulator
    from simulator.serve import render_openmetrics

    start_ms = int(start_s * 1000)
    sim = RunbookSimulator(scenario=scenario, seed=seed, start_ms=start_ms)
    steps = int(minutes * 60 / step) + 1
    scrapes = ((start_ms + i * int(step * 1000), sim.sample(start_ms + i * int(step * 1000))) for i in range(steps))
    out_path.write_text(render_openmetrics(scrapes))
    console.print(f"{steps} scrapes of {sim.series_count()} series -> {out_path}")
