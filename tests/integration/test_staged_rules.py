"""Staged rules over real Kafka (issue 13): a cross-target alert from three worker processes, then after a kill -9.

``sum by (namespace) (up) < 4`` over twelve targets in four samples partitions:
each worker's stage-1 partitions send partial sums through the partials topic
to the combine partitions, spread over the three workers of one group. The
alert transitions on the alerts topic must be exactly those of one rule engine
over all the series (computed in-process), at the same event times; then the
worker owning the combine partition of the firing namespace is killed with
SIGKILL while its alert fires, the rest of the data is sent, and the
transitions are still exactly those, none twice. The data is on event time
(2023), so no wall clock enters the alerts.
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
from detector.rules import load_rule_files
from detector.rules.engine import RuleEngine
from detector.stages.plan import StagePlan
from detector.wire.batch import SampleBatch
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
LAST = 40
KILL_AFTER = 20  # steps sent before the kill: ns-0's alert is firing then
RULE = {"alert": "FewUp", "expr": "sum by (namespace) (up) < 4", "for": "1m"}


def targets() -> list[tuple]:
    """Twelve targets, three in each samples partition, in two namespaces."""
    by_partition: dict[int, list] = defaultdict(list)
    i = 0
    while min((len(by_partition[p]) for p in range(PARTITIONS)), default=0) < 3:
        labels = (("__name__", "up"), ("instance", f"host-{i}:9100"), ("job", "node"), ("namespace", f"ns-{i % 2}"))
        if len(by_partition[partition_for(labels, PARTITIONS)]) < 3:
            by_partition[partition_for(labels, PARTITIONS)].append(labels)
        i += 1
    return [labels for p in range(PARTITIONS) for labels in by_partition[p]]


TARGETS = targets()


def up_value(target: tuple, step: int) -> float:
    """ns-0 loses three of its six targets from step 6 to 30; ns-1 four of its six from 12 to 18."""
    namespace = dict(target)["namespace"]
    rank = [t for t in TARGETS if dict(t)["namespace"] == namespace].index(target)
    if namespace == "ns-0":
        return 0.0 if rank < 3 and 6 <= step < 30 else 1.0
    return 0.0 if rank < 4 and 12 <= step < 18 else 1.0


def expected(groups: list) -> list[tuple]:
    """One rule engine over every series: the transitions the stages must reproduce."""
    engine = RuleEngine(groups)
    out = engine.ingest(SampleBatch.from_series([(t, [(BASE + k * STEP, up_value(t, k)) for k in range(LAST)])
                                                for t in TARGETS]))
    return sorted(transition_key(t.labels, t.previous, t.state, t.eval_time) for t in out.transitions)


def transition_key(labels, previous: str, state: str, eval_time: int) -> tuple:
    return (dict(labels)["namespace"], previous, state, (eval_time - BASE) // STEP)


def got(events: list[dict]) -> list[tuple]:
    return sorted(transition_key(e["labels"].items(), e["previous"], e["state"], e["eval_time"]) for e in events)


async def post_steps(session: aiohttp.ClientSession, url: str, steps: range, per_request: int = 4) -> None:
    for start in range(steps.start, steps.stop, per_request):
        chunk = range(start, min(start + per_request, steps.stop))
        body = encode_write_request([(t, [(BASE + k * STEP, up_value(t, k)) for k in chunk]) for t in TARGETS])
        async with session.post(url, data=body, headers=REMOTE_WRITE_HEADERS) as answer:
            assert answer.status == 204


async def metrics_text(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
        return await answer.text()


async def test_staged_cross_target_alert_from_three_workers_and_after_a_kill(kafka, tmp_path, app_id):
    rules = write_rules(tmp_path, [RULE], interval="15s")
    groups = load_rule_files([str(rules)])
    want = expected(groups)
    assert {(ns, state) for ns, _, state, _ in want} >= {("ns-0", "firing"), ("ns-1", "firing"), ("ns-1", "inactive")}
    plan = StagePlan(groups)
    assert not plan.global_groups()  # all of it staged: nothing left for the global lane
    partials = f"{app_id}-partials"
    ns0_dest = plan.destination(plan.slots[0], (("namespace", "ns-0"),), PARTITIONS)
    run_dir = tmp_path / "run"
    pipeline = LocalPipeline(kafka.bootstrap, run_dir, rule_files=(str(rules),), app_id=app_id, partitions=PARTITIONS,
                             extra_env={
                                 **OLD_TIMESTAMPS_ENV,
                                 "HEADROOM_ANOMALY_SCORES": "false", "HEADROOM_FORECASTS": "false",
                                 "HEADROOM_STAGED_RULES": "true", "HEADROOM_PARTIALS_TOPIC": partials,
                                 "HEADROOM_SNAPSHOT_INTERVAL": "10m",
                                 "HEADROOM_SESSION_TIMEOUT": "6s", "HEADROOM_HEARTBEAT_INTERVAL": "1s",
                             })
    await asyncio.to_thread(pipeline.start)
    workers = {"worker": (pipeline._pids["worker"], pipeline.worker_port)}
    try:
        for name in ("worker-b", "worker-c"):
            port = free_port()
            env = pipeline.env() | {"HEADROOM_WORKER_WEB_PORT": str(port), "HEADROOM_DATA_DIR": str(run_dir / f"{name}-data")}
            proc = start_process([sys.executable, "-m", "pipelines.cli", "worker"], run_dir / f"{name}.log", cwd=REPO, env=env)
            workers[name] = (proc.pid, port)
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(120):
                while await group_members(kafka.bootstrap, app_id) != 3:
                    await asyncio.sleep(0.5)
            await post_steps(session, pipeline.write_url, range(0, KILL_AFTER))
            first = [k for k in want if k[3] < KILL_AFTER]
            before = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: len(ev) >= len(first), timeout=90)
            assert got(before) == first  # three workers: exactly one engine's transitions so far
            # The worker whose combine partition holds ns-0's sum (its alert firing now) is killed.
            owner = None
            pattern = rf'^headroom_combine_partial_rows\{{lane="{re.escape(partials)}",partition="{ns0_dest}"\}} (\S+)$'
            for name, (pid, port) in workers.items():
                found = re.search(pattern, await metrics_text(session, port), re.M)
                if found and float(found.group(1)) > 0:
                    owner = name
            assert owner is not None, "no worker reports the combine partition of ns-0"
            pid, _ = workers.pop(owner)
            if owner == "worker":
                pipeline._pids.pop("worker")
            killed_at = time.monotonic()
            await asyncio.to_thread(kill, pid)
            await post_steps(session, pipeline.write_url, range(KILL_AFTER, LAST))
            everything = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: len(ev) >= len(want), timeout=120)
            takeover_s = time.monotonic() - killed_at
            await asyncio.sleep(3)  # anything more would be a duplicate: let it arrive
            events = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: False, timeout=3)
            rows = {}
            for name, (_, port) in workers.items():
                text = await metrics_text(session, port)
                for lane, partition, value in re.findall(r'^headroom_combine_partial_rows\{lane="([^"]+)",partition="(\d+)"\} (\S+)$', text, re.M):
                    rows[(name, int(partition))] = float(value)
    finally:
        for pid, _ in workers.values():
            if pid != pipeline._pids.get("worker"):
                await asyncio.to_thread(kill, pid)
        await asyncio.to_thread(pipeline.stop)
    assert len(everything) >= len(want)
    assert got(events) == want  # the same transitions at the same event times, none twice, after the kill too
    assert "restored the snapshot" in "".join((run_dir / f"{n}.log").read_text() for n in ("worker", "worker-b", "worker-c"))
    print(f"killed {owner} (owner of combine partition {ns0_dest}); all {len(want)} transitions within "
          f"{takeover_s:.1f}s of the kill; partial rows by (worker, combine partition): {rows}")
