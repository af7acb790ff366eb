"""Fixtures: apps on the embedded defaults, or on the real Redis and PostgreSQL that
`DATABASE_URL` / `REDIS_URL` name (CI runs the suite both ways)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from miniapp_server import create_app  # noqa: E402
from miniapp_server.extensions import db  # noqa: E402
from miniapp_server.models import Product  # noqa: E402

from .openapi_check import ResponseChecker  # noqa: E402

# A copy of ../shared/known-answers.json: vectors published by WeChat or public SDK test suites.
KNOWN_ANSWERS = json.loads((ROOT / "tests" / "fixtures" / "known-answers.json").read_text())

DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")
ON_POSTGRES = DATABASE_URL.startswith("postgres")


def vector(name: str) -> dict:
    return next(v for v in KNOWN_ANSWERS["vectors"] if v["name"] == name)


# WeChat's own paths of the calls that journey tests look for, in the API (WECHAT_PAY_API) an app runs on.
WECHAT_PATHS = {
    "v2": {"prepay": "/pay/unifiedorder", "refund": "/secapi/pay/refund"},
    "v3": {"prepay": "/v3/pay/transactions/jsapi", "refund": "/v3/refund/domestic/refunds"},
}


def wechat_path(app, call: str) -> str:
    return WECHAT_PATHS[app.config["WECHAT_PAY_API"]][call]


def lose_notifications(app) -> None:
    """From now on the sandbox's payment notifications never arrive (v2 and v3 alike)."""
    emu = app.extensions["sandbox"]
    emu.sender = lambda url, body: (500, b"")
    if app.config["WECHAT_PAY_API"] == "v3":
        emu.v3.send = lambda url, body, headers: (500, b"")


def _check_test_database(url: str) -> None:
    # The suite empties tables: never let it near a database that is not meant for tests.
    name = make_url(url).database or ""
    if "test" not in name:
        pytest.exit(f"refusing to run tests against database {name!r}: its name must contain 'test'", 2)


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(4)


def base_env(tmp_path: Path, run_id: str) -> dict[str, str]:
    env = {
        "APP_ENV": "development",
        "SECRET_KEY": "test-secret-key",
        "EMBEDDED_STORE_PATH": str(tmp_path / "store.sqlite3"),
        "DATABASE_URL": DATABASE_URL or f"sqlite:///{tmp_path / 'test.sqlite3'}",
        "STORE_PREFIX": f"test:{run_id}:{tmp_path.name}:",
        "SANDBOX_TIME_SCALE": "0.001",
        "LOGIN_RATE_LIMIT": "1000",
        # `WECHAT_PAY_API=v3 make test` runs the suite on v3; tests of one API by nature pin it in make_app.
        "WECHAT_PAY_API": os.environ.get("WECHAT_PAY_API", "v2"),
    }
    if REDIS_URL:
        env["REDIS_URL"] = REDIS_URL
    return env


def _reset_database() -> None:
    if ON_POSTGRES:
        db.create_all()
        tables = ", ".join(t.name for t in db.metadata.sorted_tables)
        db.session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        db.session.commit()
    else:
        db.create_all()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "pay_api(api): run this test's apps on WeChat Pay API v2 or v3, whatever "
                                       "WECHAT_PAY_API says (for tests of one API's protocol by nature)")


@pytest.fixture
def env(request, tmp_path: Path, run_id: str) -> dict[str, str]:
    if ON_POSTGRES:
        _check_test_database(DATABASE_URL)
    values = base_env(tmp_path, run_id)
    pinned = request.node.get_closest_marker("pay_api")
    if pinned is not None:
        values["WECHAT_PAY_API"] = pinned.args[0]
    return values


@pytest.fixture
def make_app(env):
    """Build apps with extra settings: `make_app(WECHAT_SIGN_TYPE="HMAC-SHA256")`. Every answer they give
    is checked against the OpenAPI document (tests/openapi_check.py); one that breaks it fails the test."""
    made = []
    checker = ResponseChecker()

    def factory(**overrides):
        app = create_app(env={**env, **{k: str(v) for k, v in overrides.items()}})
        app.config["TESTING"] = True
        checker.watch(app)
        with app.app_context():
            _reset_database()
            db.session.add_all([Product(name="拿铁咖啡 Latte", price_fen=1800), Product(name="牛角包 Croissant", price_fen=1200)])
            db.session.commit()
        made.append(app)
        return app

    yield factory
    checker.close()
    for app in made:
        # The sandbox's retry threads stop first: one still running would write into the next test's
        # freshly emptied database (and, on PostgreSQL, deadlock with its TRUNCATE).
        emu = app.extensions.get("sandbox")
        if emu is not None:
            assert not emu.close(timeout=15), "sandbox threads outlived their test"
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        _cleanup_store(app)
    assert not checker.violations, "answers that break openapi.yaml:\n" + "\n".join(dict.fromkeys(checker.violations))


def _cleanup_store(app) -> None:
    backend = app.extensions["store"]
    if hasattr(backend, "_redis") and app.config["REDIS_URL"] == REDIS_URL:  # the shared one (not a test's own)
        for key in backend._redis.scan_iter(match=backend._prefix + "*"):
            backend._redis.delete(key)


@pytest.fixture
def app(make_app):
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def login(client, code: str | None = None) -> dict:
    resp = client.post("/api/auth/login", json={"code": code or f"user-{secrets.token_hex(4)}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user(client) -> dict:
    """A user logged in through the sandbox; `user['headers']` authenticates."""
    data = login(client)
    data["headers"] = bearer(data["token"])
    return data


@pytest.fixture
def order(client, user) -> dict:
    resp = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 2}]}, headers=user["headers"])
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


# -- real servers (gunicorn) --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.proc, self.url, self.log_path = proc, url, log_path
        self.env = env or {}  # the environment it runs with, for `flask ...` commands on the same data

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def gunicorn(tmp_path: Path, env) -> Iterator:
    """Start gunicorn on the app (a migrated database, demo products) and give its URL."""
    servers: list[Server] = []

    def start(*args: str, extra_env: dict[str, str] | None = None) -> Server:
        port = free_port()
        full_env = {**os.environ, **env, **(extra_env or {}), "FLASK_APP": "wsgi:app", "PYTHONUNBUFFERED": "1"}
        full_env.pop("GUNICORN_ACCESS_LOG", None)
        bin_dir = Path(sys.executable).parent
        if not servers:  # one schema for every server of this test
            subprocess.run([str(bin_dir / "flask"), "db", "upgrade"], env=full_env, cwd=ROOT, check=True,
                           capture_output=True) if not ON_POSTGRES else _pg_schema(full_env)
            subprocess.run([str(bin_dir / "flask"), "products", "demo"], env=full_env, cwd=ROOT, check=True,
                           capture_output=True)
        log_path = tmp_path / f"gunicorn-{port}.log"
        proc = subprocess.Popen(
            [str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
             "--access-logfile", str(log_path), "--error-logfile", str(log_path), *args, "wsgi:app"],
            env=full_env, cwd=ROOT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                # A loaded machine boots a worker in seconds: a 1 s timeout gave up on every answer
                if requests.get(url + "/healthz", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            proc.kill()
            raise RuntimeError("gunicorn did not start:\n" + log_path.read_text(errors="replace"))
        server = Server(proc, url, log_path, full_env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.proc.terminate()
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()


def _pg_schema(full_env: dict[str, str]) -> None:
    app = create_app(env=full_env)
    with app.app_context():
        _reset_database()
        db.engine.dispose()
