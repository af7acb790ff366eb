"""The processes a benchmark run starts on loopback, and what it measures about them.

A throwaway PostgreSQL and Redis (as `.ci/run` starts them), gunicorn servers for the
backend, the stand-in WeChat and the ceilings, and samplers for their memory and CPU.
Everything is started on free ports of 127.0.0.1 and stopped by the pid it was given.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Ports other suites on this machine use; never take them even if they look free.
RESERVED_PORTS = {5440, 5441, 6390, 6391}


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- PostgreSQL and Redis ------------------------------------------------------------------------

def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.getuid() == 0 else cmd


class Postgres:
    def __init__(self, workdir: Path, database: str = "miniapp_bench") -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = Path(bins[-1])
        self.dir = workdir / "postgres"
        self.socket_dir = workdir
        self.port = free_port()
        self.database = database
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        if os.getuid() == 0:
            shutil.chown(self.socket_dir, "postgres")
            shutil.chown(self.dir, "postgres")
        subprocess.run(_as_postgres([str(self.bin / "initdb"), "-D", str(self.dir), "-U", "postgres", "-A", "trust"]),
                       check=True, capture_output=True)
        # A throwaway instance on a shared disk: fsync off (as CI's), a buffer pool that holds the
        # 1,000,000-order table's hot indexes, as any production instance of that size would.
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c shared_buffers=256MB -c max_connections=100")
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.dir), "-o", options,
                                     "-l", str(self.dir / "server.log"), "-w", "start"]),
                       check=True, capture_output=True)
        subprocess.run(_as_postgres([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                     "-U", "postgres", self.database]), check=True, capture_output=True)

    def create_database(self, name: str) -> str:
        subprocess.run(_as_postgres([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                     "-U", "postgres", name]), check=True, capture_output=True)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def pids(self) -> list[int]:
        """The postmaster and its backends (one per client connection)."""
        try:
            master = int((self.dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [master, *children(master)]

    def stop(self) -> None:
        if (self.dir / "postmaster.pid").exists():
            subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", "fast", "stop"]),
                           capture_output=True)


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=self.log.open("w"), stderr=subprocess.STDOUT)

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        wait_until(ping, 10, "redis-server")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        stop_process(self.proc)


# -- gunicorn servers -----------------------------------------------------------------------------

@dataclass
class Gunicorn:
    """`gunicorn -c gunicorn.conf.py APP` with the README's settings, on a free loopback port."""

    name: str
    app: str
    env: dict[str, str]
    workdir: Path
    health_path: str
    workers: int = 2
    threads: int = 4
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.workdir / f"{self.name}-access.log"

    @property
    def error_log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        env = {**self.env, "GUNICORN_BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": str(self.workers),
               "GUNICORN_THREADS": str(self.threads), "GUNICORN_ACCESS_LOG": str(self.access_log),
               "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *self.extra_args, self.app],
                                     env=env, cwd=ROOT, stdout=self.error_log.open("a"), stderr=subprocess.STDOUT)

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.error_log.read_text(errors='replace')[-3000:]}")
            return requests.get(self.url + self.health_path, timeout=2).status_code < 500

        try:
            wait_until(healthy, 30, self.name)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.error_log.read_text(errors='replace')[-3000:]}") from None
        # Every worker booted (the first answer may come before the second worker is up).
        wait_until(lambda: len(self.workers_pids()) >= self.workers, 30, f"{self.name}'s workers")

    def stop(self) -> None:
        stop_process(self.proc)

    def workers_pids(self) -> list[int]:
        if self.proc is None:
            return []
        return children(self.proc.pid)

    def pids(self) -> list[int]:
        return ([self.proc.pid] if self.proc else []) + self.workers_pids()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


# -- measuring the processes ------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


class Sampler:
    """Peak RSS (summed over master and workers) and CPU time of servers while a scenario runs."""

    def __init__(self, servers: dict, every: float = 0.2) -> None:
        """`servers`: name -> anything with `pids()` (gunicorn servers, PostgreSQL, Redis)."""
        self.servers = servers
        self.every = every
        self.peak_kib = {name: 0 for name in servers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu0: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def _cpu(self, server) -> float:
        return sum(cpu_seconds(pid) for pid in server.pids())

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, server in self.servers.items():
                self.peak_kib[name] = max(self.peak_kib[name], sum(rss_kib(pid) for pid in server.pids()))
            self._stop.wait(self.every)

    def __enter__(self) -> "Sampler":
        self._cpu0 = {name: self._cpu(s) for name, s in self.servers.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = {name: self._cpu(s) - self._cpu0[name] for name, s in self.servers.items()}


class AccessLogTail:
    """The lines a server's access log gained while a scenario ran."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size if path.exists() else 0

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.start)
            return f.read().decode("utf-8", "replace").splitlines()


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
