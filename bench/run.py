#!/usr/bin/env python3
"""`make bench`: throughput, latency and scale of checkout and notification, against the ceilings.

Starts everything itself on loopback (a throwaway PostgreSQL and Redis, the stand-in
WeChat, the backend and the ceilings, each under gunicorn with gunicorn.conf.py), drives
each scenario with wrk for a fixed time, and prints a table that it also writes as JSON
(bench/results/). See bench/README.md for what each scenario does and the last results.

    .venv/bin/python bench/run.py                 # the full run (about 9 minutes)
    .venv/bin/python bench/run.py --smoke         # every scenario for a second: CI's check that it still works
    .venv/bin/python bench/run.py --only pay,read --duration 3 --configs pg   # while iterating
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import dataset, micro  # noqa: E402
from bench.infra import (ROOT, BIN, AccessLogTail, Gunicorn, Postgres, Redis, Sampler,  # noqa: E402
                         load_average)

HERE = Path(__file__).resolve().parent
LUA = HERE / "load.lua"
BENCH_USERS = 4  # order i belongs to bench user i % 4

# name -> (what wrk's script does, the ceiling it is compared with)
SCENARIOS: dict[str, tuple[str, str | None]] = {
    "ceiling-bare": ("bare", None),
    "ceiling-unifiedorder": ("unifiedorder", None),
    "ceiling-jscode2session": ("jscode2session", None),
    "read": ("read", "ceiling-bare"),
    "order": ("order", "ceiling-bare"),
    "pay": ("pay", "ceiling-unifiedorder"),
    "notify": ("notify", "ceiling-bare"),
    "notify-dup": ("notify-dup", "ceiling-bare"),
    "login": ("login", "ceiling-jscode2session"),
}
PRODUCT_SCENARIOS = [s for s, (_, ceiling) in SCENARIOS.items() if ceiling]

# Targets from the issue; reported, not enforced (only errors fail the run).
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
TARGET_SCALE = 1.1
# Issue 15: the backend's CPU per request on PostgreSQL + Redis at 16 connections, ms.
TARGET_CPU_MS = {"read": 1.0, "order": 2.0, "notify": 2.0, "notify-dup": 1.2, "login": 2.5, "pay": 3.5}
# ... and on the embedded defaults notify at least triples its share of the bare ceiling (4% on 2026-12-01).
TARGET_EMBEDDED_NOTIFY_RATIO = 3 * 0.04


@dataclass
class Result:
    config: str
    scenario: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_detail: dict
    statuses: list
    rss_mib: float
    backend_cpu_ms_per_req: float
    standin_cpu_ms_per_req: float
    services_cpu_ms_per_req: dict = field(default_factory=dict)  # PostgreSQL, Redis (when started here)
    orders_in_table: int | None = None
    ceiling: str | None = None
    ceiling_rps: float | None = None
    ceiling_p99_ms: float | None = None
    ratio: float | None = None
    upstream_calls_per_req: float | None = None
    upstream_connections: int | None = None
    wrapped: int = 0
    checks: dict = field(default_factory=dict)


# -- one stack: stand-in WeChat, backend and ceilings on one database and store ------------------------

class Stack:
    def __init__(self, name: str, workdir: Path, database_url: str, redis_url: str | None, args,
                 services: dict | None = None, ceiling: bool = True) -> None:
        self.name, self.args = name, args
        self.services = services or {}  # the PostgreSQL and Redis we started, to measure their CPU
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.database_url, self.redis_url = database_url, redis_url
        self.engine = dataset.engine_for(database_url)
        self.next_index: dict[str, int] = {}
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("WECHAT_", "GUNICORN_", "SANDBOX_")) and k not in (
                    "DATABASE_URL", "REDIS_URL", "EMBEDDED_STORE_PATH", "STORE_PREFIX", "WEB_CONCURRENCY",
                    "APP_ENV", "LOG_LEVEL", "LOGIN_RATE_LIMIT")}
        self.standin = Gunicorn(
            "wechat-standin", "miniapp_server.sandbox.standalone:create_sandbox_app()",
            {**base, "EMBEDDED_STORE_PATH": str(self.dir / "wechat-store.sqlite3"), "STORE_PREFIX": "wechat:",
             **({"REDIS_URL": redis_url} if redis_url else {})},
            self.dir, "/sandbox/control/calls", workers=args.standin_workers,
            # The client's port in each access-log line: distinct ports are distinct TCP connections.
            extra_args=["--access-logformat", "%(h)s %({remote_port}e)s %(U)s %(s)s"])
        wechat = self.standin.url + "/sandbox"
        self.backend_env = {
            **base, "FLASK_APP": "wsgi:app", "DATABASE_URL": database_url,
            "EMBEDDED_STORE_PATH": str(self.dir / "store.sqlite3"), "SECRET_KEY": secrets.token_hex(32),
            "WECHAT_SANDBOX": "1", "WECHAT_API_BASE": wechat, "WECHAT_PAY_BASE": wechat,
            # The login limit (30 a minute per client) would turn a load test from one address into 429s;
            # a huge limit keeps its cost (one store increment per login) in the measurement.
            "LOGIN_RATE_LIMIT": "1000000000",
            **({"REDIS_URL": redis_url} if redis_url else {}),
        }
        self.backend = Gunicorn("backend", "wsgi:app", self.backend_env, self.dir, "/healthz", workers=args.workers,
                                threads=args.worker_threads)
        self.ceiling = None if not ceiling else Gunicorn("ceiling", "bench.ceiling_app:app",
                                {**base, "WECHAT_API_BASE": wechat, "WECHAT_PAY_BASE": wechat},
                                self.dir, "/bare", workers=args.workers,
                                threads=args.worker_threads)
        self.tokens_file = self.dir / "tokens.txt"
        self.product: dict = {}

    def start(self) -> None:
        flask = str(BIN / "flask")
        for cmd in (["db", "upgrade"], ["products", "demo"]):
            done = subprocess.run([flask, *cmd], env=self.backend_env, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"flask {' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
        self.standin.start()
        self.backend.start()
        if self.ceiling:
            self.ceiling.start()
        http = requests.Session()
        self.product = http.get(self.backend.url + "/api/products", timeout=10).json()["items"][0]
        tokens, self.user_ids = [], []
        for k in range(BENCH_USERS):
            resp = http.post(self.backend.url + "/api/auth/login", json={"code": f"bench-owner-{k}#1"}, timeout=10)
            resp.raise_for_status()
            tokens.append(resp.json()["token"])
            self.user_ids.append(resp.json()["user"]["id"])
        self.tokens_file.write_text("\n".join(tokens) + "\n")

    def stop(self, keep_logs_in: Path | None = None) -> None:
        for server in (self.ceiling, self.backend, self.standin):
            if server is None:
                continue
            server.stop()
            if keep_logs_in and server.error_log.exists():  # the app's own log lines land here too
                logs = keep_logs_in / "logs"
                logs.mkdir(exist_ok=True)
                shutil.copy(server.error_log, logs / f"{self.name}-{server.name}.log")
        self.engine.dispose()

    def load(self, prefix: str, count: int) -> int:
        """Bulk-load `count` fresh orders under `prefix`; their first index."""
        start = self.next_index.get(prefix, 0)
        # The orders that are read are a shop's history on PostgreSQL (mostly paid, some closed); the ones to
        # pay or to notify are unpaid.
        history = prefix == "bread0" and self.engine.dialect.name != "sqlite"
        dataset.load_orders(self.engine, prefix=prefix, start=start, count=count, user_ids=self.user_ids,
                            product=self.product, history=history)
        self.next_index[prefix] = start + count
        return start

    @property
    def fee(self) -> int:
        return self.product["price_fen"] * dataset.QUANTITY


# -- running one scenario --------------------------------------------------------------------------------

def wrk(url: str, kind: str, seconds: int, args, base: int = 0, count: int = 0, data: str = "-",
        tokens: str = "-", product_id: int = 1, connections: int | None = None) -> dict:
    connections = connections or args.connections
    threads = min(args.threads, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
           "-s", str(LUA), url, "--", kind, str(base), str(count), data, tokens, str(product_id)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "BENCH_THREADS": str(threads)},
                          timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


class Runner:
    def __init__(self, args, results_dir: Path) -> None:
        self.args = args
        self.results: list[Result] = []
        self.results_dir = results_dir
        self.observed: dict[str, float] = {}  # the best req/s each kind of run reached

    def rate_cap(self, seconds: int, kind: str) -> int:
        """How many fresh orders a run of `seconds` may consume: more than it can (see `wrapped`).

        Twice the rate this kind of run reached before, once it has run; `--rate-cap` until then.
        """
        rate = self.args.rate_cap
        if kind in self.observed:
            rate = min(rate, max(100, 2 * self.observed[kind]))
        return max(200, int(seconds * rate))

    def run(self, stack: Stack, scenario: str, *, label: str | None = None, read_range: tuple[int, int] | None = None,
            profile_to: Path | None = None, seconds: int | None = None, connections: int | None = None) -> Result:
        kind, ceiling = SCENARIOS[scenario]
        seconds = seconds or self.args.duration
        url = stack.ceiling.url if scenario.startswith("ceiling-") else stack.backend.url
        conns = connections or self.args.connections
        checks: dict = {}

        def plan(secs: int) -> dict:
            """The wrk arguments for a run of `secs`, with fresh data where the scenario consumes it."""
            common = {"tokens": str(stack.tokens_file), "product_id": stack.product["id"]}
            if kind == "pay":
                n = self.rate_cap(secs, kind)
                return {**common, "base": stack.load("bpay00", n), "count": n, "data": "bpay00"}
            if kind == "notify":
                n = self.rate_cap(secs, kind)
                start = stack.load("bntfy0", n)
                path = stack.dir / f"notify-{start}.txt"
                dataset.write_notifications(path, "bntfy0", range(start, start + n), stack.fee)
                return {**common, "base": 0, "count": n, "data": str(path), "_range": (start, n)}
            if kind == "notify-dup":
                return {**common, "base": 0, "count": 0, "data": str(stack.dir / "notify-dup.txt")}
            if kind == "read":
                lo, n = read_range or (0, stack.next_index.get("bread0", 0))
                return {**common, "base": lo, "count": n, "data": "bread0"}
            return common

        if kind == "notify-dup" and not (stack.dir / "notify-dup.txt").exists():
            raise RuntimeError("notify-dup runs after notify")
        if self.args.warmup:
            warm = plan(self.args.warmup)
            warm.pop("_range", None)
            wrk(url, kind, self.args.warmup, self.args, connections=conns, **warm)
        measured = plan(seconds)
        notify_range = measured.pop("_range", None)
        standin_log = AccessLogTail(stack.standin.access_log)
        profiler = None
        if profile_to is not None:
            profiler = subprocess.Popen(
                [str(BIN / "py-spy"), "record", "--pid", str(stack.backend.proc.pid), "--subprocesses",
                 "--rate", "200", "--duration", str(seconds), "--format", "raw", "--nonblocking", "--gil",
                 "-o", str(profile_to)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(1.0)  # py-spy attaches to every worker before the load starts
        watched = {"backend": stack.backend if url == stack.backend.url else stack.ceiling, "standin": stack.standin}
        watched.update({name: server for name, server in stack.services.items() if server is not None})
        with Sampler(watched) as sampler:
            out = wrk(url, kind, seconds, self.args, connections=conns, **measured)
        if profiler is not None:
            profiler.wait(60)
        n = max(out["requests"], 1)
        err = out["errors"]
        errors = sum(err.values())
        result = Result(
            config=stack.name, scenario=label or scenario, requests=out["requests"],
            seconds=out["duration_us"] / 1e6, rps=out["requests"] / (out["duration_us"] / 1e6),
            p50_ms=out["p50_us"] / 1000, p99_ms=out["p99_us"] / 1000, max_ms=out["max_us"] / 1000,
            errors=errors, error_detail=err, statuses=out["statuses"],
            rss_mib=sampler.peak_kib["backend"] / 1024,
            backend_cpu_ms_per_req=sampler.cpu["backend"] * 1000 / n,
            standin_cpu_ms_per_req=sampler.cpu["standin"] * 1000 / n, ceiling=ceiling, wrapped=out["wrapped"],
            services_cpu_ms_per_req={name: sampler.cpu[name] * 1000 / n for name in stack.services
                                     if name in sampler.cpu},
        )
        # What crossed the socket to the stand-in: calls per request, and distinct TCP connections.
        upstream = [line.split() for line in standin_log.lines()]
        upstream = [parts for parts in upstream if len(parts) >= 3]
        if upstream:
            result.upstream_calls_per_req = len(upstream) / n
            result.upstream_connections = len({(p[0], p[1]) for p in upstream})
        if kind == "notify" and notify_range:
            start, count = notify_range
            paid = [i for i in dataset.paid_indexes(stack.engine, "bntfy0") if start <= i < start + count]
            # Every acknowledged notification paid its order, once; a few more may have landed after wrk
            # stopped counting (in flight at the end).
            checks["orders_paid"] = len(paid)
            checks["consistent"] = out["requests"] - errors <= len(paid) <= out["requests"] + conns
            dataset.write_notifications(stack.dir / "notify-dup.txt", "bntfy0", paid, stack.fee)
            if not checks["consistent"]:
                result.errors += 1
        result.checks = checks
        self.observed[kind] = max(self.observed.get(kind, 0.0), result.rps)
        if scenario in ("pay", "notify", "read") or kind == "read":
            result.orders_in_table = dataset.count_orders(stack.engine)
        self.results.append(result)
        print(f"  {result.config:<9} {result.scenario:<24} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
              f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
              + (f"  WRAPPED {result.wrapped}" if result.wrapped else ""), flush=True)
        return result


# -- the whole run -----------------------------------------------------------------------------------------

def table(results: list[Result], markdown: bool = False) -> str:
    """One row per product scenario; its ceiling (measured just before it) in the last columns."""
    head = ["config", "scenario", "orders", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB",
            "CPU ms/req", "all CPU ms/req", "WeChat conns", "ceiling", "ceiling req/s", "ceiling p99 ms", "ratio"]
    rows = []
    for r in results:
        if r.scenario.startswith("ceiling-"):
            continue
        all_cpu = r.backend_cpu_ms_per_req + r.standin_cpu_ms_per_req + sum(r.services_cpu_ms_per_req.values())
        rows.append([
            r.config, r.scenario, f"{r.orders_in_table:,}" if r.orders_in_table else "",
            f"{r.rps:,.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", str(r.errors) + (" (wrapped)" if r.wrapped else ""),
            f"{r.rss_mib:.0f}", f"{r.backend_cpu_ms_per_req:.2f}", f"{all_cpu:.2f}",
            f"{r.upstream_connections} ({r.upstream_calls_per_req:.2f}/req)" if r.upstream_connections else "",
            r.ceiling.removeprefix("ceiling-") if r.ceiling and r.ceiling_rps else "",
            f"{r.ceiling_rps:,.0f}" if r.ceiling_rps else "", f"{r.ceiling_p99_ms:.1f}" if r.ceiling_p99_ms else "",
            f"{r.ratio:.0%}" if r.ratio else "",
        ])
    if not rows:
        return "(no results)"
    if markdown:
        align = ["---" if i < 2 else "---:" for i in range(len(head))]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in rows])


def targets(results: list[Result], scale: dict, workers: int, threads: int = 4) -> list[tuple[str, bool, str]]:
    """The issue's targets, each (what, met?, the figure). "A few" upstream connections per worker: at most
    two per worker thread (each thread keeps one alive; a reconnect now and then is fine)."""
    out = []
    for r in results:
        if r.scenario in ("notify", "read", "pay") and r.ratio is not None:
            out.append((f"{r.config} {r.scenario} >= 50% of {r.ceiling}", r.ratio >= TARGET_RATIO, f"{r.ratio:.0%}"))
    for r in results:
        if not r.scenario.startswith("ceiling-") and r.config in ("pg", "embedded"):
            out.append((f"{r.config} {r.scenario} p99 < {TARGET_P99_MS:.0f} ms", r.p99_ms < TARGET_P99_MS,
                        f"{r.p99_ms:.1f} ms"))
    for r in results:
        if r.config == "pg" and r.scenario in TARGET_CPU_MS:
            limit = TARGET_CPU_MS[r.scenario]
            out.append((f"pg {r.scenario} backend CPU <= {limit} ms/req", r.backend_cpu_ms_per_req <= limit,
                        f"{r.backend_cpu_ms_per_req:.2f} ms"))
        if r.config == "embedded" and r.scenario == "notify" and r.ratio is not None:
            out.append((f"embedded notify >= {TARGET_EMBEDDED_NOTIFY_RATIO:.0%} of the bare ceiling (3x 4%)",
                        r.ratio >= TARGET_EMBEDDED_NOTIFY_RATIO, f"{r.ratio:.0%}"))
    total_errors = sum(r.errors for r in results)
    out.append(("zero errors", total_errors == 0, str(total_errors)))
    for name, s in scale.items():
        out.append((f"{name}: {s['large_orders']:,}-order run within {TARGET_SCALE}x "
                    f"of the {s['small_orders']:,}-order run",
                    s["cost_ratio"] <= TARGET_SCALE, f"{s['cost_ratio']:.2f}x"))
    for r in results:
        if r.scenario == "pay" and r.upstream_connections:
            per_worker = r.upstream_connections / max(1, workers)
            out.append((f"{r.config} pay: a few upstream connections per worker", per_worker <= 2 * threads,
                        f"{r.upstream_connections} for {workers} workers ({per_worker:.1f} each)"))
    return out


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    pg = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "postgres": version([str(pg[-1]), "--version"]) if pg else "?",
            "redis": version(["redis-server", "--version"]), "wrk": version(["wrk", "--version"])}


def _area(frame: str) -> str:
    """The package (or stdlib module) a collapsed frame's file belongs to: `f (psycopg/cursor.py:3)` -> psycopg."""
    where = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    if where.startswith("<frozen "):
        return where[len("<frozen "):].rstrip(">")
    first = where.split("/", 1)[0]
    return first.removesuffix(".py") if first else "?"


