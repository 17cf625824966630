"""Running local server processes: ports, HTTP probes, pid files, logs, start, stop, installs.

Servers are started detached (their own session and process group, output to a
log file) so a CLI command can start one and exit; another process finds it
again through the pid file in the server's data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar, Self

from detector.errors import HeadroomError

LOCALHOST = "127.0.0.1"


class StackError(HeadroomError):
    """A local service could not be installed, started, reached or stopped."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """``count`` distinct free TCP ports on ``host``.

    >>> a, b = free_ports(2)
    >>> a != b
    True
    """
    with ExitStack() as stack:
        # Holding every probe socket open until all are bound keeps the ports distinct.
        probes = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for probe in probes:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in probes]


def port_answers(port: int, host: str = LOCALHOST) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    deadline: float,
    host: str = LOCALHOST,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until ``host:port`` answers; ``deadline`` is a ``time.monotonic()`` value.

    Gives up early if ``process`` (the server meant to listen there) exits.
    """
    while not port_answers(port, host):
        if process is not None and process.poll() is not None:
            raise StackError(f"process {process.pid} exited with code {process.returncode} "
                             f"before {host}:{port} answered")
        if time.monotonic() > deadline:
            raise StackError(f"nothing answered on {host}:{port} before the deadline")
        time.sleep(0.1)


def http_ready(url: str) -> bool:
    """Whether ``url`` answers a GET with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> Any:
    """GET ``url`` (or POST ``body`` as JSON when given) and return the parsed JSON answer."""
    request = urllib.request.Request(url)
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as err:
        raise StackError(f"{request.get_method()} {url} answered {err.code}: "
                         f"{err.read().decode(errors='replace')}") from err
    return json.loads(payload) if payload else None


def start_process(
    argv: Sequence[str],
    log_file: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached in its own process group, stdout and stderr appended to ``log_file``.

    ``env`` replaces the environment when given (default: inherit this process's).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        # A header per launch keeps restarts apart when reading the log.
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def write_pid_file(path: Path, pid: int) -> None:
    """Record ``pid`` in ``path``."""
    path.write_text(f"{pid}\n")


def read_pid_file(path: Path) -> int | None:
    """The pid recorded in ``path``, or None if there is no readable one."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_alive(pid: int, cmdline_contains: str | None = None) -> bool:
    """Whether ``pid`` runs (zombies count as dead), optionally checking its command line.

    The command line check guards against a stale pid file whose pid the
    kernel has since given to an unrelated process.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        return False
    return cmdline_contains is None or cmdline_contains in cmdline




def kill_group(pid: int) -> None:
    """SIGKILL a process group (``start_process`` starts each in its own) and wait until it is gone."""
    os.killpg(pid, signal.SIGKILL)
    while is_alive(pid):
        time.sleep(0.02)

def stop_pid(pid: int, grace: float = 20.0) -> None:
    """SIGTERM ``pid`` (its whole group when it leads one); SIGKILL if still alive after ``grace`` s."""
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while is_alive(pid):
        if time.monotonic() > deadline:
            _signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while is_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            break
        time.sleep(0.1)
    if is_alive(pid):
        raise StackError(f"process {pid} survived SIGKILL")


def _signal(pid: int, signum: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


_apt_updated = False


def ensure_debian_package(binary: str, package: str) -> Path:
    """Path of ``binary``, installing Debian ``package`` with apt-get first if it is missing.

    ``apt-get update`` runs at most once per process.
    """
    global _apt_updated
    found = shutil.which(binary)
    if found:
        return Path(found)
    if not _apt_updated:
        _apt_get("update")
        _apt_updated = True
    _apt_get("install", "-y", "--no-install-recommends", package)
    found = shutil.which(binary)
    if not found:
        raise StackError(f"installed Debian package {package!r} but {binary!r} is still missing")
    return Path(found)


def _apt_get(*args: str) -> None:
    command = ["apt-get", *args]
    try:
        result = subprocess.run(
            command,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as err:
        raise StackError(f"{' '.join(command)}: apt-get not found; install the package by hand") from err
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise StackError(
            f"{' '.join(command)} failed with code {result.returncode} "
            f"(needs root and a reachable Debian mirror):\n  " + "\n  ".join(output)
        )


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of the log at ``path`` (empty if there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class BackgroundService(ABC):
    """One server process owned through a pid file in its data directory.

    Subclasses set ``name`` and implement ``start()`` with ``_launch`` (command
    line and ports) and ``_wait_until`` (readiness check). Every command
    line must mention the data directory (its config file lives there): that
    is how a pid from the pid file is recognised as still being this server.
    A minimal subclass::

        class FileServer(BackgroundService):
            name = "files"

            def start(self, timeout: float = 10.0) -> None:
                port = free_port()
                self._launch(["python3", "-m", "http.server", "-d", f"{self.data_dir}/", str(port)],
                             ports=[port])
                self._wait_until(lambda: port_answers(port), time.monotonic() + timeout, "listening")
    """

    name: ClassVar[str]
    stop_grace: ClassVar[float] = 20.0

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The server's pid if it is running, else None."""
        pid = read_pid_file(self.pid_file)
        if pid is not None and is_alive(pid, cmdline_contains=f"{self.data_dir}{os.sep}"):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    @abstractmethod
    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it serves requests."""

    def stop(self) -> None:
        """Stop the server (this process's or one found through the pid file); no-op if not running."""
        ours = self._process is not None and self._process.poll() is None
        pid = self._process.pid if ours else self.pid()
        if pid is not None:
            stop_pid(pid, self.stop_grace)
        if self._process is not None:
            self._process.wait()
            self._process = None
        self.pid_file.unlink(missing_ok=True)

    def _launch(self, argv: Sequence[str], ports: Sequence[int]) -> None:
        """Start ``argv`` as this server, which will listen on ``ports``."""
        running = self.pid()
        if running is not None:
            raise StackError(f"{self.name} is already running as pid {running} in {self.data_dir}")
        # Checked up front: the server's own bind error is buried in its log.
        busy = ", ".join(str(port) for port in ports if port_answers(port))
        if busy:
            raise StackError(f"{self.name} in {self.data_dir} cannot start: port {busy} already in use")
        if self._process is not None:
            self._process.poll()  # reap an earlier run that died on its own
        self._process = start_process(argv, self.log_file, cwd=self.data_dir)
        write_pid_file(self.pid_file, self._process.pid)

    def _wait_until(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        """Poll ``ready`` until it is true; on early exit or timeout stop the server and raise."""
        assert self._process is not None, "_wait_until needs a process started by _launch"
        while not ready():
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise StackError(f"{self.name} exited with code {code} before {what}; "
                                 f"last lines of {self.log_file}:\n{log_tail(self.log_file)}")
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"{self.name} was not {what} in time; "
                                 f"last lines of {self.log_file}:\n{log_tail(self.log_file)}")
            time.sleep(0.2)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
