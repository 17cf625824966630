"""A worker killed while its alerts fire: its partitions move, and no alert state is lost (issue 9, item 3).

Two worker processes in one group over 4 partitions, ``up == 0`` with ``for: 2m``;
eight targets go down, and one worker gets SIGKILL while their alerts are pending,
firing, or firing with a snapshot after every message. The survivor takes its
partitions over from their snapshots and re-reads what came after them: every
target's alert goes pending once, fires once and resolves once (24 events), with
nothing pending a second time and nothing written twice. The data is on event
time (2023), so no wall clock enters the alerts and the run takes about a minute.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest

from detector.labels import partition_for
from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from pipelines.local import LocalPipeline
from pipelines.stack.kafka import consumer_group_members as group_members
from pipelines.stack.process import free_port, kill_group as kill, start_process
from tests.support import OLD_TIMESTAMPS_ENV, read_alerts, write_rules

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BASE = 1_700_000_000_000 // 15_000 * 15_000
STEP = 15_000
PARTITIONS = 4
DOWN, UP_AGAIN, LAST = 4, 40, 50  # steps: targets down from DOWN, back at UP_AGAIN
FOR_STEPS = 8  # for: 2m at 15 s


def targets() -> list[tuple]:
    """Eight targets, two in each partition, so both workers own firing alerts."""
    by_partition: dict[int, list] = defaultdict(list)
    i = 0
    while min((len(by_partition[p]) for p in range(PARTITIONS)), default=0) < 2:
        labels = (("__name__", "up"), ("instance", f"host-{i}:9100"), ("job", "node"))
        if len(by_partition[partition_for(labels, PARTITIONS)]) < 2:
            by_partition[partition_for(labels, PARTITIONS)].append(labels)
        i += 1
    return [labels for p in range(PARTITIONS) for labels in by_partition[p]]


TARGETS = targets()


def up_value(step: int) -> float:
    return 0.0 if DOWN <= step < UP_AGAIN else 1.0


async def post_steps(session: aiohttp.ClientSession, url: str, steps: range, per_request: int = 4) -> None:
    for start in range(steps.start, steps.stop, per_request):
        chunk = range(start, min(start + per_request, steps.stop))
        body = encode_write_request([(t, [(BASE + k * STEP, up_value(k)) for k in chunk]) for t in TARGETS])
        async with session.post(url, data=body, headers=REMOTE_WRITE_HEADERS) as answer:
            assert answer.status == 204


async def batches_consumed(session: aiohttp.ClientSession, port: int) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
        text = await answer.text()
    found = re.search(r"^headroom_worker_batches_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def metric(session: aiohttp.ClientSession, port: int, name: str) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
        text = await answer.text()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def start_second_worker(pipeline: LocalPipeline, run_dir: Path) -> tuple[int, int]:
    port = free_port()
    env = pipeline.env() | {"HEADROOM_WORKER_WEB_PORT": str(port), "HEADROOM_DATA_DIR": str(run_dir / "worker-b-data")}
    proc = start_process([sys.executable, "-m", "pipelines.cli", "worker"], run_dir / "worker-b.log", cwd=REPO, env=env)
    return proc.pid, port


def events_by_target(events: list[dict]) -> dict[str, list[tuple[str, str, int]]]:
    out: dict[str, list] = defaultdict(list)
    for e in events:
        out[e["labels"]["instance"]].append((e["previous"], e["state"], (e["eval_time"] - BASE) // STEP))
    return out


# When the worker dies: its alerts pending (killed before they fire); firing; firing while it
# snapshots after every message (a kill during a snapshot's write or commit). With the 10 m
# interval only the prompt first snapshots and those of rebalances exist, so the takeover
# re-reads everything after them, pending and firing included.
MOMENTS = {
    "pending": (range(0, DOWN + 4), "pending", "10m"),
    "firing": (range(0, 20), "firing", "10m"),
    "snapshotting": (range(0, 20), "firing", "10ms"),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
async def test_a_killed_worker_forgets_no_alert_state(kafka, tmp_path, app_id, moment):
    first_steps, kill_when, snapshot_interval = MOMENTS[moment]
    rules = write_rules(tmp_path, [{"alert": "Down", "expr": "up == 0", "for": "2m"}], interval="15s")
    run_dir = tmp_path / "run"
    pipeline = LocalPipeline(kafka.bootstrap, run_dir, rule_files=(str(rules),), app_id=app_id, partitions=PARTITIONS,
                             extra_env={
                                 "HEADROOM_ANOMALY_SCORES": "false", "HEADROOM_FORECASTS": "false",
                                 "HEADROOM_SNAPSHOT_INTERVAL": snapshot_interval,
                                 "HEADROOM_SNAPSHOT_CPU_SHARE": "0",  # snapshots on the interval alone
                                 "HEADROOM_SESSION_TIMEOUT": "6s", "HEADROOM_HEARTBEAT_INTERVAL": "1s",
                                 **OLD_TIMESTAMPS_ENV,
                             })
    await asyncio.to_thread(pipeline.start)
    b_pid = None
    try:
        b_pid, b_port = start_second_worker(pipeline, run_dir)
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(90):
                while await group_members(kafka.bootstrap, app_id) != 2:
                    await asyncio.sleep(0.5)
            await post_steps(session, pipeline.write_url, first_steps)
            before = await read_alerts(kafka.bootstrap, pipeline.alerts_topic,
                                       lambda ev: sum(e["state"] == kill_when for e in ev) >= len(TARGETS))
            assert sum(e["state"] == kill_when for e in before) == len(TARGETS)
            assert await batches_consumed(session, b_port) > 0  # the worker to kill owns partitions
            killed_at = time.monotonic()
            await asyncio.to_thread(kill, b_pid)
            b_pid = None
            await post_steps(session, pipeline.write_url, range(first_steps.stop, LAST))
            resolved = await read_alerts(kafka.bootstrap, pipeline.alerts_topic,
                                         lambda ev: sum(e["state"] == "inactive" for e in ev) >= len(TARGETS), timeout=120)
            takeover_s = time.monotonic() - killed_at
            await asyncio.sleep(3)  # anything more would be a duplicate: let it arrive
            events = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: False, timeout=3)
            suppressed = await metric(session, pipeline.worker_port, "headroom_worker_duplicate_transitions_suppressed_total")
    finally:
        if b_pid is not None:
            await asyncio.to_thread(kill, b_pid)
        await asyncio.to_thread(pipeline.stop)
    assert len(resolved) >= len(TARGETS)
    expected = [("inactive", "pending", DOWN), ("pending", "firing", DOWN + FOR_STEPS), ("firing", "inactive", UP_AGAIN)]
    by_target = events_by_target(events)
    assert {instance: got for instance, got in by_target.items() if got != expected} == {}
    assert len(events) == 3 * len(TARGETS) == 24
    # The survivor did take over from snapshots, and met the killed worker's transitions again.
    assert "restored the snapshot" in (run_dir / "worker.log").read_text()
    if moment != "snapshotting":  # snapshots after every message leave little or nothing to re-read
        assert suppressed > 0
    print(f"takeover and resolution within {takeover_s:.1f}s of the kill; {suppressed:.0f} duplicate transitions suppressed")
