"""A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM).

The jars come from Maven Central (or, without ``mvn``, the Apache release
tarball) into a per-user cache. ``server.properties`` is generated in code
from the ports and data directory; logging is configured by
``compose/kafka/log4j2.yaml``, which sends log lines to the process output and
so into ``<data_dir>/kafka.log``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import fcntl
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from pipelines.stack.process import (
    LOCALHOST,
    BackgroundService,
    StackError,
    free_ports,
    port_answers,
)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# The slf4j binding must match the log4j-core that kafka_2.13 pulls in
# (`mvn dependency:tree`); without it the broker logs nothing at all.
LOG4J_VERSION = "2.24.3"
LOG4J_CONFIG = Path(__file__).resolve().parents[2] / "compose" / "kafka" / "log4j2.yaml"
RELEASE_URL = (f"https://archive.apache.org/dist/kafka/{KAFKA_VERSION}/"
               f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.tgz")

T = TypeVar("T")


def cache_dir() -> Path:
    """``$HEADROOM_CACHE``, else ``$XDG_CACHE_HOME/headroom``, else ``~/.cache/headroom``."""
    if os.environ.get("HEADROOM_CACHE"):
        return Path(os.environ["HEADROOM_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "headroom"


def kafka_libs() -> Path:
    """The directory of broker jars for ``KAFKA_VERSION``, resolved on first use.

    Uses Maven when ``mvn`` is on PATH, else downloads the Apache release
    tarball. A marker file records completion so later calls return at once.
    """
    home = cache_dir() / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    marker = home / "libs.resolved"
    if marker.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(home / ".lock"):  # two processes resolving at once would mix jars
        if not marker.exists():
            shutil.rmtree(libs, ignore_errors=True)
            if shutil.which("mvn"):
                _resolve_with_maven(home, libs)
            else:
                _extract_release_libs(home, libs)
            marker.write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return libs


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _resolve_with_maven(home: Path, libs: Path) -> None:
    pom = home / "pom.xml"
    pom.write_text(f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>headroom</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>{KAFKA_VERSION}</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
""")
    command = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise StackError(f"resolving Kafka jars failed: {' '.join(command)}\n{output}")


def _extract_release_libs(home: Path, libs: Path) -> None:
    tarball = home / RELEASE_URL.rsplit("/", 1)[1]
    partial = tarball.with_suffix(".part")
    try:
        with urllib.request.urlopen(RELEASE_URL, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        raise StackError(f"no mvn on PATH and downloading {RELEASE_URL} failed: {err}") from err
    partial.rename(tarball)
    libs.mkdir(parents=True)
    prefix = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}/libs/"
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            # Copy jars by their base name only, so no archive path can escape libs/.
            if member.isfile() and member.name.startswith(prefix) and member.name.endswith(".jar"):
                source = archive.extractfile(member)
                assert source is not None
                (libs / Path(member.name).name).write_bytes(source.read())
    tarball.unlink()


