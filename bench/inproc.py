#!/usr/bin/env python3
"""The backend's own cost per request, counted in one process: CPU time, SQL statements, store commands.

`bench/run.py` measures the product as deployed (gunicorn, wrk, 16 connections) and its figures move with
the machine's load by tens of percent. This drives the same app object with the same requests from one
thread, without sockets or gunicorn, so what it reports is the app's own work, and what it counts
(statements, Redis commands) does not depend on the load at all. Use it while changing a hot path; quote
`bench/run.py` for the targets.

    .venv/bin/python bench/inproc.py                       # starts a throwaway PostgreSQL and Redis
    .venv/bin/python bench/inproc.py --database-url postgresql://... --redis-url redis://...
    .venv/bin/python bench/inproc.py --embedded            # SQLite and the embedded store
    .venv/bin/python bench/inproc.py --only read,notify --requests 3000 --profile notify
    .venv/bin/python bench/inproc.py --smoke                # CI (make bench-smoke): it still works, no figures
    .venv/bin/python bench/inproc.py --floor --only read,notify,notify-dup   # and bench/floor.py beside them

Upstream calls (pay, login) go to a stand-in WeChat in a process of its own, as in `bench/run.py`;
its CPU is not counted here. The app logs at INFO to a file, as under gunicorn; gunicorn's access log
and its own request handling are not part of these figures (they are the bare ceiling's).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from bench import dataset  # noqa: E402
from bench.infra import BIN, ROOT, Gunicorn, Postgres, Redis  # noqa: E402

SCENARIOS = ("read", "order", "pay", "notify", "notify-dup", "login")
USERS = 4


class Counter:
    def __init__(self) -> None:
        self.statements = 0

    def __call__(self, *args, **kwargs) -> None:
        self.statements += 1


def call(app, environ: dict) -> tuple[str, bytes]:
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    return status[0], body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--embedded", action="store_true", help="SQLite and the embedded store")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per scenario")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every scenario, interleaved; the best round is reported (the machine is shared)")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--profile", default="", help="cProfile these scenarios in the first round (not counted); "
                                                      "print the top functions")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--smoke", action="store_true", help="a few requests of each scenario, one round (CI)")
    parser.add_argument("--floor", action="store_true",
                        help="also measure bench/floor.py's bare versions of read, notify and notify-dup "
                             "(PostgreSQL and Redis only), on data of their own, in the same rounds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.warmup, args.rounds = 30, 5, 1
    chosen = [s for s in args.only.split(",") if s]

    work = Path(tempfile.mkdtemp(prefix="miniapp-inproc-"))
    started: list = []
    try:
        database_url, redis_url = args.database_url, args.redis_url
        if args.embedded:
            database_url, redis_url = f"sqlite:///{work / 'app.sqlite3'}", None
        else:
            if not database_url:
                pg = Postgres(work)
                pg.start()
                started.append(pg)
                database_url = pg.url.replace("postgresql://", "postgresql+psycopg://")
            if not redis_url:
                redis = Redis(work)
                redis.start()
                started.append(redis)
                redis_url = redis.url
        standin = Gunicorn("wechat-standin", "miniapp_server.sandbox.standalone:create_sandbox_app()",
                           {**os.environ, "EMBEDDED_STORE_PATH": str(work / "wechat.sqlite3"),
                            "STORE_PREFIX": "wechat:", **({"REDIS_URL": redis_url} if redis_url else {})},
                           work, "/sandbox/control/calls", workers=1)
        standin.start()
        started.append(standin)
        wechat = standin.url + "/sandbox"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "SANDBOX_", "GUNICORN_")) and k not in (
            "DATABASE_URL", "REDIS_URL", "EMBEDDED_STORE_PATH", "STORE_PREFIX", "APP_ENV", "LOG_LEVEL", "LOGIN_RATE_LIMIT")}
        env.update({"FLASK_APP": "wsgi:app", "DATABASE_URL": database_url, "SECRET_KEY": secrets.token_hex(32),
                    "EMBEDDED_STORE_PATH": str(work / "store.sqlite3"), "STORE_PREFIX": f"inproc:{secrets.token_hex(3)}:",
                    "WECHAT_SANDBOX": "1", "WECHAT_API_BASE": wechat, "WECHAT_PAY_BASE": wechat,
                    "LOGIN_RATE_LIMIT": "1000000000"})
        if redis_url:
            env["REDIS_URL"] = redis_url
        for cmd in (["db", "upgrade"], ["products", "demo"]):
            subprocess.run([str(BIN / "flask"), *cmd], env=env, cwd=ROOT, check=True, capture_output=True)
        figures = run(env, database_url, chosen, args, work)
    finally:
        for thing in reversed(started):
            thing.stop()
    print(f"\nbest of {args.rounds} rounds:\n{'scenario':16} {'CPU us/req':>11} {'wall us/req':>12} {'SQL/req':>8} {'store/req':>10}")
    for name, f in figures.items():
        print(f"{name:16} {f['cpu_us']:11.0f} {f['wall_us']:12.0f} {f['statements']:8.2f} {f['store']:10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


def run(env: dict, database_url: str, chosen: list[str], args, work: Path) -> dict:
    from miniapp_server import create_app
    from miniapp_server.extensions import db

    app = create_app(env=env)
    # The app's log lines at INFO into a file, as gunicorn's error log takes them.
    handler = logging.FileHandler(work / "app.log")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    engine = dataset.engine_for(database_url)
    with app.app_context():
        statements = Counter()
        event.listen(db.engine, "before_cursor_execute", statements)
        product = json.loads(call(app, EnvironBuilder("/api/products").get_environ())[1])["items"][0]
    store_commands = store_counter(app)

    tokens, user_ids = [], []
    for k in range(USERS):
        status, body = call(app, EnvironBuilder("/api/auth/login", method="POST",
                                                json={"code": f"inproc-owner-{k}#1"}).get_environ())
        answer = json.loads(body)
        tokens.append(answer["token"])
        user_ids.append(answer["user"]["id"])
    n = args.requests + args.warmup
    fee = product["price_fen"] * dataset.QUANTITY

    def authed(i: int) -> dict:
        return {"Authorization": f"Bearer {tokens[i % USERS]}"}

    def load(prefix: str, count: int) -> None:
        dataset.load_orders(engine, prefix=prefix, start=0, count=count, user_ids=user_ids, product=product)

    tag = secrets.token_hex(2)  # this run's orders, beside any earlier run's in the same database
    read_prefix = f"{tag}rd"
    load(read_prefix, 1000)

    def notifications(prefix: str) -> list[dict]:
        return [EnvironBuilder("/api/pay/notify", method="POST", data=dataset.notification(prefix, i, fee),
                               content_type="text/xml").get_environ() for i in range(n)]

    # Each round's requests, on data of that round's own (`prefix`: 6 characters).
    def plan(name: str, prefix: str) -> list[dict]:
        if name == "read":
            return [EnvironBuilder(f"/api/orders/{dataset.order_no(read_prefix, i % 1000)}", headers=authed(i % 1000))
                    .get_environ() for i in range(n)]
        if name == "order":
            return [EnvironBuilder("/api/orders", method="POST", headers=authed(i),
                                   json={"items": [{"product_id": product["id"], "quantity": 2}]}).get_environ()
                    for i in range(n)]
        if name == "pay":
            load(prefix, n)
            return [EnvironBuilder(f"/api/orders/{dataset.order_no(prefix, i)}/pay", method="POST",
                                   headers=authed(i), json={}).get_environ() for i in range(n)]
        if name == "notify":
            load(prefix, n)
            return notifications(prefix)
        if name == "notify-dup":  # notifications already applied once
            load(prefix, n)
            for environ in notifications(prefix):
                call(app, environ)
            return notifications(prefix)
        return [EnvironBuilder("/api/auth/login", method="POST", json={"code": f"inproc-{i % 2000}#{i}"}).get_environ()
                for i in range(n)]

    expect = {"read": "200", "order": "201", "pay": "200", "notify": "200", "notify-dup": "200", "login": "200"}
    figures: dict[str, dict] = {}
    floors = _floors(env, database_url, chosen, read_prefix, user_ids, fee, load, n) if args.floor else None
    for round_no in range(args.rounds):
        if floors is not None:
            for k, name in enumerate(floors.names):
                this = floors.measure(name, f"{tag}{'ghijklmnopqrstuvwxyz'[round_no % 20]}{k}", args.warmup)
                print(f"round {round_no + 1} {name}: {this}", flush=True)
                if name not in figures or this["cpu_us"] < figures[name]["cpu_us"]:
                    figures[name] = {**this, "rounds": round_no + 1}
        for k, name in enumerate(chosen):
            environs = plan(name, f"{tag}{round_no % 10}{k}")  # 6 characters: k < 6 scenarios
            for environ in environs[:args.warmup]:
                call(app, environ)
            measured = environs[args.warmup:]
            profiler = cProfile.Profile() if name in args.profile.split(",") and round_no == 0 else None
            s0, c0 = statements.statements, store_commands()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            bad = 0
            for environ in measured:
                status, body = call(app, environ)
                if not status.startswith(expect[name]) or (name.startswith("notify") and b"SUCCESS" not in body):
                    bad += 1
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            count = len(measured)
            if bad:
                raise SystemExit(f"{name}: {bad} of {count} answers were wrong")
            this = {"requests": count, "cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6,
                    "statements": (statements.statements - s0) / count, "store": (store_commands() - c0) / count}
            print(f"round {round_no + 1} {name}: {this}", flush=True)
            best = figures.get(name)
            if profiler is None and (best is None or this["cpu_us"] < best["cpu_us"]):
                figures[name] = {**this, "rounds": round_no + 1}
            elif best is not None:
                best["rounds"] = round_no + 1
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
                print(out.getvalue())
    engine.dispose()
    return figures


class _Floors:
    """bench/floor.py's bare requests on a psycopg connection and a Redis client of their own."""

    def __init__(self, database_url: str, redis_url: str, read_prefix: str, user_ids: list[int], fee: int,
                 load: Callable[[str, int], None], n: int, names: list[str]) -> None:
        import psycopg
        import redis

        self.conn = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        self.redis = redis.Redis.from_url(redis_url)
        self.token_key = f"floor:{secrets.token_hex(4)}"
        self.redis.set(self.token_key, "1", ex=3600)
        self.read_prefix, self.user_ids, self.fee, self.load, self.n, self.names = \
            read_prefix, user_ids, fee, load, n, names

    def measure(self, name: str, prefix: str, warmup: int) -> dict:
        from bench import floor

        if name == "read-floor":
            calls = [(lambda i=i: floor.read(self.conn, self.redis, self.token_key, self.user_ids[i % 1000 % USERS],
                                             dataset.order_no(self.read_prefix, i % 1000))) for i in range(self.n)]
        else:
            self.load(prefix, self.n)
            bodies = [dataset.notification(prefix, i, self.fee) for i in range(self.n)]
            if name == "notify-dup-floor":
                for body in bodies:
                    floor.notify(self.conn, body)
            calls = [(lambda b=b: floor.notify(self.conn, b)) for b in bodies]
        for c in calls[:warmup]:
            c()
        measured = calls[warmup:]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for c in measured:
            c()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return {"requests": len(measured), "cpu_us": cpu / len(measured) * 1e6, "wall_us": wall / len(measured) * 1e6,
                "statements": float("nan"), "store": float("nan")}


