"""``headroom kafka start|stop|status``: a local broker that outlives the command.

The main CLI adds the group with ``cli.add_command(kafka)``. Prometheus and
Alertmanager have no commands: their configuration depends on what they
scrape and where they write, which the demo wires up in code.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.stack.kafka import KafkaBroker
from pipelines.stack.process import StackError

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/kafka"),
    show_default=True,
    envvar="HEADROOM_KAFKA_DIR",
    help="Broker data, config, pid file, state file and log.",
)


@click.group()
def kafka() -> None:
    """Run a local single-node Kafka broker (KRaft) for the demo and tests."""


@kafka.command()
@data_dir_option
@click.option("--port", type=int, default=0, help="Client port; 0 reuses the last one or picks a free one.")
@click.option("--controller-port", type=int, default=0, help="KRaft controller port; 0 as for --port.")
@click.option("--heap", default="512m", show_default=True, help="JVM heap (-Xms and -Xmx).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the broker.")
def start(data_dir: Path, port: int, controller_port: int, heap: str, timeout: float) -> None:
    """Start the broker in the background; print its bootstrap address."""
    broker = KafkaBroker(data_dir, port=port, controller_port=controller_port, heap=heap)
    if broker.is_running():
        click.echo(f"kafka already running: pid {broker.pid()}, bootstrap {broker.bootstrap}")
        return
    try:
        broker.start(timeout=timeout)
    except StackError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"kafka running: pid {broker.pid()}, bootstrap {broker.bootstrap}, log {broker.log_file}")


@kafka.command()
@data_dir_option
def stop(data_dir: Path) -> None:
    """Stop the broker: SIGTERM, SIGKILL after 20 s."""
    broker = KafkaBroker(data_dir)
    if not broker.is_running():
        click.echo("kafka not running")
        return
    try:
        broker.stop()
    except StackError as err:
        raise click.ClickException(str(err)) from err
    click.echo("kafka stopped")


@kafka.command()
@data_dir_option
def status(data_dir: Path) -> None:
    """Show whether the broker runs and where (exit code 1 if not)."""
    broker = KafkaBroker(data_dir)
    pid = broker.pid()
    if pid is None:
        click.echo(f"kafka not running (data dir {broker.data_dir})")
        raise SystemExit(1)
    click.echo(f"kafka running: pid {pid}, bootstrap {broker.bootstrap}, log {broker.log_file}")
