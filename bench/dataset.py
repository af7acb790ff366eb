"""Bulk-loaded orders (one INSERT ... SELECT each, never the API) and signed notifications.

An order's number is its scenario's 6-character prefix and its index, zero-padded to
32 characters (`bread0` + `00000000000000000000000042`), so that the wrk script can
name any order from its index alone. Order `i` belongs to bench user `i % len(users)`
and holds one line of 2 x the product, as an order made through the API would.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from miniapp_server.config import SANDBOX_APPID, SANDBOX_MCH_ID, SANDBOX_PAY_KEY
from miniapp_server.wechat.pay import signing, xmlcodec

QUANTITY = 2
PREFIX_LEN = 6


def order_no(prefix: str, i: int) -> str:
    assert len(prefix) == PREFIX_LEN
    return f"{prefix}{i:026d}"


def engine_for(url: str) -> Engine:
    return create_engine(url)


def _stamp(engine: Engine, when: datetime) -> object:
    # The product's UTCDateTime keeps naive UTC text on SQLite, aware timestamps on PostgreSQL.
    if engine.dialect.name == "sqlite":
        return when.astimezone(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return when


def load_orders(engine: Engine, *, prefix: str, start: int, count: int, user_ids: list[int],
                product: dict, expires_in: timedelta = timedelta(hours=6), history: bool = False) -> None:
    """Insert orders `prefix+start .. prefix+start+count-1`, each with its one item.

    Unpaid ones (to pay or to notify), or with `history` (PostgreSQL) a shop's past: one order a minute
    back from now, nine in ten paid (with their payment rows, so that the payments' unique index grows
    too) and one in ten closed, as a table of a million orders would mostly hold.
    """
    if count <= 0:
        return
    sqlite = engine.dialect.name == "sqlite"
    if history and sqlite:
        raise ValueError("history is loaded on PostgreSQL only")
    owner = "CASE (i % {n}) {whens} END".format(
        n=len(user_ids), whens=" ".join(f"WHEN {k} THEN {int(uid)}" for k, uid in enumerate(user_ids)))
    if sqlite:
        series = "WITH RECURSIVE seq(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :stop) "
        number, source, head = "(:prefix || printf('%026d', i))", "seq", series
    else:
        number, source, head = "(:prefix || lpad(i::text, 26, '0'))", "generate_series(:start, :stop - 1) AS i", ""
    now = datetime.now(timezone.utc)
    params = {"start": start, "stop": start + count, "prefix": prefix, "fee": product["price_fen"] * QUANTITY,
              "body": product["name"][:120], "now": _stamp(engine, now), "expires": _stamp(engine, now + expires_in)}
    if history:
        insert = (
            "INSERT INTO orders (out_trade_no, user_id, status, total_fee, body, transaction_id, paid_at, "
            "closed_at, expires_at, refunded_fee, created_at, updated_at) "
            f"SELECT {number}, {owner}, CASE WHEN i % 10 = 9 THEN 'closed' ELSE 'paid' END, :fee, :body, "
            "CASE WHEN i % 10 = 9 THEN NULL ELSE '4200hist' || lpad(i::text, 24, '0') END, "
            "CASE WHEN i % 10 = 9 THEN NULL ELSE t + interval '1 minute' END, "
            "CASE WHEN i % 10 = 9 THEN t + interval '30 minutes' END, t + interval '30 minutes', 0, t, t "
            f"FROM {source}, LATERAL (SELECT CAST(:now AS timestamptz) - (:stop - i) * interval '1 minute' AS t) AS ts")
    else:
        insert = (
            head + "INSERT INTO orders (out_trade_no, user_id, status, total_fee, body, expires_at, refunded_fee, "
            "created_at, updated_at) "
            f"SELECT {number}, {owner}, 'unpaid', :fee, :body, :expires, 0, :now, :now FROM {source}")
    with engine.begin() as conn:
        before = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM orders")).scalar_one()
        conn.execute(text(insert), params)
        conn.execute(text(
            "INSERT INTO order_items (order_id, product_id, name, unit_price_fen, quantity) "
            "SELECT id, :pid, :name, :price, :qty FROM orders WHERE id > :before"),
            {"pid": product["id"], "name": product["name"], "price": product["price_fen"], "qty": QUANTITY,
             "before": before})
        if history:
            conn.execute(text(
                "INSERT INTO payments (order_id, transaction_id, total_fee, time_end, source, created_at) "
                "SELECT id, transaction_id, total_fee, paid_at, 'notify', paid_at FROM orders "
                "WHERE id > :before AND status = 'paid'"), {"before": before})
    if not sqlite:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("orders", "order_items", "payments"):
                conn.execute(text(f"VACUUM ANALYZE {table}"))
            # Write the load out now, not in a checkpoint in the middle of the next measurement.
            conn.execute(text("CHECKPOINT"))


def count_orders(engine: Engine, prefix: str | None = None, status: str | None = None) -> int:
    sql, params = "SELECT COUNT(*) FROM orders WHERE 1 = 1", {}
    if prefix:
        sql += " AND out_trade_no LIKE :p"
        params["p"] = prefix + "%"
    if status:
        sql += " AND status = :s"
        params["s"] = status
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def paid_indexes(engine: Engine, prefix: str) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT out_trade_no FROM orders WHERE out_trade_no LIKE :p AND status = 'paid'"),
                            {"p": prefix + "%"}).scalars()
        return sorted(int(no[PREFIX_LEN:]) for no in rows)


def notification(prefix: str, i: int, total_fee: int) -> bytes:
    """WeChat's signed payment notification for order `i`, as the sandbox would send it."""
    fields = {
        "return_code": "SUCCESS", "result_code": "SUCCESS", "appid": SANDBOX_APPID, "mch_id": SANDBOX_MCH_ID,
        "nonce_str": signing.nonce(), "openid": "o-bench-payer", "is_subscribe": "N", "trade_type": "JSAPI",
        "bank_type": "OTHERS", "total_fee": str(total_fee), "cash_fee": str(total_fee), "fee_type": "CNY",
        "transaction_id": f"4200{prefix[1:]}{i:023d}"[:32], "out_trade_no": order_no(prefix, i),
        "time_end": "20261124120000",
    }
    fields["sign"] = signing.sign(fields, SANDBOX_PAY_KEY)
    return xmlcodec.dumps(fields)


def write_notifications(path: Path, prefix: str, indexes, total_fee: int) -> int:
    """One signed body a line (they hold no newline), in the order of `indexes`."""
    n = 0
    with path.open("wb") as f:
        for i in indexes:
            body = notification(prefix, i, total_fee)
            assert b"\n" not in body
            f.write(body + b"\n")
            n += 1
    return n
