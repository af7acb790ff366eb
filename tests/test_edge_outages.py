"""Outages (issue 14, findings 10 and 11): a store that is down or frozen answers 503 store_unavailable with
Retry-After within about a second and recovers by itself; a database that is down or read-only leaves the
notify URLs answering in WeChat's own format, never the mini-program API's JSON."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest
from sqlalchemy import event

from miniapp_server.extensions import db
from miniapp_server.models import Order
from miniapp_server.wechat.pay import xmlcodec

from .conftest import ON_POSTGRES, bearer, free_port, login
from .test_notify import notification, signed

QUICK = 1.5  # seconds: "within about a second" (STORE_TIMEOUT 0.5 s, one retry), with room for a busy machine


@pytest.fixture
def throwaway_redis(tmp_path):
    """A redis-server of this test's own on a free loopback port: stopped or frozen at will, never the shared one."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (apt-get install redis-server)"
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield proc, f"redis://127.0.0.1:{port}/0"
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def timed(call):
    started = time.monotonic()
    resp = call()
    return resp, time.monotonic() - started


def assert_store_unavailable(resp, elapsed):
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["code"] == "store_unavailable"
    assert resp.headers["Retry-After"] == "1"
    assert elapsed < QUICK, elapsed


def test_redis_stopped_then_frozen_is_a_quick_503_and_recovers_by_itself(make_app, throwaway_redis):
    proc, url = throwaway_redis
    app = make_app(REDIS_URL=url)
    client = app.test_client()
    token = login(client)["token"]
    check = lambda: client.post("/api/auth/check", headers=bearer(token))  # noqa: E731
    assert check().status_code == 200

    os.kill(proc.pid, signal.SIGSTOP)  # frozen: connections are accepted, nothing answers
    for call in (check, lambda: client.post("/api/auth/login", json={"code": "frozen"})):
        assert_store_unavailable(*timed(call))
    os.kill(proc.pid, signal.SIGCONT)
    assert check().status_code == 200  # recovered, with no restart of ours

    order = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]},
                        headers=bearer(token)).get_json()
    proc.terminate()  # stopped: nothing listens
    proc.wait(10)
    for call in (check, lambda: client.post("/api/auth/login", json={"code": "stopped"}),
                 lambda: client.get("/api/orders", headers=bearer(token))):
        assert_store_unavailable(*timed(call))
    # WeChat's notifications do not need the store: still recorded, and acknowledged in WeChat's format
    with app.app_context():
        resp = client.post("/api/pay/notify", data=signed(app, notification(app, order)), content_type="text/xml")
        assert xmlcodec.loads(resp.data)["return_code"] == "SUCCESS"
        assert db.session.execute(db.select(Order.status)).scalar_one() == "paid"


def test_a_locked_embedded_store_is_a_quick_503_and_recovers(make_app, tmp_path):
    app = make_app(REDIS_URL="")
    client = app.test_client()
    token = login(client)["token"]
    assert client.post("/api/auth/logout", headers=bearer(token)).status_code == 204
    token = login(client)["token"]
    holder = sqlite3.connect(app.config["EMBEDDED_STORE_PATH"], isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the file's write lock (WAL: reads still get in)
    try:
        # (a login would fail first inside the in-app sandbox, which shares this store: wechat_unavailable)
        assert_store_unavailable(*timed(lambda: client.post("/api/auth/logout", headers=bearer(token))))
        assert_store_unavailable(*timed(lambda: client.post("/api/auth/logout", headers=bearer(token))))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.post("/api/auth/check", headers=bearer(token)).status_code == 200


# -- the database behind the notify URLs ---------------------------------------------------------------------

def _read_only(app) -> None:
    """From the next connection on, the database refuses writes (as a failed-over replica does)."""
    with app.app_context():
        engine = db.engine
        if ON_POSTGRES:
            @event.listens_for(engine, "do_connect")
            def _read_only_session(dialect, conn_rec, cargs, cparams):
                cparams["options"] = "-c default_transaction_read_only=on"
        else:
            @event.listens_for(engine, "connect")
            def _query_only(dbapi_connection, record):
                dbapi_connection.execute("PRAGMA query_only = ON")
        engine.dispose()


def _down(app) -> None:
    """The database is gone: every connection is refused."""
    with app.app_context():
        db.engine.dispose()
        engine = db.engine

        @event.listens_for(engine, "do_connect")
        def _refuse(dialect, conn_rec, cargs, cparams):
            raise (dialect.loaded_dbapi or dialect.dbapi).OperationalError("connection refused (test)")


@pytest.mark.parametrize("outage", [_read_only, _down])
@pytest.mark.pay_api("v2")
def test_v2_notify_urls_answer_fail_xml_when_the_database_fails(make_app, outage):
    app = make_app()
    client = app.test_client()
    with app.app_context():
        headers = bearer(login(client)["token"])
        order = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]}, headers=headers).get_json()
        body = signed(app, notification(app, order))
    outage(app)
    for path in ("/api/pay/notify", "/api/pay/refund-notify"):
        resp = client.post(path, data=body, content_type="text/xml")
        assert resp.status_code == 503 and resp.mimetype == "text/xml", path
        assert xmlcodec.loads(resp.data)["return_code"] == "FAIL", path
        assert b"error" not in resp.data


@pytest.mark.pay_api("v3")
@pytest.mark.parametrize("outage", [_read_only, _down])
def test_v3_notify_urls_answer_fail_json_when_the_database_fails(make_app, outage):
    from .test_v3_app import unpaid_with_notification

    app = make_app()
    client = app.test_client()
    with app.app_context():
        token = login(client)["token"]
        user = {"token": token, "headers": bearer(token)}
        order, body, headers = unpaid_with_notification(app, client, user)
    outage(app)
    for path in ("/api/pay/notify", "/api/pay/refund-notify"):
        resp = client.post(path, data=body, headers=headers, content_type="application/json")
        assert 400 <= resp.status_code < 600, path
        answer = json.loads(resp.data)
        assert answer["code"] == "FAIL" and answer["message"] and "error" not in answer, path
    if outage is _read_only:
        with app.app_context():
            assert db.session.execute(db.select(Order.status).filter_by(out_trade_no=order["out_trade_no"])
                                      ).scalar_one() == "unpaid"
