"""The runbook simulator: deterministic, well-formed series, and the scripted incident.

Threshold checks read raw values and simple 5-minute rates computed here, not a
rule engine, so they test the simulator alone.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from detector.labels import Labels, metric_name
from simulator.runbook import HANDLER_PERMITS, SCENARIOS, Incident, RunbookSimulator

STEP_MS = 5000
SCENARIO_S = 900  # the backpressure alerts must all fire within 15 minutes
RATE_WINDOW_S = 300


class Run:
    """A scenario sampled every 5 s: each series' values over time."""

    def __init__(self, scenario: str, seed: int = 0, duration_s: int = SCENARIO_S) -> None:
        sim = RunbookSimulator(scenario, seed=seed)
        self.times_s = np.arange(0, duration_s + 1, STEP_MS // 1000)
        columns: dict[Labels, list[float]] = defaultdict(list)
        for t_s in self.times_s:
            for labels, value in sim.sample(int(t_s) * 1000):
                columns[labels].append(value)
        self.series = {labels: np.array(values) for labels, values in columns.items()}

    def named(self, name: str) -> dict[Labels, np.ndarray]:
        return {labels: values for labels, values in self.series.items() if metric_name(labels) == name}

    def rate(self, values: np.ndarray) -> np.ndarray:
        """Per-second increase over the last 5 minutes (over what there is, early on)."""
        back = RATE_WINDOW_S * 1000 // STEP_MS
        earlier = np.concatenate([np.full(back, values[0]), values[:-back]])
        return (values - earlier) / RATE_WINDOW_S


def firing_at(times_s: np.ndarray, active: np.ndarray, for_s: float) -> float | None:
    """Event second at which ``active`` has held for ``for_s`` (an alert's ``for``), or None."""
    since = None
    for t_s, is_active in zip(times_s, active):
        if not is_active:
            since = None
        elif since is None:
            since = t_s
        if since is not None and t_s - since >= for_s:
            return float(t_s)
    return None


def without(labels: Labels, *names: str) -> Labels:
    return tuple(pair for pair in labels if pair[0] not in names)


def wait_p99_above(run: Run, threshold_ms: float) -> dict[Labels, np.ndarray]:
    """Per worker: whether the all-time p99 of handler wait is above the threshold.

    histogram_quantile(0.99) > t exactly when fewer than 99% of observations
    fall in the bucket ending at t, for a bucket bound t.
    """
    buckets = run.named("worker_handler_semaphore_wait_ms_bucket")
    at_threshold = {without(k, "__name__", "le"): v for k, v in buckets.items() if dict(k)["le"] == f"{threshold_ms:g}"}
    total = {without(k, "__name__", "le"): v for k, v in buckets.items() if dict(k)["le"] == "+Inf"}
    return {owner: at_threshold[owner] < 0.99 * total[owner] for owner in total}


def runbook_conditions(run: Run) -> dict[str, tuple[float, list[np.ndarray]]]:
    """Each runbook alert's ``for`` and its expression's truth over time, per series."""
    depth = run.named("pgmq_queue_depth")
    max_depth = {without(k, "__name__"): v for k, v in run.named("pgmq_queue_max_depth").items()}
    return {
        "TaskerCircuitBreakerOpen": (30, [v == 2 for v in run.named("api_circuit_breaker_state").values()]),
        "TaskerAPIRejectionsHigh": (
            120, [run.rate(v) > 0.1 for v in run.named("api_requests_rejected_total").values()]
        ),
        "TaskerCommandChannelSaturated": (
            60, [v > 0.8 for v in run.named("orchestration_command_channel_saturation").values()]
        ),
        "TaskerPGMQQueueDepthHigh": (300, [v / max_depth[without(k, "__name__")] > 0.8 for k, v in depth.items()]),
        "TaskerWorkerClaimRefusalsHigh": (
            120, [run.rate(v) > 0.2 for v in run.named("worker_claim_refusals_total").values()]
        ),
        "TaskerHandlerWaitTimeHigh": (120, list(wait_p99_above(run, 2000).values())),
        "TaskerDomainEventsDropped": (
            300, [run.rate(v) > 1 for v in run.named("domain_events_dropped_total").values()]
        ),
    }


@pytest.fixture(scope="module")
def backpressure() -> Run:
    return Run("backpressure")


@pytest.fixture(scope="module")
def calm() -> Run:
    return Run("calm")


def test_same_seed_gives_same_samples_and_another_seed_does_not():
    def samples(seed: int) -> list:
        sim = RunbookSimulator(seed=seed)
        return [sim.sample(t_ms) for t_ms in range(0, 60_001, STEP_MS)]

    assert samples(7) == samples(7)
    assert samples(7) != samples(8)


def test_series_have_sorted_unique_label_sets_with_target_labels():
    sim = RunbookSimulator()
    labels = [labels for labels, _ in sim.sample(0)]
    assert len(labels) == len(set(labels)) == sim.series_count()
    assert all(list(ls) == sorted(ls) for ls in labels)
    assert all({"__name__", "job", "instance"} <= dict(ls).keys() for ls in labels)
    assert {dict(ls)["instance"] for ls in labels} == {"orch-0:9100", "worker-0:9100", "worker-1:9100", "worker-2:9100"}


def test_topology_sizes_the_series():
    small = RunbookSimulator(workers=1, queues=("only",))
    assert small.series_count() < RunbookSimulator().series_count()
    assert {dict(ls).get("queue_name") for ls, _ in small.sample(0)} == {None, "only"}


@pytest.mark.parametrize("run_name", ["backpressure", "calm"])
def test_counters_and_histograms_never_decrease(run_name, request):
    run: Run = request.getfixturevalue(run_name)
    cumulative = ("_total", "_bucket", "_sum", "_count")
    for labels, values in run.series.items():
        if metric_name(labels).endswith(cumulative):
            assert np.all(np.diff(values) >= 0), labels


@pytest.mark.parametrize("run_name", ["backpressure", "calm"])
def test_gauges_stay_in_range(run_name, request):
    run: Run = request.getfixturevalue(run_name)
    for name in (
        "orchestration_command_channel_saturation", "worker_dispatch_channel_saturation",
        "worker_completion_channel_saturation", "mpsc_channel_saturation",
    ):
        for values in run.named(name).values():
            assert np.all((values >= 0) & (values <= 1)), name
    for values in run.named("api_circuit_breaker_state").values():
        assert set(np.unique(values)) <= {0, 1, 2}
    for values in run.named("worker_handler_semaphore_permits_total").values():
        assert np.all(values == HANDLER_PERMITS)
    for values in run.named("worker_handler_semaphore_permits_available").values():
        assert np.all((values >= 0) & (values <= HANDLER_PERMITS) & (values == np.round(values)))
    max_depth = {without(k, "__name__"): v for k, v in run.named("pgmq_queue_max_depth").items()}
    for labels, depth in run.named("pgmq_queue_depth").items():
        assert np.all((depth >= 0) & (depth <= max_depth[without(labels, "__name__")]))


def test_histogram_buckets_are_cumulative_and_inf_equals_count(backpressure):
    for family in ("worker_handler_semaphore_wait_ms", "api_request_latency_ms"):
        owners: dict[Labels, list[tuple[float, np.ndarray]]] = defaultdict(list)
        for labels, values in backpressure.named(f"{family}_bucket").items():
            owners[without(labels, "__name__", "le")].append((float(dict(labels)["le"]), values))
        counts = {without(k, "__name__"): v for k, v in backpressure.named(f"{family}_count").items()}
        assert owners.keys() == counts.keys()
        for owner, buckets in owners.items():
            buckets.sort(key=lambda bucket: bucket[0])
            assert buckets[-1][0] == float("inf")
            stacked = np.array([values for _, values in buckets])
            assert np.all(np.diff(stacked, axis=0) >= 0), owner
            assert np.array_equal(stacked[-1], counts[owner])


def test_queue_depth_and_max_depth_carry_identical_labels():
    sim = RunbookSimulator()
    by_name = defaultdict(set)
    for labels, _ in sim.sample(0):
        by_name[metric_name(labels)].add(without(labels, "__name__"))
    assert by_name["pgmq_queue_depth"] == by_name["pgmq_queue_max_depth"]
    assert len(by_name["pgmq_queue_depth"]) == 3


def test_backpressure_fires_every_runbook_alert_within_15_minutes(backpressure):
    for alert, (for_s, conditions) in runbook_conditions(backpressure).items():
        fired = [firing_at(backpressure.times_s, active, for_s) for active in conditions]
        assert any(t_s is not None for t_s in fired), alert
        calm_prelude = backpressure.times_s < 120
        assert not any(active[calm_prelude].any() for active in conditions), alert


def test_backpressure_incident_follows_its_script(backpressure):
    times = backpressure.times_s
    (saturation,) = backpressure.named("orchestration_command_channel_saturation").values()
    assert saturation[times < 120].max() < 0.5
    assert firing_at(times, saturation > 0.8, 60) == pytest.approx(250, abs=15)
    (breaker,) = backpressure.named("api_circuit_breaker_state").values()
    assert firing_at(times, breaker == 2, 30) == 330
    assert breaker[times == 395] == 1 and breaker[times == 420] == 0  # the breaker alert resolves
    depth = {dict(k)["queue_name"]: v for k, v in backpressure.named("pgmq_queue_depth").items()}
    max_depth = {dict(k)["queue_name"]: v for k, v in backpressure.named("pgmq_queue_max_depth").items()}
    assert firing_at(times, depth["orders"] / max_depth["orders"] > 0.8, 300) == pytest.approx(600, abs=20)
    assert (depth["payments"] / max_depth["payments"]).max() < 0.5
    failures = backpressure.named("pgmq_enqueue_failures_total")
    assert all(v[-1] > v[0] for k, v in failures.items() if dict(k)["reason"] == "database_error")


def test_calm_crosses_no_runbook_threshold(calm):
    for alert, (_, conditions) in runbook_conditions(calm).items():
        assert not any(active.any() for active in conditions), alert
    for name in ("worker_dispatch_channel_saturation", "worker_completion_channel_saturation", "mpsc_channel_saturation"):
        assert max(values.max() for values in calm.named(name).values()) < 0.7, name
    assert min(v.min() for v in calm.named("worker_handler_semaphore_permits_available").values()) > 0
    assert all(v[-1] == v[0] for v in calm.named("pgmq_enqueue_failures_total").values())


def test_calm_does_have_bursts(calm):
    (saturation,) = calm.named("orchestration_command_channel_saturation").values()
    assert saturation.max() - np.median(saturation) > 0.15


def test_sample_times_must_not_decrease():
    sim = RunbookSimulator()
    sim.sample(10_000)
    sim.sample(10_000)
    with pytest.raises(ValueError, match="must not decrease"):
        sim.sample(5_000)


def test_unknown_scenario_and_incident_targets_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown scenario 'storm'"):
        RunbookSimulator("storm")
    monkeypatch.setitem(SCENARIOS, "typo", (Incident("queue_depth", start_s=0, target="order"),))
    with pytest.raises(ValueError, match="targets 'order'"):
        RunbookSimulator("typo")


def test_an_empty_target_means_the_first_queue():
    sim = RunbookSimulator(queues=("billing", "email"))
    for t_ms in range(0, 600_001, STEP_MS):
        samples = dict(sim.sample(t_ms))
    fill = {
        dict(k)["queue_name"]: v / samples[(("__name__", "pgmq_queue_max_depth"),) + k[1:]]
        for k, v in samples.items() if metric_name(k) == "pgmq_queue_depth"
    }
    assert fill["billing"] > 0.8 > fill["email"]
