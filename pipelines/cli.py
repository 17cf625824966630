"""The ``headroom`` command.

Settings come from ``HEADROOM_*`` environment variables (see
:mod:`pipelines.settings`); options given here override them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
from prometheus_client import CollectorRegistry, Gauge
from rich.console import Console

from detector.errors import HeadroomError, RuleError
from detector.rules.files import RuleFiles, load_rules
from pipelines.settings import Settings
from pipelines.stack.cli import kafka
from pipelines.replay_cli import record, replay
from pipelines.score_csv_cli import score_csv
from pipelines.test_rules_cli import test_rules

console = Console(stderr=True)
log = logging.getLogger("headroom.rules")


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v not in (None, ())})


def _read_rules(settings: Settings) -> RuleFiles:
    return load_rules(
        settings.rule_files,
        default_interval_ms=settings.evaluation_interval_ms,
        external_labels=settings.external_labels,
        external_url=settings.external_url,
        strict=settings.strict_rules,
    )


def _load_rules(settings: Settings) -> RuleFiles:
    """The rule files, or exit 2 naming every problem; each rule left out is logged (HEADROOM_STRICT_RULES: none is)."""
    try:
        rules = _read_rules(settings)
        errors = rules.errors()
        if errors:
            raise RuleError(errors)
    except HeadroomError as exc:
        console.print(f"[red]{exc}[/red]", markup=True, highlight=False)
        sys.exit(2)
    for refused in rules.refused:
        for problem in refused.problems:
            log.warning("rule refused, the rest of its file runs: %s", problem)
    return rules


def refused_rules_registry(rules: RuleFiles) -> CollectorRegistry:
    """A registry for the worker's /metrics holding ``headroom_rules_refused``: the rules left out."""
    registry = CollectorRegistry()
    Gauge("headroom_rules_refused", "Rules of the rule files left out because Headroom cannot run them (see the log)",
          registry=registry).set(len(rules.refused))
    return registry


def _load_groups(settings: Settings):
    return _load_rules(settings).groups


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Headroom: Prometheus alerting rules, anomaly scores and forecasts on a Kafka stream."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


cli.add_command(kafka)
cli.add_command(test_rules)
cli.add_command(replay)
cli.add_command(record)
cli.add_command(score_csv)


@cli.command("check-rules")
@click.argument("files", nargs=-1, required=True)
@click.option("--strict", is_flag=True, default=None, help="A rule Headroom cannot run fails its file (HEADROOM_STRICT_RULES).")
def check_rules(files: tuple[str, ...], strict: bool | None) -> None:
    """Check rule files (or packs, by name) the way the worker loads them, in promtool check rules' words.

    Per file: "SUCCESS: N rules found", then the rules Headroom leaves out and
    why (the others run), or "FAILED:" and every problem. The exit code is 1
    if a file fails: one Prometheus refuses too, or under --strict one with a
    rule Headroom cannot run.
    """
    settings = _settings(rule_files=files, strict_rules=strict)
    rules = _read_rules(settings)
    failed = False
    for name, report in zip(files, rules.files):
        click.echo(f"Checking {name}")
        if report.invalid or (rules.strict and report.refused):
            failed = True
            click.echo("  FAILED:", err=True)
            for problem in report.all_problems:
                click.echo(problem, err=True)
        else:
            click.echo(f"  SUCCESS: {report.rules_found} rules found")
            if report.refused:
                click.echo(f"  REFUSED: {len(report.refused)} of them cannot run in Headroom and are left out; the others run:")
                for refused in report.refused:
                    for problem in refused.problems:
                        click.echo(f"    {problem}")
        click.echo()
    sys.exit(1 if failed else 0)


@cli.command()
@click.option("--host", default=None, help="Listen address (HEADROOM_RECEIVER_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (HEADROOM_RECEIVER_PORT).")
@click.option("--kafka", "bootstrap", default=None, help="Kafka bootstrap servers (HEADROOM_KAFKA_BOOTSTRAP).")
@click.option("--rules", "rule_files", multiple=True, help="The worker's rule files (HEADROOM_RULE_FILES): they decide the global lane's inputs.")
@click.option("--bearer-token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Require 'Authorization: Bearer <token>' with the token in this file.")
@click.option("--tls-cert-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Serve HTTPS with this certificate (PEM; HEADROOM_RECEIVER_TLS_CERT_FILE).")
@click.option("--tls-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The certificate's key (PEM; HEADROOM_RECEIVER_TLS_KEY_FILE).")
@click.option("--tls-client-ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Require client certificates signed by this CA (HEADROOM_RECEIVER_TLS_CLIENT_CA_FILE).")
@click.option("--basic-auth-user", default=None, help="Require basic auth as this user (HEADROOM_RECEIVER_BASIC_AUTH_USER).")
@click.option("--basic-auth-password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The basic auth password, in this file (HEADROOM_RECEIVER_BASIC_AUTH_PASSWORD_FILE).")
def receiver(host: str | None, port: int | None, bootstrap: str | None, rule_files: tuple[str, ...], bearer_token_file: Path | None,
             tls_cert_file: Path | None, tls_key_file: Path | None, tls_client_ca_file: Path | None,
             basic_auth_user: str | None, basic_auth_password_file: Path | None) -> None:
    """Serve Prometheus remote-write on /api/v1/write and produce to Kafka."""
    from pydantic import ValidationError

    from pipelines.receiver import run_receiver

    from pipelines.stages import global_lane_placement

    try:
        settings = _settings(receiver_host=host, receiver_port=port, kafka_bootstrap=bootstrap, rule_files=rule_files,
                             receiver_tls_cert_file=tls_cert_file, receiver_tls_key_file=tls_key_file,
                             receiver_tls_client_ca_file=tls_client_ca_file, receiver_basic_auth_user=basic_auth_user,
                             receiver_basic_auth_password_file=basic_auth_password_file)
    except ValidationError as exc:  # the settings' own messages name the problem; no traceback
        console.print(f"[red]{exc}[/red]")
        sys.exit(2)
    # The same rule files as the worker's: they say which series the global lane needs
    # (with staged rules, only the inputs of what the stages cannot separate).
    placement = global_lane_placement(settings, _load_groups(settings))
    token = bearer_token_file.read_text().strip() if bearer_token_file else None
    try:
        asyncio.run(run_receiver(settings, bearer_token=token, placement=placement))
    except KeyboardInterrupt:
        pass
    except HeadroomError as exc:  # e.g. a certificate that does not load
        console.print(f"[red]{exc}[/red]")
        sys.exit(2)


