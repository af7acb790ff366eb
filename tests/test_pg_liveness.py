"""A pooled PostgreSQL connection that its server closed is never handed to a request (miniapp_server/pg_liveness.py,
which replaced pool_pre_ping's round trip with a poll of the socket)."""

from __future__ import annotations

import socket
import time

import psycopg
from sqlalchemy import text

from miniapp_server import pg_liveness
from miniapp_server.extensions import db

from .conftest import DATABASE_URL, ON_POSTGRES, bearer, login


def test_an_idle_socket_has_no_news_until_its_peer_writes_or_hangs_up():
    ours, theirs = socket.socketpair()
    try:
        assert not pg_liveness.socket_has_news(ours.fileno())
        theirs.sendall(b"E")  # what a server's FATAL message looks like from here: something to read
        assert pg_liveness.socket_has_news(ours.fileno())
        ours.recv(1)
        assert not pg_liveness.socket_has_news(ours.fileno())
        theirs.close()
        assert pg_liveness.socket_has_news(ours.fileno())  # end of file
    finally:
        ours.close()


def _backend_pids(app) -> set[int]:
    with app.app_context():
        return {row[0] for row in db.session.execute(text("SELECT pg_backend_pid()"))}


def test_connections_the_server_ended_are_replaced_before_a_request_uses_them(make_app):
    app = make_app()
    client = app.test_client()
    token = login(client)["token"]
    assert client.get("/api/orders", headers=bearer(token)).status_code == 200
    if not ON_POSTGRES:
        # SQLite's connections are files, not sockets: no liveness check is installed, and none is needed.
        with app.app_context():
            assert not getattr(db.engine, "_miniapp_liveness", False)
            assert db.engine.pool._pre_ping is False
        return
    with app.app_context():
        assert getattr(db.engine, "_miniapp_liveness", False)
        assert db.engine.pool._pre_ping is False  # the poll replaced it: no SELECT 1 before each request
    before = _backend_pids(app)
    # What a restart or a failover does to every pooled connection: the server ends them.
    url = DATABASE_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        ended = [row[0] for row in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")]
        assert before <= set(ended)
        for pid in ended:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # pg_terminate_backend only signals: each backend writes its FATAL message and closes as it exits.
        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (ended,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the terminated backends did not exit"
            time.sleep(0.02)
    for _ in range(3):  # each request gets a live connection, first try (the test client has no retry)
        assert client.get("/api/orders", headers=bearer(token)).status_code == 200
    assert _backend_pids(app).isdisjoint(before)