def new_cluster_id() -> str:
    """A random cluster id as ``kafka-storage random-uuid`` makes it: base64url of 16 bytes, no padding.

    >>> len(new_cluster_id()), new_cluster_id().startswith("-")
    (22, False)
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka's own generator skips these too: the CLI would read them as a flag.
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker(BackgroundService):
    """A single-node KRaft broker whose data, config, pid, state and log live in ``data_dir``.

    Ports left at 0 are taken from the state file of an earlier run in the same
    ``data_dir``, else picked free; so stopping and starting again (from this
    object or from another process) brings back the same broker with its data::

        with KafkaBroker(Path("var/kafka")) as broker:
            await create_topics(broker.bootstrap, {"samples": 4})
            ...  # produce and consume on broker.bootstrap

    ``start`` blocks, about 3-4 s here; the very first start also resolves the
    jars (about 7 s from Maven Central).
    """

    name = "kafka"

    def __init__(self, data_dir: Path | str, port: int = 0, controller_port: int = 0,
                 heap: str = "512m", config_overrides: Mapping[str, str | int] | None = None,
                 gc: str = "-XX:+UseG1GC") -> None:
        super().__init__(data_dir)
        previous = self._read_state()
        spare = iter(free_ports(2))
        self.port: int = port or previous.get("port") or next(spare)
        self.controller_port: int = controller_port or previous.get("controller_port") or next(spare)
        self.heap = heap
        # For benches that compare broker settings; the defaults below are what Headroom runs.
        self.config_overrides = dict(config_overrides or {})
        self.gc = gc

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "kafka.json"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    def start(self, timeout: float = 60.0) -> None:
        """Launch the broker; return once it answers Kafka metadata requests.

        ``timeout`` covers the broker's own startup, not the first-time jar download.
        """
        libs = kafka_libs()
        deadline = time.monotonic() + timeout
        if not LOG4J_CONFIG.exists():
            raise StackError(f"Kafka log configuration {LOG4J_CONFIG} is missing")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.log_dir / "meta.properties").exists():
            self._format_storage(libs)
        self._launch([
            "java", f"-Xmx{self.heap}", f"-Xms{self.heap}", self.gc,
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp", f"{libs}/*", "kafka.Kafka", str(self.config_file),
        ], ports=[self.port, self.controller_port])
        self._write_state()
        self._wait_until(lambda: port_answers(self.port), deadline, f"listening on {self.bootstrap}")
        cluster_id = self.cluster_id()
        self._wait_until(lambda: _answering_cluster_id(self.bootstrap) == cluster_id, deadline,
                         f"answering metadata requests on {self.bootstrap}")

    def cluster_id(self) -> str | None:
        """The cluster id the storage was formatted with, None before the first start."""
        try:
            lines = (self.log_dir / "meta.properties").read_text().splitlines()
        except FileNotFoundError:
            return None
        values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        return values.get("cluster.id")

    def _write_config(self) -> None:
        settings = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@{LOCALHOST}:{self.controller_port}",
            "listeners": (f"PLAINTEXT://{LOCALHOST}:{self.port},"
                          f"CONTROLLER://{LOCALHOST}:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://{LOCALHOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.log_dir,
            # Otherwise a producer's metadata request creates a topic with
            # 1 partition before the app creates it with the right count.
            "auto.create.topics.enable": "false",
            "num.partitions": 1,
            "offsets.topic.replication.factor": 1,
            # Fewer internal partitions: the first consumer group and the first
            # transaction start much faster than with the default 50.
            "offsets.topic.num.partitions": 4,
            "transaction.state.log.num.partitions": 4,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # After a crash the restarted broker waits for its old session to
            # expire before serving: 4 s instead of the default 9 s.
            "broker.session.timeout.ms": 4000,
            # Idle cost: an idle broker spent about 31 CPU-ms/s with a heartbeat every 500 ms
            # and the controller's no-op metadata record every 500 ms (Kafka's default), about
            # 19 with 1 s and 5 s (bench/README, broker_idle). Four heartbeats per session remain.
            "broker.heartbeat.interval.ms": 1000,
            "metadata.max.idle.interval.ms": 5000,
            # Threads sized to the machine, not Kafka's 8 request handlers and 3 network threads:
            # each one wakes several times a second to poll its queue, and on 2 cores that
            # polling was about 3 of an idle broker's 14-17 CPU-ms/s (bench broker_idle).
            "num.io.threads": max(2, os.cpu_count() or 2),
            "num.network.threads": max(1, (os.cpu_count() or 2) // 4),
            "message.max.bytes": 8388608,
            "log.segment.bytes": 16 * 1024 * 1024,
            "log.retention.hours": 24,
            "log.retention.check.interval.ms": 60000,
        }
        settings.update(self.config_overrides)
        lines = ["# Written by pipelines.stack.kafka on every start."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        self.config_file.write_text("\n".join(lines) + "\n")

    def _format_storage(self, libs: Path) -> None:
        command = ["java", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
                   "-t", new_cluster_id(), "-c", str(self.config_file)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage in {self.log_dir} failed:\n"
                             f"{result.stdout}{result.stderr}")

    def _write_state(self) -> None:
        self.state_file.write_text(json.dumps({
            "pid": self.pid(),
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap": self.bootstrap,
            "kafka_version": KAFKA_VERSION,
        }, indent=2) + "\n")

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}


def _answering_cluster_id(bootstrap: str) -> str | None:
    """The cluster id a metadata request to ``bootstrap`` returns, None if it fails."""
    async def describe() -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            return (await admin.describe_cluster())["cluster_id"]
        finally:
            await admin.close()

    try:
        return _run_in_own_loop(describe())
    except (KafkaError, OSError, asyncio.TimeoutError):
        return None


def _run_in_own_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    # A thread of its own lets synchronous callers use aiokafka even when
    # they are themselves inside a running event loop (async tests, Faust).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def create_topics(bootstrap: str, partitions: Mapping[str, int],
                        config: Mapping[str, str | int] | None = None, timeout: float = 30.0) -> None:
    """Create each ``{topic: partition count}`` missing on ``bootstrap`` (replication factor 1).

    Idempotent: existing topics are left alone, unless their partition count
    differs, which is an error. Returns once metadata shows every topic with
    all its partitions and each partition's leader answers. ``config``
    applies to every new topic, e.g. ``{"retention.ms": 3600000}``.
    """
    deadline = time.monotonic() + timeout
    topic_config = {key: str(value) for key, value in (config or {}).items()}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, count, 1, topic_configs=topic_config) for name, count in partitions.items()]
        )
        for result in response.to_object()["topic_errors"]:
            code = result["error_code"]
            if code not in (0, TopicAlreadyExistsError.errno):
                reason = result["error_message"] or for_code(code).__name__
                raise StackError(f"creating Kafka topic {result['topic']!r} on {bootstrap} failed: {reason}")
        await _wait_for_topics(admin, partitions, deadline)
    finally:
        await admin.close()
    await _wait_until_served(bootstrap, partitions, deadline)


async def _wait_for_topics(admin: AIOKafkaAdminClient, partitions: Mapping[str, int],
                           deadline: float) -> None:
    while True:
        pending = []
        for topic in await admin.describe_topics(list(partitions)):
            name, found = topic["topic"], topic["partitions"]
            if topic["error_code"] == 0 and found and len(found) != partitions[name]:
                raise StackError(f"Kafka topic {name!r} exists with {len(found)} partitions, "
                                 f"not {partitions[name]}")
            if topic["error_code"] != 0 or not found or any(p["leader"] < 0 for p in found):
                pending.append(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise StackError(f"Kafka topics {pending} did not appear in metadata in time")
        await asyncio.sleep(0.1)


async def _wait_until_served(bootstrap: str, partitions: Mapping[str, int], deadline: float) -> None:
    # Metadata names a partition's leader a moment before that leader serves
    # it; a producer sending then gets NOT_LEADER and logs a retry warning.
    # aiokafka retries ListOffsets until every partition answers.
    remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=remaining_ms)
    await consumer.start()
    try:
        await consumer.end_offsets(
            [TopicPartition(name, number) for name, count in partitions.items() for number in range(count)]
        )
    except KafkaError as err:
        raise StackError(f"Kafka topics {sorted(partitions)} are not served on {bootstrap}: {err!r}") from err
    finally:
        await consumer.stop()


async def read_json_records(bootstrap: str, topic: str, until, timeout: float = 60.0) -> list[dict]:
    """JSON records from the start of ``topic`` until ``until(records)`` is true or the timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    events: list[dict] = []
    try:
        async with asyncio.timeout(timeout):
            while not until(events):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    events += [json.loads(r.value) for r in records]
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return events


async def consumer_group_members(bootstrap: str, group: str) -> int:
    """Members of a consumer group once it is stable (0 while it rebalances or has no coordinator yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    except KafkaError:
        return 0
    finally:
        await admin.close()
    _, _, state, _, _, members, *_ = response.groups[0]
    return len(members) if state == "Stable" else 0
