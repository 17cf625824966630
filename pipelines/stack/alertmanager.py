"""A real Alertmanager (the Debian ``prometheus-alertmanager`` package) that keeps alerts to be read back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from pipelines.stack.process import (
    LOCALHOST,
    BackgroundService,
    ensure_debian_package,
    free_port,
    http_json,
    http_ready,
)

ALERTMANAGER_BINARY = "/usr/bin/prometheus-alertmanager"
# Routes everything to a receiver that notifies nobody: tests read alerts back
# through the API instead.
CONFIG = {
    "route": {
        "receiver": "null",
        "group_by": ["alertname"],
        "group_wait": "1s",
        "group_interval": "1s",
        "repeat_interval": "1h",
    },
    "receivers": [{"name": "null"}],
}


class AlertmanagerServer(BackgroundService):
    """Alertmanager on 127.0.0.1, clustering off, config and state in ``data_dir``. Example::

        with AlertmanagerServer(tmp / "am") as am:
            am.post_alerts([{"labels": {"alertname": "Demo"}}])
            am.alerts()  # [{'labels': {'alertname': 'Demo'}, 'status': {...}, ...}]
    """

    name = "alertmanager"

    def __init__(self, data_dir: Path | str, port: int = 0) -> None:
        super().__init__(data_dir)
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "alertmanager.yml"

    def start(self, timeout: float = 30.0) -> None:
        """Launch Alertmanager; return once ``/-/ready`` answers."""
        binary = ensure_debian_package(ALERTMANAGER_BINARY, "prometheus-alertmanager")
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        self._launch([
            str(binary),
            f"--config.file={self.config_file}",
            f"--storage.path={self.data_dir / 'data'}",
            f"--web.listen-address={LOCALHOST}:{self.port}",
            "--cluster.listen-address=",  # empty: no gossip port, no peers
        ], ports=[self.port])
        self._wait_until(lambda: http_ready(f"{self.url}/-/ready"), deadline, f"ready on {self.url}")

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds now (``GET /api/v2/alerts``)."""
        return http_json(f"{self.url}/api/v2/alerts")

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Send ``alerts`` as Prometheus would (``POST /api/v2/alerts``)."""
        http_json(f"{self.url}/api/v2/alerts", body=alerts)