@cli.command()
@click.option("--rules", "rule_files", multiple=True, help="Rule file or pack name; repeatable (HEADROOM_RULE_FILES).")
@click.option("--kafka", "bootstrap", default=None, help="Kafka bootstrap servers (HEADROOM_KAFKA_BOOTSTRAP).")
@click.option("--web-port", type=int, default=None, help="Port of the worker's /metrics (HEADROOM_WORKER_WEB_PORT).")
def worker(rule_files: tuple[str, ...], bootstrap: str | None, web_port: int | None) -> None:
    """Run the Faust worker that evaluates the rules on the samples topic."""
    from faust.worker import Worker

    from pipelines.app import create_app
    from pipelines.stack.kafka import create_topics
    from pipelines.state import state_topic_config

    settings = _settings(rule_files=rule_files, kafka_bootstrap=bootstrap, worker_web_port=web_port)
    rules = _load_rules(settings)
    registry = refused_rules_registry(rules)
    asyncio.run(create_topics(settings.kafka_bootstrap, settings.topics()))
    asyncio.run(create_topics(settings.kafka_bootstrap, settings.compacted_topics(), {"cleanup.policy": "compact"}))
    asyncio.run(create_topics(settings.kafka_bootstrap, settings.state_topics(),
                              config=state_topic_config(settings.snapshot_max_bytes)))
    app = create_app(settings, rules.groups, registry)
    Worker(app, loglevel="info").execute_from_commandline()


@cli.command()
@click.option("--url", default="http://127.0.0.1:9201/api/v1/write", show_default=True, help="Remote-write URL to push to.")
@click.option("--scenario", default="backpressure", show_default=True, help="Scripted scenario (backpressure, calm).")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Event time runs this many times faster than wall time.")
@click.option("--step", type=float, default=5.0, show_default=True, help="Seconds of event time between samples.")
@click.option("--duration", type=float, default=None, help="Stop after this many wall-clock seconds.")
@click.option("--serve", "serve_port", type=int, default=None, help="Instead of pushing, serve /metrics on this port for Prometheus to scrape.")
@click.option("--seed", type=int, default=0, show_default=True)
def simulate(url: str, scenario: str, speed: float, step: float, duration: float | None, serve_port: int | None, seed: int) -> None:
    """Generate the backpressure runbook's metrics, with a scripted incident."""
    import time

    from simulator.runbook import RunbookSimulator
    from simulator.serve import push_remote_write, serve_metrics

    start_ms = int(time.time() * 1000)
    sim = RunbookSimulator(scenario=scenario, seed=seed, start_ms=start_ms)

    async def run() -> None:
        if serve_port is not None:
            runner, port = await serve_metrics(sim, port=serve_port)
            console.print(f"serving {sim.series_count()} series on http://127.0.0.1:{port}/metrics")
            try:
                await asyncio.sleep(duration if duration is not None else float("inf"))
            finally:
                await runner.cleanup()
            return
        stats = await push_remote_write(sim, url, start_ms=start_ms, step_ms=int(step * 1000), speed=speed,
                                       duration_s=None if duration is None else duration * speed)
        console.print(stats)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option("--duration", type=float, default=120.0, show_default=True, help="Wall-clock seconds to run.")
@click.option("--speed", type=float, default=10.0, show_default=True, help="Event time runs this many times faster than wall time.")
@click.option("--scenario", default="backpressure", show_default=True)
@click.option("--rules", "rule_files", multiple=True, default=("backpressure", "backpressure-levels"), show_default=True)
def demo(duration: float, speed: float, scenario: str, rule_files: tuple[str, ...]) -> None:
    """Start Kafka, a worker and a receiver, replay an incident, and show alerts as they fire."""
    from pipelines.demo import run_demo

    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # the live table is the output
    _load_groups(_settings(rule_files=rule_files))  # fail fast, before starting anything
    sys.exit(asyncio.run(run_demo(duration=duration, speed=speed, scenario=scenario, rule_files=rule_files, console=Console())))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