# What a sample was doing, for the summary: the first rule (in this order) that any frame of its stack matches.
PROFILE_GROUPS = [
    ("audit row", r"\(miniapp_server/audit\.py"),
    ("app log line", r"Logger\.(info|warning|_log)|Handler\.handle \(logging"),
    ("access log", r"glogging"),
    ("xml parse", r"xmltodict|xmlcodec"),
    ("signature", r"signing\.py"),
    ("store (Redis / embedded)", r"miniapp_server/store\.py"),
    ("upstream HTTP call", r"PayClient\._request|MiniAppClient\._call|requests/sessions"),
    ("pool checkout, ping, BEGIN", r"pool/base\.py|_ConnectionFairy|do_ping|_checkout|begin_write|read_connection|read_all"),
    ("commit (and the ORM flush in it)", r"Session\.commit|do_commit"),
    ("session close at teardown", r"Session\.(close|remove)|scoped_session\.remove|_teardown|do_rollback"),
    ("ORM flush", r"Session\.flush|UOWTransaction"),
    ("SQL statements (built, run, rows read)", r"Session\.(execute|get|refresh)|Connection\.execute|Query|"
     r"scoping\.py|sqlalchemy/(sql|orm|engine)/|psycopg/"),
    ("to_dict / JSON answer", r"to_dict|order_dict|json|jsonify|make_response"),
    ("the rest of Flask/Werkzeug and the views", r"flask/|werkzeug/"),
    ("gunicorn worker", r"gunicorn/"),
]


