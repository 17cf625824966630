"""A real Prometheus server (the Debian ``prometheus`` package) scraping and remote-writing."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipelines.stack.process import (
    LOCALHOST,
    BackgroundService,
    StackError,
    ensure_debian_package,
    free_port,
    http_json,
    http_ready,
)

PROMETHEUS_BINARY = "/usr/bin/prometheus"
SCRAPE_JOB = "targets"
# Test-friendly remote write: send within a second, retry fast.
TEST_QUEUE_CONFIG = {"batch_send_deadline": "1s", "min_backoff": "100ms", "max_backoff": "1s"}


class PrometheusServer(BackgroundService):
    """Prometheus on 127.0.0.1 with its config and TSDB in ``data_dir``.

    Scrapes ``scrape_targets`` (``host:port``) as job ``targets``, evaluates
    ``rule_files``, remote-writes to ``remote_write_url`` and sends alerts to
    ``alertmanagers`` (``host:port``). ``extra_remote_write`` adds or replaces
    keys of the remote_write entry; its ``queue_config`` is merged over the
    fast test defaults. Example::

        with PrometheusServer(tmp / "prom", ["127.0.0.1:8000"],
                              remote_write_url="http://127.0.0.1:9201/write") as prom:
            prom.query("up")  # [{'metric': {...}, 'value': [1700000000.0, '1']}]
    """

    name = "prometheus"
    # Prometheus can hang on shutdown while its remote-write receiver is gone.
    stop_grace = 10.0

    def __init__(
        self,
        data_dir: Path | str,
        scrape_targets: Sequence[str] = (),
        remote_write_url: str | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        rule_files: Sequence[Path | str] = (),
        port: int = 0,
        extra_remote_write: dict[str, Any] | None = None,
        alertmanagers: Sequence[str] = (),
    ) -> None:
        super().__init__(data_dir)
        self.scrape_targets = list(scrape_targets)
        self.remote_write_url = remote_write_url
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = [Path(path).resolve() for path in rule_files]
        self.port = port or free_port()
        self.extra_remote_write = dict(extra_remote_write or {})
        self.alertmanagers = list(alertmanagers)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "prometheus.yml"

    def config(self) -> dict[str, Any]:
        """The prometheus.yml content, as a dict."""
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.evaluation_interval},
        }
        if self.rule_files:
            config["rule_files"] = [str(path) for path in self.rule_files]
        if self.scrape_targets:
            config["scrape_configs"] = [
                {"job_name": SCRAPE_JOB, "honor_labels": True,
                 "static_configs": [{"targets": self.scrape_targets}]}
            ]
        if self.remote_write_url:
            queue_config = {**TEST_QUEUE_CONFIG, **self.extra_remote_write.get("queue_config", {})}
            config["remote_write"] = [
                {"url": self.remote_write_url, **self.extra_remote_write, "queue_config": queue_config}
            ]
        if self.alertmanagers:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]}
        return config

    def start(self, timeout: float = 30.0) -> None:
        """Launch Prometheus; return once ``/-/ready`` answers."""
        binary = ensure_debian_package(PROMETHEUS_BINARY, "prometheus")
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self._launch([
            str(binary),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            # Default is 1 minute of trying to flush to a receiver that may be gone.
            "--storage.remote.flush-deadline=1s",
            # The first notification goes out before the Alertmanager is
            # discovered and is dropped; the default 1m resend delay would
            # then hold every firing alert back for a minute.
            f"--rules.alert.resend-delay={self.evaluation_interval}",
        ], ports=[self.port])
        self._wait_until(lambda: http_ready(f"{self.url}/-/ready"), deadline, f"ready on {self.url}")

    def query(self, expr: str) -> Any:
        """Evaluate ``expr`` now; returns ``data.result`` of the HTTP API answer."""
        answer = http_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if answer.get("status") != "success":
            raise StackError(f"Prometheus query {expr!r} failed: {answer}")
        return answer["data"]["result"]
