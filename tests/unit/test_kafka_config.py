"""The broker's server.properties: Headroom's settings, and a bench's overrides on top."""

from pathlib import Path

from pipelines.stack.kafka import KafkaBroker


def _properties(broker: KafkaBroker) -> dict[str, str]:
    broker.data_dir.mkdir(parents=True, exist_ok=True)
    broker._write_config()
    lines = broker.config_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_idle_timers_are_relaxed_but_a_session_spans_several_heartbeats(tmp_path: Path) -> None:
    settings = _properties(KafkaBroker(tmp_path / "kafka", port=19092, controller_port=19093))
    heartbeat = int(settings["broker.heartbeat.interval.ms"])
    assert heartbeat >= 1000  # 500 ms cost about 7 CPU-ms/s at idle (bench broker_idle)
    assert int(settings["broker.session.timeout.ms"]) >= 4 * heartbeat
    assert int(settings["metadata.max.idle.interval.ms"]) > 500  # Kafka's default writes a no-op twice a second


def test_thread_pools_follow_the_machine_not_kafkas_server_defaults(tmp_path: Path, monkeypatch) -> None:
    for cores, io, network in ((2, 2, 1), (8, 8, 2), (None, 2, 1)):
        monkeypatch.setattr("os.cpu_count", lambda: cores)
        settings = _properties(KafkaBroker(tmp_path / "kafka", port=19092, controller_port=19093))
        assert (int(settings["num.io.threads"]), int(settings["num.network.threads"])) == (io, network)


def test_overrides_replace_settings(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka", port=19092, controller_port=19093,
                         config_overrides={"metadata.max.idle.interval.ms": 10000, "num.io.threads": 7})
    settings = _properties(broker)
    assert settings["metadata.max.idle.interval.ms"] == "10000"
    assert settings["num.io.threads"] == "7"
    assert settings["listeners"].startswith("PLAINTEXT://")