def profile_groups(raw: Path) -> list[tuple[str, float]]:
    counts: dict[str, int] = {}
    total = 0
    rules = [(label, re.compile(rx)) for label, rx in PROFILE_GROUPS]
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        label = next((name for name, rx in rules if any(rx.search(f) for f in frames)), "other")
        counts[label] = counts.get(label, 0) + int(count)
        total += int(count)
    return sorted(((k, v / max(total, 1)) for k, v in counts.items()), key=lambda kv: -kv[1])


def profile_summary(raw: Path, top: int = 25) -> str:
    """py-spy's collapsed stacks as the functions that took the most samples (self and total)."""
    self_n: dict[str, int] = {}
    total_n: dict[str, int] = {}
    area_n: dict[str, int] = {}
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        frames = [re.sub(r" \((?:/[^)]*/)?(site-packages/|lib/python3\.\d+/)?([^)]*)\)", r" (\2)", f) for f in frames]
        if not frames:
            continue
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        area = _area(frames[-1])
        area_n[area] = area_n.get(area, 0) + n
        for f in set(frames):
            total_n[f] = total_n.get(f, 0) + n
    lines = [f"{samples} samples (active threads of both workers)", "", "what the samples were doing:"]
    lines += [f"  {share:6.1%}  {label}" for label, share in profile_groups(raw)]
    lines += ["", "self time by package:"]
    for a, n in sorted(area_n.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"  {n / samples:6.1%}  {a}")
    lines += ["", "top self time:"]
    for f, n in sorted(self_n.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {n / samples:6.1%}  {f}")
    lines += ["", "top total time (inclusive):"]
    for f, n in sorted(total_n.items(), key=lambda kv: -kv[1])[:top * 2]:
        lines.append(f"  {n / samples:6.1%}  {f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every scenario for 1 s, one config, no scale or profile")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each measured run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the backend and ceilings")
    parser.add_argument("--worker-threads", type=int, default=4,
                        help="gunicorn threads per worker of the backend and ceilings (GUNICORN_THREADS)")
    parser.add_argument("--standin-workers", type=int, default=2)
    parser.add_argument("--rate-cap", type=int, default=1500,
                        help="fresh orders made per second of a pay or notify run (more than it can use)")
    parser.add_argument("--configs", default="pg,embedded", help="pg (PostgreSQL + Redis) and/or embedded")
    parser.add_argument("--only", default="", help="comma-separated scenarios (ceilings are always run)")
    parser.add_argument("--no-scale", action="store_true")
    parser.add_argument("--scale-orders", type=int, default=1_000_000)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile", default="",
                        help="profile these scenarios (comma-separated, or 'all') instead of the slowest")
    parser.add_argument("--database-url", help="use this (empty) PostgreSQL database instead of starting one")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.no_scale, args.no_profile = 1, 0, True, True
        args.configs = "pg"
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk (Debian's package)", file=sys.stderr)
        return 2
    wanted = [s for s in args.only.split(",") if s] or PRODUCT_SCENARIOS
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if "notify-dup" in wanted and "notify" not in wanted:
        wanted.insert(wanted.index("notify-dup"), "notify")
    results_dir = Path(args.out)
    results_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                    "load_before": load_average(),
                    "settings": {k: v for k, v in vars(args).items() if k not in ("database_url", "redis_url")}}
    print(f"miniapp-pay benchmark, {report['date']}; load average {report['load_before']}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="miniapp-bench-"))
    runner = Runner(args, results_dir)
    scale: dict = {}
    pg = redis = None
    stacks: list[Stack] = []
    try:
        for config in [c for c in args.configs.split(",") if c]:
            if config == "pg":
                if args.database_url:
                    db_url = args.database_url
                else:
                    pg = Postgres(workdir)
                    pg.start()
                    db_url = pg.url
                if args.redis_url:
                    redis_url = args.redis_url
                else:
                    redis = Redis(workdir)
                    redis.start()
                    redis_url = redis.url
                stack = Stack("pg", workdir, db_url, redis_url, args, {"postgres": pg, "redis": redis})
            elif config == "embedded":
                stack = Stack("embedded", workdir, f"sqlite:///{workdir}/embedded/miniapp.sqlite3", None, args)
            else:
                parser.error(f"unknown config {config}")
            stacks.append(stack)
            print(f"== {config}: starting the stand-in WeChat, the backend and the ceilings", flush=True)
            stack.start()
            stack.load("bread0", 10_000)
            ceilings: dict[str, Result] = {}
            for scenario in wanted:
                # Its ceiling is measured right before it: the machine is shared, and its load drifts.
                # (The smoke run measures each ceiling once: it checks that everything works, not speed.)
                name = SCENARIOS[scenario][1]
                ceiling = ceilings[name] if args.smoke and name in ceilings else runner.run(stack, name)
                ceilings[name] = ceiling
                result = runner.run(stack, scenario)
                result.ceiling_rps, result.ceiling_p99_ms = ceiling.rps, ceiling.p99_ms
                result.ratio = result.rps / ceiling.rps if ceiling.rps else None
            if config == "pg" and not args.smoke:
                # The same requests one at a time: the service time, without the queueing that 16
                # connections on 2 cores add to every latency at 16 connections.
                for scenario in ("read", "pay", "notify", "login"):
                    if scenario in wanted:
                        runner.run(stack, scenario, label=f"{scenario} (1 connection)", connections=1,
                                   seconds=max(2, args.duration // 2))
            if config == "pg" and not args.no_profile:
                mine = [r for r in runner.results if r.config == "pg" and r.scenario in PRODUCT_SCENARIOS]
                if args.profile == "all":
                    chosen = [s for s in wanted if s in PRODUCT_SCENARIOS]
                else:
                    chosen = [s for s in args.profile.split(",") if s] or [min(mine, key=lambda r: r.rps).scenario]
                report["profiles"] = []
                for name in chosen:
                    raw = results_dir / f"profile-{name}.txt"
                    print(f"== profiling {name} with py-spy", flush=True)
                    profiled = runner.run(stack, name, label=f"{name} (under py-spy)", profile_to=raw)
                    runner.results.remove(profiled)
                    summary = results_dir / f"profile-{name}-summary.txt"
                    summary.write_text(profile_summary(raw))
                    report["profiles"].append({"scenario": name, "raw": str(raw), "summary": str(summary),
                                               "rps_under_profiler": profiled.rps})
            stack.stop(keep_logs_in=results_dir)
            stacks.remove(stack)
            if config == "pg" and not args.no_scale:
                if pg is None:
                    print("== scale skipped: it needs a PostgreSQL of its own (no --database-url)", flush=True)
                else:
                    scale = run_scale(runner, pg, redis_url, workdir, args, stacks)
    finally:
        for stack in stacks:
            stack.stop(keep_logs_in=results_dir)
        if redis:
            redis.stop()
        if pg:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report["load_after"] = load_average()
    report["seconds"] = round(time.monotonic() - started)
    report["results"] = [vars(r) for r in runner.results]
    report["scale"] = scale
    if not args.smoke:
        report["micro"] = micro.run()
    report["targets"] = [{"target": t, "met": ok, "value": v}
                         for t, ok, v in targets(runner.results, scale, args.workers, args.worker_threads)]
    if report.get("micro"):
        m = report["micro"]
        report["targets"].append({"target": f"v2 notification verify+parse >= {m['target']}x wechatpy's",
                                  "met": m["met"], "value": f"{m['speedup']:.2f}x"})
    text = table(runner.results)
    print("\n" + text)
    if scale:
        print("\nscale (PostgreSQL):")
        for name, s in scale.items():
            print(f"  {name}: {s['small_rps']:,.0f} req/s at {s['small_orders']:,} orders, {s['large_rps']:,.0f} req/s "
                  f"at {s['large_orders']:,}; cost ratio {s['cost_ratio']:.2f}x (p50 {s['small_p50_ms']:.2f} -> "
                  f"{s['large_p50_ms']:.2f} ms, CPU {s['small_cpu_ms']:.2f} -> {s['large_cpu_ms']:.2f} ms/req)")
    if "micro" in report:
        print("\n" + micro.describe(report["micro"]))
    print("\ntargets:")
    for t in report["targets"]:
        print(f"  [{'x' if t['met'] else ' '}] {t['target']}: {t['value']}")
    print(f"\nload average before {report['load_before']}, after {report['load_after']}; {report['seconds']} s in all")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"bench-{stamp}.json", "latest.json"):
        (results_dir / name).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (results_dir / "latest.md").write_text(table(runner.results, markdown=True) + "\n")
    print(f"written: {results_dir / 'latest.json'} and latest.md")
    return 1 if sum(r.errors for r in runner.results) else 0


def run_scale(runner: Runner, pg: Postgres, redis_url: str, workdir: Path, args, stacks: list) -> dict:
    """notify and read on a table of 1,000 orders and on one of 1,000,000 (bulk-loaded).

    Two databases, each behind its own backend (same settings), so that the runs can alternate
    small, large, small, large: the machine is shared and its load drifts within minutes, which a
    small-then-large sequence would read as a cost of the table's size. Each is run twice; the
    better of the two (the one least disturbed by other work) is compared.
    """
    big = args.scale_orders
    sides = {}
    for label, size in (("1k", 1000), (f"{big // 1000}k", big)):
        url = pg.create_database(f"miniapp_scale_{size}")
        stack = Stack(f"pg-{label}", workdir, url, redis_url, args, {"postgres": pg}, ceiling=False)
        stacks.append(stack)
        stack.start()
        t0 = time.monotonic()
        stack.load("bread0", size)
        print(f"== scale: {size:,} orders loaded in {time.monotonic() - t0:.0f} s", flush=True)
        sides[label] = (stack, size)
    runs: dict[tuple[str, str], list[Result]] = {}
    for kind in ("read", "notify"):  # every read first, so that the small table holds exactly 1,000 then
        for rep in (1, 2):
            for label, (stack, size) in sides.items():
                r = runner.run(stack, kind, label=f"{kind} #{rep}", read_range=(0, size))
                runs.setdefault((kind, label), []).append(r)
    out = {}
    small_label, large_label = list(sides)
    for kind in ("read", "notify"):
        s = max(runs[(kind, small_label)], key=lambda r: r.rps)
        l_ = max(runs[(kind, large_label)], key=lambda r: r.rps)
        out[kind] = {"small_orders": s.orders_in_table, "large_orders": l_.orders_in_table,
                     "small_rps": s.rps, "large_rps": l_.rps, "small_p50_ms": s.p50_ms, "large_p50_ms": l_.p50_ms,
                     "small_p99_ms": s.p99_ms, "large_p99_ms": l_.p99_ms,
                     "small_cpu_ms": s.backend_cpu_ms_per_req, "large_cpu_ms": l_.backend_cpu_ms_per_req,
                     "all_rps": {label: [round(r.rps) for r in runs[(kind, label)]] for label in sides},
                     # Cost per request at the same concurrency: the inverse of throughput.
                     "cost_ratio": s.rps / l_.rps if l_.rps else float("inf")}
    for stack, _ in sides.values():
        stack.stop(keep_logs_in=runner.results_dir)
        stacks.remove(stack)
    return out


if __name__ == "__main__":
    sys.exit(main())
