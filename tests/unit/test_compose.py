"""compose/: the Prometheus and Alertmanager configurations pass their own checkers, and the
dashboard's queries parse and read only series that exist (the runbook's, or Headroom's own)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import promql_parser
import pytest

from pipelines.stack.process import ensure_debian_package

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
HEADROOM_SERIES = {
    "headroom_anomaly_score", "headroom_saturation_eta_seconds", "headroom_saturation_eta_lower_seconds",
    "headroom_saturation_eta_upper_seconds", "headroom_early_warning_state", "headroom_worker_samples_total",
}
RUNBOOK_PANELS = {  # the runbook's dashboard, kept verbatim
    "Circuit Breaker State": ["api_circuit_breaker_state"],
    "API Rejections Rate": ["rate(api_requests_rejected_total[5m])"],
    "Channel Saturation": ["orchestration_command_channel_saturation", "worker_dispatch_channel_saturation",
                           "worker_completion_channel_saturation"],
    "PGMQ Queue Depth": ["pgmq_queue_depth"],
    "Handler Wait Time (p99)": ["histogram_quantile(0.99, worker_handler_semaphore_wait_ms_bucket)"],
    "Worker Claim Refusals": ["rate(worker_claim_refusals_total[5m])"],
}


def test_prometheus_config_passes_promtool(promtool):
    checked = subprocess.run([promtool, "check", "config", str(COMPOSE / "prometheus/prometheus.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alertmanager_config_passes_amtool():
    amtool = ensure_debian_package("/usr/bin/amtool", "prometheus-alertmanager")
    checked = subprocess.run([str(amtool), "check-config", str(COMPOSE / "alertmanager/alertmanager.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _selectors(node) -> list[str]:
    """Metric names of every vector selector in a parsed expression."""
    names = []
    if isinstance(node, promql_parser.VectorSelector):
        names.append(node.name or "")
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names += _selectors(child)
    for child in getattr(node, "args", None) or []:
        names += _selectors(child)
    return names


def test_dashboard_keeps_the_runbook_panels_and_reads_only_known_series():
    panels = json.loads((COMPOSE / "grafana/headroom-backpressure.json").read_text())["dashboard"]["panels"]
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in panels}
    for title, expected in RUNBOOK_PANELS.items():
        assert exprs[title] == expected
    headroom = {title: e for title, e in exprs.items() if title.startswith("Headroom")}
    assert len(headroom) >= 4
    for title, targets in headroom.items():
        for expr in targets:
            names = _selectors(promql_parser.parse(expr))
            assert names and set(names) <= HEADROOM_SERIES, (title, expr, names)


@pytest.mark.parametrize("name", sorted(HEADROOM_SERIES - {"headroom_worker_samples_total"}))
def test_the_dashboard_series_are_the_ones_the_worker_writes(name):
    from pipelines import gauges

    assert name in gauges._HELP
