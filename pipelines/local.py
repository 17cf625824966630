"""A receiver and a Faust worker as local processes, for the demo, tests and benches.

Both are started as ``headroom receiver`` / ``headroom worker`` subprocesses
configured through ``HEADROOM_*`` variables, exactly as a user runs them, so
what is tested and measured is the real thing.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.stack.process import StackError, free_ports, log_tail, start_process, stop_pid

_REPO = Path(__file__).resolve().parent.parent


@dataclass
class LocalPipeline:
    """``start()`` brings up a receiver and a worker against ``bootstrap``; ``stop()`` ends both.

    Usage (needs a running Kafka)::

        with LocalPipeline(broker.bootstrap, Path("var/run"), rule_files=("backpressure",)) as p:
            post_remote_write(p.write_url, ...)
    """

    bootstrap: str
    run_dir: Path
    rule_files: tuple[str, ...] = ("backpressure",)
    partitions: int = 4
    app_id: str = "headroom"
    extra_env: dict[str, str] = field(default_factory=dict)
    receiver_port: int = 0
    worker_port: int = 0
    _pids: dict[str, int] = field(default_factory=dict)

    @property
    def write_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}/api/v1/write"

    @property
    def alerts_topic(self) -> str:
        return f"{self.app_id}-alerts"

    @property
    def samples_topic(self) -> str:
        return f"{self.app_id}-samples"

    @property
    def metadata_topic(self) -> str:
        return f"{self.app_id}-metadata"

    @property
    def forecasts_topic(self) -> str:
        return f"{self.app_id}-forecasts"

    @property
    def global_samples_topic(self) -> str:
        return f"{self.app_id}-samples-global"

    def env(self) -> dict[str, str]:
        if not self.receiver_port or not self.worker_port:
            self.receiver_port, self.worker_port = free_ports(2)
        env = dict(os.environ)
        env.update(
            HEADROOM_KAFKA_BOOTSTRAP=self.bootstrap,
            HEADROOM_APP_ID=self.app_id,
            HEADROOM_SAMPLES_TOPIC=self.samples_topic,
            HEADROOM_GLOBAL_SAMPLES_TOPIC=self.global_samples_topic,
            HEADROOM_ALERTS_TOPIC=self.alerts_topic,
            HEADROOM_SCORES_TOPIC=f"{self.app_id}-scores",
            HEADROOM_METADATA_TOPIC=self.metadata_topic,
            HEADROOM_FORECASTS_TOPIC=self.forecasts_topic,
            HEADROOM_STATE_TOPIC=f"{self.app_id}-state",
            HEADROOM_PARTITIONS=str(self.partitions),
            HEADROOM_RULE_FILES=json.dumps(list(self.rule_files)),
            HEADROOM_RECEIVER_PORT=str(self.receiver_port),
            HEADROOM_WORKER_WEB_PORT=str(self.worker_port),
            HEADROOM_DATA_DIR=str(self.run_dir / "worker-data"),
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> None:
        """Start both; the worker creates the topics, so they exist once it answers."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        command = [sys.executable, "-m", "pipelines.cli"]
        for name in ("worker", "receiver"):
            proc = start_process(command + [name], self.run_dir / f"{name}.log", cwd=_REPO, env=env)
            self._pids[name] = proc.pid
        deadline = time.monotonic() + timeout
        self.wait_http(f"http://127.0.0.1:{self.receiver_port}/-/ready", "receiver", deadline)
        self.wait_http(f"http://127.0.0.1:{self.worker_port}/metrics", "worker", deadline)

    def wait_http(self, url: str, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise StackError(f"{name} not ready at {url}; its log ends:\n{log_tail(self.run_dir / f'{name}.log')}")

    def stop_one(self, name: str) -> None:
        pid = self._pids.pop(name, None)
        if pid is not None:
            stop_pid(pid, grace=15.0)

    def start_one(self, name: str) -> None:
        proc = start_process([sys.executable, "-m", "pipelines.cli", name], self.run_dir / f"{name}.log", cwd=_REPO, env=self.env())
        self._pids[name] = proc.pid

    def stop(self) -> None:
        for name in list(self._pids):
            self.stop_one(name)

    def __enter__(self) -> LocalPipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

