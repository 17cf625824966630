"""``headroom demo``: the whole pipeline on this machine, with alerts shown live.

Starts a Kafka broker, a worker and a receiver, pushes the runbook simulator's
scripted incident through remote-write at ``speed`` times real time, and shows
every alert state change read back from the alerts topic, and the saturation
forecasts that head to their bound from the forecasts topic. Everything it
started is stopped on exit, after ``duration`` or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from detector.forecast.warning import bound_text, series_text, warning_text
from simulator.runbook import RunbookSimulator
from detector.output.templates import humanize
from pipelines.local import LocalPipeline
from simulator.serve import push_remote_write
from pipelines.stack.kafka import KafkaBroker

STATE_STYLE = {"firing": "bold red", "pending": "yellow", "inactive": "green"}


async def run_demo(*, duration: float, speed: float, scenario: str, rule_files: tuple[str, ...], console: Console, run_dir: Path = Path("var/demo")) -> int:
    shutil.rmtree(run_dir, ignore_errors=True)
    broker = KafkaBroker(run_dir / "kafka")
    pipeline: LocalPipeline | None = None
    try:
        with console.status("starting Kafka (first run resolves its jars from Maven Central)..."):
            await asyncio.to_thread(broker.start)
        # The replay runs event time `speed` times faster than the clock, so
        # ahead of it: the receiver's window is opened that far for the demo.
        ahead = {"HEADROOM_MAX_SAMPLE_AHEAD": f"{int(duration * speed) + 300}s"}
        pipeline = LocalPipeline(broker.bootstrap, run_dir, rule_files=rule_files, app_id="headroom-demo", extra_env=ahead)
        with console.status("starting the worker and the receiver..."):
            await asyncio.to_thread(pipeline.start)
        console.print(f"Kafka {broker.bootstrap}, receiver {pipeline.write_url}, logs in {run_dir}/")
        return await _show(pipeline, duration=duration, speed=speed, scenario=scenario, console=console)
    finally:
        with console.status("stopping everything the demo started..."):
            if pipeline is not None:
                await asyncio.to_thread(pipeline.stop)
            await asyncio.to_thread(broker.stop)


async def _show(pipeline: LocalPipeline, *, duration: float, speed: float, scenario: str, console: Console) -> int:
    start_ms = int(time.time() * 1000)
    sim = RunbookSimulator(scenario=scenario, start_ms=start_ms)
    consumer = AIOKafkaConsumer(pipeline.alerts_topic, pipeline.forecasts_topic, bootstrap_servers=pipeline.bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    alerts: dict[str, dict] = {}
    forecasts: dict[str, dict] = {}  # series -> its newest forecast that heads to the bound
    history: list[str] = []
    push = asyncio.create_task(
        push_remote_write(sim, pipeline.write_url, start_ms=start_ms, step_ms=5000, speed=speed, duration_s=duration * speed)
    )
    started = time.monotonic()
    try:
        with Live(_render(alerts, forecasts, history, 0.0, 0.0, sim.series_count()), console=console, refresh_per_second=4) as live:
            while not push.done():
                batch = await consumer.getmany(timeout_ms=250)
                for tp, records in batch.items():
                    for record in records:
                        event = json.loads(record.value)
                        if tp.topic == pipeline.forecasts_topic:
                            _keep_forecast(forecasts, event)
                            continue
                        alerts[event["fingerprint"]] = event
                        history.append(_history_line(event, start_ms))
                elapsed = time.monotonic() - started
                live.update(_render(alerts, forecasts, history, elapsed, elapsed * speed, sim.series_count()))
        stats = push.result()
    except (KeyboardInterrupt, asyncio.CancelledError):
        push.cancel()
        stats = None
    finally:
        await consumer.stop()
    fired = sum(1 for line in history if "-> firing" in line)
    console.print(f"\n{fired} alert(s) fired, {len(history)} state change(s); pushed: {stats}")
    return 0 if fired else 1


def _history_line(event: dict, start_ms: int) -> str:
    at = (event["eval_time"] - start_ms) / 1000
    labels = ", ".join(f"{k}={v}" for k, v in event["labels"].items() if k not in ("alertname", "severity"))
    return f"+{at:6.0f}s  {event['rule']} {{{labels}}}  {event['previous']} -> {event['state']}"


def _keep_forecast(forecasts: dict[str, dict], event: dict) -> None:
    """Keep a series' newest forecast while it heads to its bound; forget it when it stops."""
    key = json.dumps(event["labels"], sort_keys=True)
    if event["eta_seconds"] is None and event["state"] == "inactive":
        forecasts.pop(key, None)
    else:
        forecasts[key] = event


def _forecast_text(event: dict) -> str:
    labels = tuple(sorted(event["labels"].items()))
    if event["eta_seconds"] is None:
        return f"{series_text(labels)}: no longer heading to {bound_text(event['bound'], event['bound_name'])}"
    high = event["eta_high_seconds"]
    return warning_text(labels, event["bound"], event["bound_name"], event["direction"], event["eta_seconds"],
                        event["eta_low_seconds"], math.inf if high is None else high)


def _render(alerts: dict[str, dict], forecasts: dict[str, dict], history: list[str], wall: float, event: float,
            series: int) -> Group:
    table = Table(title=f"Headroom alerts  (wall {wall:5.0f}s, event time +{event:6.0f}s, {series} series)", expand=True)
    for column in ("alert", "labels", "state", "value", "summary"):
        table.add_column(column)
    order = {"firing": 0, "pending": 1, "inactive": 2}
    for event_data in sorted(alerts.values(), key=lambda e: (order.get(e["state"], 3), e["rule"], e["fingerprint"])):
        labels = ", ".join(f"{k}={v}" for k, v in event_data["labels"].items() if k not in ("alertname", "job"))
        state = event_data["state"]
        value = humanize(float(event_data["value"]))
        table.add_row(event_data["rule"], labels, Text(state, style=STATE_STYLE.get(state, "")), value, event_data["annotations"].get("summary", ""))
    soonest = sorted(forecasts.values(), key=lambda f: math.inf if f["eta_seconds"] is None else f["eta_seconds"])[:6]
    ahead = Table(title="Saturation forecasts (soonest first)", expand=True)
    for column in ("forecast", "warning"):
        ahead.add_column(column)
    for f in soonest:
        ahead.add_row(_forecast_text(f), Text(f["state"], style=STATE_STYLE.get(f["state"], "")))
    return Group(table, ahead, Text("\n".join(history[-8:]), style="dim"))
