"""The hot paths the benchmark measures (bench/README.md) make the round trips they need, no more."""

from contextlib import contextmanager

import pytest

from sqlalchemy import event

from miniapp_server.extensions import db


@contextmanager
def statements():
    """Every SQL statement the app sends while the block runs (BEGIN/COMMIT included)."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement.strip().split()[0].upper())

    engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_reading_an_order_is_one_query_with_its_items(client, user):
    made = client.post("/api/orders", headers=user["headers"], json={
        "items": [{"product_id": 1, "quantity": 2}, {"product_id": 2, "quantity": 1}]}).get_json()
    db.session.remove()  # nothing cached in this thread's session: the request loads what it shows
    with statements() as seen:
        resp = client.get(f"/api/orders/{made['out_trade_no']}", headers=user["headers"])
    assert resp.status_code == 200
    shown = resp.get_json()
    assert shown["items"] == made["items"] and len(shown["items"]) == 2
    assert seen.count("SELECT") == 1  # the order and its lines in one join, not a lazy second query


def test_reading_someone_elses_order_is_still_not_found(client, user, order):
    from .conftest import bearer, login

    other = login(client, "mallory#1")
    resp = client.get(f"/api/orders/{order['out_trade_no']}", headers=bearer(other["token"]))
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("action", ["pay", "native", "app-pay"])
def test_no_database_transaction_is_open_while_wechat_is_asked_for_a_prepay(client, user, order, monkeypatch, action):
    """Found by bench on SQLite: reading an expired attribute after the commit reopened a read
    transaction that lived across the WeChat call, so the UPDATE after it failed ("database is
    locked") whenever another worker had written meanwhile; on PostgreSQL it held a connection
    idle in transaction for the length of the call."""
    from miniapp_server.sandbox.transport import WSGIAdapter

    open_during_call: list[bool] = []
    original = WSGIAdapter.send

    def send(self, request, **kwargs):
        if "/sandbox/" in request.url and "/pay/" in request.url:
            open_during_call.append(db.session().in_transaction())
        return original(self, request, **kwargs)

    monkeypatch.setattr(WSGIAdapter, "send", send)
    db.session.remove()
    resp = client.post(f"/api/orders/{order['out_trade_no']}/{action}", headers=user["headers"])
    assert resp.status_code == 200, resp.get_json()
    assert open_during_call == [False]


def test_pay_does_not_reload_the_order_after_its_update_and_its_audit_row_rides_along(client, user, order):
    """The UPDATE's RETURNING brings the order up to date (bench: the reload was 9% of pay); the audit
    row of the unified order joins that UPDATE's commit instead of a transaction of its own."""
    db.session.remove()
    with statements() as seen:
        resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=user["headers"])
    assert resp.status_code == 200 and resp.get_json()["package"].startswith("prepay_id=")
    after_update = seen[seen.index("UPDATE") + 1:]
    assert "SELECT" not in after_update
    # The audit row, in the UPDATE's transaction: inside a savepoint on PostgreSQL, whose transaction a
    # failed statement would abort (sent to psycopg directly, still seen here); SQLite backs out only the
    # failed statement, so none is needed there.
    if db.engine.dialect.name == "sqlite":
        assert after_update[:1] == ["INSERT"]
    else:
        assert after_update[:3] == ["SAVEPOINT", "INSERT", "RELEASE"]
    from miniapp_server.models import Order, WeChatExchange
    db.session.remove()
    paid = db.session.execute(db.select(Order).filter_by(out_trade_no=order["out_trade_no"])).scalar_one()
    assert resp.get_json()["package"] == f"prepay_id={paid.prepay_id}"
    assert db.session.execute(db.select(WeChatExchange).filter_by(out_trade_no=order["out_trade_no"],
                                                                  direction="out")).scalars().all()