def _floors(env: dict, database_url: str, chosen: list[str], read_prefix: str, user_ids: list[int], fee: int,
            load: Callable[[str, int], None], n: int) -> _Floors | None:
    names = [f"{s}-floor" for s in chosen if s in ("read", "notify", "notify-dup")]
    if not names:
        return None
    if not database_url.startswith("postgresql") or not env.get("REDIS_URL"):
        raise SystemExit("--floor needs PostgreSQL and Redis (bench/floor.py is written on psycopg and redis-py)")
    return _Floors(database_url, env["REDIS_URL"], read_prefix, user_ids, fee, load, n, names)


def store_counter(app) -> Callable[[], int]:
    """Round trips to the store: commands (a pipeline counts once) sent by this app's Redis client, or
    calls into the embedded store."""
    backend = app.extensions["store"]
    calls = {"n": 0}
    client = getattr(backend, "_redis", None)
    target = client if client is not None else backend
    names = ("execute_command",) if client is not None else ("get", "set", "delete", "incr", "add", "expire")
    for name in names:
        original = getattr(target, name, None)
        if original is None:
            continue

        def counted(*a, _original=original, **kw):
            calls["n"] += 1
            return _original(*a, **kw)

        setattr(target, name, counted)
    if client is not None:
        import redis.client

        real = redis.client.Pipeline.execute

        def pipeline_execute(self, *a, **kw):
            calls["n"] += 1
            return real(self, *a, **kw)

        redis.client.Pipeline.execute = pipeline_execute  # type: ignore[method-assign]
    return lambda: calls["n"]


if __name__ == "__main__":
    raise SystemExit(main())
