"""Configuration, from ``HEADROOM_*`` environment variables or arguments.

Validated at start-up: a bad value stops the process with a message naming
the setting, before anything connects anywhere.

>>> s = Settings(kafka_bootstrap="127.0.0.1:9092", partitions=4)
>>> s.samples_topic, s.evaluation_interval_ms
('headroom-samples', 15000)
>>> s.topics()["headroom-forecasts"]
1
>>> try:
...     Settings(session_timeout="6s", heartbeat_interval="6s")
... except ValueError as exc:
...     print("heartbeat_interval (6s) must be shorter than session_timeout (6s)" in str(exc))
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from detector.anomaly.catalog import ModelCatalog, ModelCatalogError
from detector.forecast.spec import ForecastConfig, ForecastSpecError
from detector.durations import parse_duration
from detector.labels import BY_SERIES_FAMILY, DEFAULT_PARTITION_BY
from detector.wire.remote_write import SampleWindow, WriteLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEADROOM_", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    app_id: str = "headroom"
    samples_topic: str = "headroom-samples"
    # One partition: inputs of rule groups that combine series across targets.
    global_samples_topic: str = "headroom-samples-global"
    alerts_topic: str = "headroom-alerts"
    scores_topic: str = "headroom-scores"
    # Compacted, one partition: metric family -> type, from remote-write
    # metadata; every worker reads it whole (counters are scored on their rate).
    metadata_topic: str = "headroom-metadata"
    # Saturation estimates, one JSON object per change (detector.forecast.engine.Forecast).
    forecasts_topic: str = "headroom-forecasts"
    # Per-series anomaly scores (the derived series headroom_anomaly_score) and
    # saturation forecasts in the worker, beside the rules.
    anomaly_scores: bool = True
    forecasts: bool = True
    # Which anomaly model scores which series (YAML: selector -> model); none: the default model.
    models_file: Path | None = None
    # Which series forecasts watch, against which bound, and the warning settings (YAML:
    # detector.forecast.spec); none: the default specs and settings.
    forecasts_file: Path | None = None
    partitions: int = Field(8, ge=1, le=1024)
    # Two-stage evaluation of rules that combine series across targets (detector.stages,
    # pipelines.stages): samples partitions send partials to a partials topic of
    # combine_partitions partitions (0: as many as the samples topic; a second topic,
    # "<partials_topic>-2", if the rules need a second combine level). Off: the global lane.
    staged_rules: bool = False
    # Empty: "<app_id>-partials", so two applications on one broker never share it
    # (their combine partitions would refuse, or worse, count each other's frames).
    partials_topic: str = ""
    combine_partitions: int = Field(0, ge=0, le=1024)
    # The labels that choose a series' samples partition (series_partition_by); unset: by scrape
    # target (job, instance), or with staged rules by series family ([]: every label but
    # __name__, le and quantile), so no big target loads one partition more than the others.
    partition_by: tuple[str, ...] | None = None

    rule_files: tuple[Path, ...] = ()
    # A rule Headroom cannot run is left out (and reported, and counted in
    # headroom_rules_refused) while the rest of its file runs; strict refuses
    # the whole file instead, as Prometheus does with a file it cannot load.
    strict_rules: bool = False
    evaluation_interval: str = "15s"
    lookback_delta: str = "5m"
    lateness: str = "0s"
    # The completeness watermark (detector.completeness): an instant is evaluated once
    # every live series has sent it, but never more than max_lateness behind the
    # newest sample ("0s": evaluate at the newest sample, as before); a series nothing
    # arrived for in series_silence while others did stops holding it back.
    max_lateness: str = "10m"
    series_silence: str = "30s"
    # After a partition starts with no state, it evaluates nothing for this long of wall
    # time (and one scrape interval plus 5 s of event time): series it has not heard of
    # yet cannot hold anything back. "0s": no start-up rules (one sender shard).
    start_wait: str = "10s"
    resend_delay: str = "1m"
    # A partition without samples for this long (wall clock) evaluates on wall
    # time, this far behind it, while its data is live; "0s" turns it off.
    idle_advance: str = "30s"
    external_labels: dict[str, str] = {}

    # Notification targets, comma-separated; alerts are sent only for live data.
    alertmanager_urls: str = ""
    webhook_urls: str = ""
    external_url: str = ""

    receiver_host: str = "127.0.0.1"
    receiver_port: int = 9201
    max_body_bytes: int = 16 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024
    produce_timeout: str = "10s"
    # The accepted time window of a sample, like Prometheus's TSDB: at most
    # catch_up_window plus what the rules read back (lookback, ranges, offsets,
    # one interval) old - room for a sender's backlog after an outage - and at
    # most max_sample_ahead ahead of the receiver's clock. Outside: dropped and
    # counted, or 400 naming the series when nothing in the request is inside.
    catch_up_window: str = "2h"
    max_sample_ahead: str = "5m"
    # Label and metric names: "legacy" (Prometheus 2.x rules, as the engine
    # follows 2.42) or "utf8" (Prometheus 3.x: any UTF-8 name, for OpenTelemetry).
    name_validation: Literal["legacy", "utf8"] = "legacy"
    max_series_per_request: int = Field(50_000, ge=1)
    # Load shedding: over either bound a request is answered 503 + Retry-After
    # at once (Prometheus 2.42 retries 5xx and, by default, drops 429s).
    max_requests_in_flight: int = Field(256, ge=1)
    max_bytes_in_flight: int = Field(128 * 1024 * 1024, ge=1024)
    # Bodies over this many bytes are decoded on a worker thread, one at a
    # time, so small requests and /metrics are not held behind them; at most
    # big_decodes_queued of them wait or decode there, more are shed (503):
    # waiting behind several big decodes would outlast a sender's timeout.
    inline_decode_max_bytes: int = Field(256 * 1024, ge=0)
    big_decodes_queued: int = Field(2, ge=1)
    # When the event loop runs this late, or a request has waited this long
    # for its turn to decode (a flood of requests full of new series), it is
    # shed too: the bounds above count requests and bytes, this one the CPU
    # behind them. "0s" turns it off.
    max_event_loop_lag: str = "1s"
    # Batches of concurrent requests for one partition wait up to this long to
    # go to Kafka as one message (pipelines/coalescer.py), or until they hold
    # coalesce_max_samples; each request is still answered only once Kafka has
    # its samples. "0s": one message per partition per request.
    coalesce_linger: str = "25ms"
    coalesce_max_samples: int = Field(20_000, ge=1)
    # The worker's side of the same: with a backlog, what Kafka already delivered is grouped
    # by samples partition and each partition's messages, up to this many, are folded in
    # together (pipelines.app, pipelines.worker.Worker.handle_many); 1: one message at a time.
    fold_max_messages: int = Field(32, ge=1)
    # HTTPS for the receiver: certificate and key (PEM); with a client CA,
    # senders must present a certificate it signed (mutual TLS).
    receiver_tls_cert_file: Path | None = None
    receiver_tls_key_file: Path | None = None
    receiver_tls_client_ca_file: Path | None = None
    # Basic auth for the receiver, as Prometheus's remote_write basic_auth sends it.
    receiver_basic_auth_user: str | None = None
    receiver_basic_auth_password_file: Path | None = None

    # Partition state (rules, models, forecasts) survives restarts and moves as
    # snapshots in a compacted topic, taken at most this often per partition (wall
    # clock); "0s" turns them off (pipelines/state.py). Between that and the max
    # interval, a snapshot waits until processing has cost 1/cpu_share of what the
    # last snapshot cost (pipelines/snapshot_schedule.py); cpu_share 0: every interval.
    state_topic: str = "headroom-state"
    snapshot_interval: str = "30s"
    snapshot_max_interval: str = "5m"
    snapshot_cpu_share: float = Field(0.1, ge=0)
    snapshot_max_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)

    # Limits that keep one sender from exhausting a worker's memory or event loop.
    # A series keeps at most one sample per this interval (epoch-aligned, the first
    # wins; finer than any scrape interval alerting needs); "0s" keeps every sample.
    series_min_interval: str = "1s"
    # New series beyond this many in one partition are dropped and counted.
    max_series_per_partition: int = Field(500_000, ge=1)
    # Rule group evaluations per step: a partition with more due yields to the event loop between steps.
    max_evaluations_per_step: int = Field(32, ge=1)
    # Evaluations more than this far behind the newest sample are skipped and counted.
    max_catch_up: str = "1h"

    # How fast the group notices a dead worker and hands its partitions over: a
    # worker that sends no heartbeat for the session timeout is dropped from the
    # group (Faust's default is 60 s). The broker accepts 6 s at the least
    # (group.min.session.timeout.ms); heartbeats at a third of it or less.
    session_timeout: str = "10s"
    heartbeat_interval: str = "3s"

    worker_web_port: int = 6066
    data_dir: Path = Path("var/worker")

    @field_validator("evaluation_interval", "lookback_delta", "lateness", "max_lateness", "series_silence", "resend_delay",
                     "idle_advance", "start_wait", "produce_timeout", "snapshot_interval", "snapshot_max_interval", "session_timeout", "heartbeat_interval",
                     "series_min_interval", "max_catch_up", "catch_up_window", "max_sample_ahead", "max_event_loop_lag",
                     "coalesce_linger")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _heartbeats_within_the_session(self) -> Settings:
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError(f"heartbeat_interval ({self.heartbeat_interval}) must be shorter than session_timeout "
                             f"({self.session_timeout}), a third of it or less")
        return self

    @field_validator("models_file", "forecasts_file")
    @classmethod
    def _file_loads(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            try:  # every problem, with file and entry, before anything starts
                (ModelCatalog if info.field_name == "models_file" else ForecastConfig).load(value)
            except (ModelCatalogError, ForecastSpecError) as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _receiver_security_is_complete(self) -> Settings:
        problems = []
        if (self.receiver_tls_cert_file is None) != (self.receiver_tls_key_file is None):
            problems.append("receiver_tls_cert_file and receiver_tls_key_file go together: set both or neither")
        if self.receiver_tls_client_ca_file is not None and self.receiver_tls_cert_file is None:
            problems.append("receiver_tls_client_ca_file needs receiver_tls_cert_file and receiver_tls_key_file")
        if (self.receiver_basic_auth_user is None) != (self.receiver_basic_auth_password_file is None):
            problems.append("receiver_basic_auth_user and receiver_basic_auth_password_file go together: set both or neither")
        for name in ("receiver_tls_cert_file", "receiver_tls_key_file", "receiver_tls_client_ca_file",
                     "receiver_basic_auth_password_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                problems.append(f"{name}: no such file: {path}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def model_catalog(self) -> ModelCatalog | None:
        return ModelCatalog.load(self.models_file) if self.models_file is not None else None

    def forecast_config(self) -> ForecastConfig | None:
        return ForecastConfig.load(self.forecasts_file) if self.forecasts_file is not None else None

    @property
    def evaluation_interval_ms(self) -> int:
        return parse_duration(self.evaluation_interval)

    @property
    def lookback_ms(self) -> int:
        return parse_duration(self.lookback_delta)

    @property
    def lateness_ms(self) -> int:
        return parse_duration(self.lateness)

    @property
    def coalesce_linger_ms(self) -> int:
        return parse_duration(self.coalesce_linger)

    @property
    def max_lateness_ms(self) -> int:
        return parse_duration(self.max_lateness)

    @property
    def series_silence_ms(self) -> int:
        return parse_duration(self.series_silence)

    @property
    def start_wait_ms(self) -> int:
        return parse_duration(self.start_wait)

    @property
    def resend_delay_ms(self) -> int:
        return parse_duration(self.resend_delay)

    @property
    def idle_advance_ms(self) -> int:
        return parse_duration(self.idle_advance)

    @property
    def combiners(self) -> int:
        """Partitions of each combine level (``combine_partitions``, or as many as the samples topic)."""
        return self.combine_partitions or self.partitions

    @property
    def series_partition_by(self) -> tuple[str, ...]:
        """``partition_by`` for :func:`detector.labels.partition_for`: as set, else by target, or by
        series family (:data:`detector.labels.BY_SERIES_FAMILY`) with staged rules.

        >>> Settings().series_partition_by, Settings(staged_rules=True).series_partition_by
        (('job', 'instance'), ())
        >>> Settings(staged_rules=True, partition_by=("job", "instance")).series_partition_by
        ('job', 'instance')
        """
        if self.partition_by is not None:
            return self.partition_by
        return BY_SERIES_FAMILY if self.staged_rules else DEFAULT_PARTITION_BY

    @property
    def partials_topics(self) -> tuple[str, str]:
        """The partials topics of the first and second combine levels (the second is used only if needed).

        >>> Settings(app_id="bench-1").partials_topics, Settings(partials_topic="p").partials_topics
        (('bench-1-partials', 'bench-1-partials-2'), ('p', 'p-2'))
        """
        first = self.partials_topic or f"{self.app_id}-partials"
        return first, f"{first}-2"

    @property
    def snapshot_interval_s(self) -> float:
        return parse_duration(self.snapshot_interval) / 1000

    @property
    def snapshot_max_interval_s(self) -> float:
        return parse_duration(self.snapshot_max_interval) / 1000

    @property
    def max_event_loop_lag_s(self) -> float:
        return parse_duration(self.max_event_loop_lag) / 1000

    @property
    def session_timeout_s(self) -> float:
        return parse_duration(self.session_timeout) / 1000

    @property
    def heartbeat_interval_s(self) -> float:
        return parse_duration(self.heartbeat_interval) / 1000

    @property
    def produce_timeout_s(self) -> float:
        return parse_duration(self.produce_timeout) / 1000

    def engine_limits(self) -> dict[str, int]:
        """The limits above as :class:`~detector.rules.engine.RuleEngine` options (worker and replay alike).

        >>> Settings(series_min_interval="0s").engine_limits()["min_interval_ms"]
        0
        """
        return {
            "min_interval_ms": parse_duration(self.series_min_interval),
            "max_series": self.max_series_per_partition,
            "max_evaluations_per_step": self.max_evaluations_per_step,
            "max_catch_up_ms": parse_duration(self.max_catch_up),
        }

    def topics(self) -> dict[str, int]:
        """Every topic Headroom uses, with its partition count, but the compacted ones (:meth:`compacted_topics`,
        :meth:`state_topics`: they are created with their own configuration)."""
        topics = {self.samples_topic: self.partitions, self.global_samples_topic: 1, self.alerts_topic: 1,
                  self.scores_topic: 1, self.forecasts_topic: 1}
        if self.staged_rules:
            topics.update(dict.fromkeys(self.partials_topics, self.combiners))
        return topics

    def compacted_topics(self) -> dict[str, int]:
        """Topics that keep the latest record per key (created with cleanup.policy=compact)."""
        return {self.metadata_topic: 1}

    def state_topics(self) -> dict[str, int]:
        """The compacted state topic: one partition per samples partition, one for the global lane
        (and, with staged rules, one per partition of each combine level)."""
        return {self.state_topic: self.partitions + 1 + (2 * self.combiners if self.staged_rules else 0)}

    def state_lanes(self) -> dict[str, int]:
        """The first state partition of each lane but the samples topic's (which starts at 0)."""
        lanes = {self.global_samples_topic: self.partitions}
        if self.staged_rules:
            first, second = self.partials_topics
            lanes[first] = self.partitions + 1
            lanes[second] = self.partitions + 1 + self.combiners
        return lanes

    def write_limits(self) -> WriteLimits:
        return WriteLimits(max_body_bytes=self.max_body_bytes, max_decompressed_bytes=self.max_decompressed_bytes,
                           max_series_per_request=self.max_series_per_request, name_validation=self.name_validation)

    def sample_window(self, rules_reach_ms: int = 0) -> SampleWindow:
        """The receiver's accepted window; ``rules_reach_ms``: how far back before an evaluation the rules read.

        >>> Settings().sample_window(rules_reach_ms=3_600_000)
        SampleWindow(max_age_ms=11100000, max_ahead_ms=300000)
        """
        return SampleWindow(max_age_ms=parse_duration(self.catch_up_window) + self.lookback_ms + rules_reach_ms,
                            max_ahead_ms=parse_duration(self.max_sample_ahead))
