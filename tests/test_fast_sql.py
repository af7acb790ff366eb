"""miniapp_server/fast_sql.py: the hot paths' statements straight to psycopg behave as SQLAlchemy's did
(on SQLite they still go through SQLAlchemy; every assertion holds on both)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, StatementError

from miniapp_server import fast_sql
from miniapp_server.extensions import db
from miniapp_server.models import Order, PaymentNotification
from miniapp_server.services import payments

from .ops_helpers import new_order


def _record(**extra) -> dict:
    return {"out_trade_no": "n-1", "transaction_id": "t-1", "total_fee": 1, "result_code": "SUCCESS",
            "verdict": "paid", "detail": None, "remote_addr": "127.0.0.1", "body_size": 10, **extra}


def test_python_side_defaults_are_filled_and_listeners_see_the_statement(app):
    seen: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement.split()[0])

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        fast_sql.execute(db.session.connection(), payments._INSERT_NOTIFICATION, _record())
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    db.session.commit()
    assert [s for s in seen if s != "BEGIN"] == ["INSERT"]  # the suite's and bench/inproc.py's statement counts still see it
    (row,) = db.session.execute(db.select(PaymentNotification)).scalars().all()
    assert row.kind == "payment"  # the column's default, which lives in Python, not in the table
    assert row.received_at.tzinfo is not None and abs((datetime.now(timezone.utc) - row.received_at).total_seconds()) < 60


def test_a_returning_row_reads_by_name_and_a_duplicate_is_sqlalchemys_integrity_error(app, client, user):
    made = new_order(client, user)
    now = datetime.now(timezone.utc)
    conn = db.session.connection()
    paid = fast_sql.execute(conn, payments._PAY_UNPAID, {"no": made["out_trade_no"], "fee": made["total_fee"],
                                                         "txn": "4200fast", "paid": now, "now": now}).first()
    assert paid.out_trade_no == made["out_trade_no"] and paid.status == "paid" and paid[0] == paid.id
    again = fast_sql.execute(conn, payments._PAY_UNPAID, {"no": made["out_trade_no"], "fee": made["total_fee"],
                                                          "txn": "4200fast", "paid": now, "now": now})
    assert again.first() is None and again.rowcount == 0  # no longer unpaid: the conditional UPDATE matches nothing
    row = {"order_id": paid.id, "transaction_id": "4200fast", "total_fee": made["total_fee"], "time_end": now,
           "source": "notify", "payer_openid": None, "anomaly": None, "created_at": now}
    fast_sql.execute(conn, payments._INSERT_PAYMENT, row)
    with pytest.raises(IntegrityError):  # what apply_payment catches to take its careful path
        fast_sql.execute(conn, payments._INSERT_PAYMENT, row)
    db.session.rollback()
    assert db.session.execute(db.select(Order.status).filter_by(out_trade_no=made["out_trade_no"])).scalar_one() \
        == "unpaid"  # all of it was in the session's transaction, and went with its rollback


def test_a_naive_datetime_is_refused_as_utcdatetime_refuses_it(app):
    with pytest.raises((ValueError, StatementError)):
        fast_sql.execute(db.session.connection(), payments._INSERT_NOTIFICATION,
                         _record(received_at=datetime(2026, 12, 1, 12, 0)))
    db.session.rollback()


def test_a_read_reads_by_name_and_leaves_the_pool_as_it_found_it(app, client, user):
    from miniapp_server.services import orders

    made = new_order(client, user)
    owner = db.session.execute(db.select(Order.user_id).filter_by(out_trade_no=made["out_trade_no"])).scalar_one()
    db.session.commit()
    checked_out = db.engine.pool.checkedout()
    rows = fast_sql.read_all(db.engine, orders._OWN_ORDER, {"no": made["out_trade_no"], "user": owner})
    assert [(r.out_trade_no, r.item_quantity, r.shipment_id) for r in rows] == [(made["out_trade_no"], 2, None)]
    assert rows[0].created_at.tzinfo is not None
    assert fast_sql.read_all(db.engine, orders._OWN_ORDER, {"no": made["out_trade_no"], "user": owner + 1}) == []
    assert db.engine.pool.checkedout() == checked_out  # the connection went back
    pooled = db.engine.raw_connection()
    try:
        assert getattr(pooled.driver_connection, "autocommit", False) is False  # and out of autocommit
    finally:
        pooled.close()
