"""The floor: the least work a request of each scenario can be, written straight on psycopg and redis-py.

Issue 15 says that "a straightforward implementation of the same notify path (parse, verify, one
transaction with a conditional update and the payment row)" costs a fraction of ours. These are such
implementations, measured by `bench/inproc.py --floor` beside the product on the same data, so that the
distance to a target can be split into what the bare work costs and what the product adds on top
(Flask, SQLAlchemy, the notification record, the audit row, the message credit, the log line).

They are measuring sticks, not code to copy: no audit, no record of the notification, no message, no
request id, no error shape, no retry on a concurrent duplicate, and no Flask or WSGI around them.
PostgreSQL and Redis only.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from miniapp_server.config import SANDBOX_PAY_KEY
from miniapp_server.wechat.pay import signing, xmlcodec

_PAY = ("UPDATE orders SET status = 'paid', transaction_id = %(txn)s, paid_at = %(paid)s, updated_at = %(now)s "
        "WHERE out_trade_no = %(no)s AND status = 'unpaid' AND total_fee = %(fee)s RETURNING id")
_PAYMENT = ("INSERT INTO payments (order_id, transaction_id, total_fee, time_end, source, created_at) "
            "VALUES (%(order)s, %(txn)s, %(fee)s, %(paid)s, 'notify', %(now)s)")
_KNOWN = "SELECT anomaly FROM payments WHERE transaction_id = %(txn)s"
_READ = ("SELECT o.out_trade_no, o.status, o.total_fee, o.body, o.created_at, o.paid_at, i.product_id, i.name, "
         "i.unit_price_fen, i.quantity FROM orders o LEFT JOIN order_items i ON i.order_id = o.id "
         "WHERE o.out_trade_no = %(no)s AND o.user_id = %(user)s")
_OK = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"


def _verified(body: bytes) -> dict[str, str]:
    fields = xmlcodec.loads(body)
    if not signing.verify(fields, SANDBOX_PAY_KEY):  # the protocol layer's own check (constant-time)
        raise ValueError("bad signature")
    return fields


def notify(conn, body: bytes) -> bytes:
    """Parse, verify, and in one transaction: the conditional UPDATE, then the payment row (or, for a
    notification already applied, the lookup that says so)."""
    fields = _verified(body)
    now = datetime.now(timezone.utc)
    args = {"txn": fields["transaction_id"], "no": fields["out_trade_no"], "fee": int(fields["total_fee"]),
            "paid": now, "now": now}
    with conn.transaction():
        row = conn.execute(_PAY, args).fetchone()
        if row is not None:
            conn.execute(_PAYMENT, {**args, "order": row[0]})
        elif conn.execute(_KNOWN, args).fetchone() is None:
            raise ValueError("unknown order")
    return _OK


def read(conn, redis, token_key: str, user_id: int, out_trade_no: str) -> bytes:
    """The session lookup in Redis, then the order and its lines in one select, as JSON."""
    if redis.get(token_key) is None:
        raise ValueError("no session")
    rows = conn.execute(_READ, {"no": out_trade_no, "user": user_id}).fetchall()
    if not rows:
        raise ValueError("not found")
    head = rows[0]
    return json.dumps({"out_trade_no": head[0], "status": head[1], "total_fee": head[2], "body": head[3],
                       "created_at": head[4].isoformat(), "paid_at": head[5] and head[5].isoformat(),
                       "items": [{"product_id": r[6], "name": r[7], "unit_price_fen": r[8], "quantity": r[9]}
                                 for r in rows if r[6] is not None]}, ensure_ascii=False).encode()
