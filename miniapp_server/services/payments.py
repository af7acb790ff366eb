"""Paying for orders, and the one exactly-once path by which an order becomes paid.

Only WeChat's signed notification or WeChat's own order query reaches
`apply_payment`; the client's word never does. Every state change is a
conditional UPDATE inside one transaction (with a row lock on PostgreSQL and an
IMMEDIATE transaction on SQLite), and a unique `payments.transaction_id`, so
that any number of copies of one notification, in any number of workers, make
one transition.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable

from flask import current_app
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.attributes import set_committed_value

from ..audit import ATTACH_PREFIX
from ..errors import ApiError, conflict
from .. import fast_sql
from ..extensions import db, wechat
from ..logging_setup import current_request_id
from ..sqlite_tuning import begin_write
from ..models import Anomaly, Order, OrderStatus, Payment, PaymentNotification, utcnow
from ..wechat.times import parse_wechat_time
from ..wechat.errors import PayError
from ..wechat.ipaddr import clean_ip
from ..wechat.pay.gateway import FALLBACK_IP
from . import messages

log = logging.getLogger(__name__)

MIN_PAY_WINDOW = timedelta(minutes=6)  # WeChat wants time_expire at least 5 minutes ahead
PREPAY_REUSE_MARGIN = timedelta(minutes=1)

# What apply_payment concluded; the notify endpoint acknowledges all but the last group.
PAID = "paid"
DUPLICATE = "duplicate"
UNKNOWN_ORDER = "unknown_order"
ACKNOWLEDGED = {PAID, DUPLICATE, Anomaly.PAID_AFTER_CLOSE.value, Anomaly.DOUBLE_PAYMENT.value}

# The hot paths' statements, built once: SQLAlchemy then skips building each statement and its cache
# key per request (an UPDATE: 303 us of CPU built per call, 134 us prebuilt; bench/README.md).
_ORDERS, _PAYMENTS = Order.__table__, Payment.__table__
_PAY_UNPAID = (
    update(_ORDERS)
    .where(_ORDERS.c.out_trade_no == bindparam("no"), _ORDERS.c.status == OrderStatus.UNPAID.value,
           _ORDERS.c.total_fee == bindparam("fee"))
    .values(status=OrderStatus.PAID.value, transaction_id=bindparam("txn"), paid_at=bindparam("paid"),
            updated_at=bindparam("now"))
    .returning(*_ORDERS.c)
)
_INSERT_PAYMENT = insert(_PAYMENTS)
_KEEP_PREPAY = (
    update(_ORDERS)
    .where(_ORDERS.c.id == bindparam("order"), _ORDERS.c.status == OrderStatus.UNPAID.value)
    .values(prepay_id=bindparam("p_prepay_id"), trade_type=bindparam("p_trade_type"),
            prepay_expires_at=bindparam("p_expires"), code_url=bindparam("p_code_url"),
            client_ip=bindparam("p_client_ip"), pay_request_id=bindparam("p_rid"), updated_at=bindparam("p_now"))
    .returning(*_ORDERS.c)
)
_INSERT_NOTIFICATION = insert(PaymentNotification.__table__)
_KNOWN = (
    select(_ORDERS.c.id, _PAYMENTS.c.id, _PAYMENTS.c.anomaly)
    .outerjoin(_PAYMENTS, _PAYMENTS.c.transaction_id == bindparam("txn"))
    .where(_ORDERS.c.out_trade_no == bindparam("no"))
)


def ensure_payable(order: Order) -> None:
    if order.status == OrderStatus.PAID.value:
        raise conflict("order_paid", "this order is already paid")
    if order.status != OrderStatus.UNPAID.value:
        raise conflict(f"order_{order.status}", f"this order is {order.status} and cannot be paid")
    if order.expires_at - utcnow() < MIN_PAY_WINDOW:
        raise conflict("order_expired", "this order has (nearly) expired; create a new one")


def prepay(order: Order, *, trade_type: str, notify_url: str, client_ip: str, openid: str | None = None,
           product_id: str | None = None) -> Order:
    """Ask WeChat for a prepay id (reusing one that is still valid) and keep it on the order."""
    ensure_payable(order)
    client_ip = clean_ip(client_ip) or FALLBACK_IP  # what is stored and sent is an address, whatever arrived
    now = utcnow()
    if order.prepay_id and order.trade_type == trade_type and order.prepay_expires_at \
            and order.prepay_expires_at > now + PREPAY_REUSE_MARGIN:
        return order
    if order.prepay_id and order.trade_type != trade_type:
        raise conflict("trade_type_conflict",
                       f"this order is already being paid by {order.trade_type}; create a new order to pay another way")
    # The prepay_id (and a NATIVE code_url) lives PREPAY_TTL; the trade itself lives until the order's own
    # deadline, which is what time_expire tells WeChat. Sending the same time_expire every time keeps a
    # repeated unified order identical, so that once a prepay has expired WeChat gives the *same* trade a
    # fresh prepay_id / code_url instead of refusing it (see services/native.py).
    expires = min(order.expires_at, now + timedelta(seconds=current_app.config["PREPAY_TTL"]))
    # Everything the call needs is read now: an attribute read after the commit below would reload the
    # order and so open a transaction that lives across the call to WeChat.
    order_id, no, total, body, deadline = order.id, order.out_trade_no, order.total_fee, order.body, order.expires_at
    old_prepay_id, old_expires = order.prepay_id, order.prepay_expires_at
    # WeChat echoes `attach` in its notification: the id of the request that opened the trade follows the
    # payment there (kept on the order, so that a renewed unified order stays identical).
    pay_request_id = order.pay_request_id or current_request_id()
    db.session.commit()  # never hold a database transaction across a call to WeChat
    try:
        answer = wechat.gateway.prepay(
            trade_type=trade_type, description=body, out_trade_no=no, total_fee=total, client_ip=client_ip,
            notify_url=notify_url, openid=openid, product_id=product_id, expires_at=deadline,
            attach=ATTACH_PREFIX + pay_request_id if pay_request_id else None,
        )
    except PayError as err:
        _handle_prepay_refusal(order_id, err)
        raise
    prepay_id = answer.prepay_id
    if not prepay_id:
        raise ApiError(502, "wechat_pay_error", "WeChat Pay answered without a prepay_id")
    if prepay_id == old_prepay_id and old_expires is not None:
        expires = old_expires  # WeChat handed back the prepay it already gave: its life was not extended
    # RETURNING hands back the row as committed (the UPDATE's row lock holds until the commit), so the
    # order is brought up to date from it instead of being reloaded by a query of its own.
    row = db.session.connection().execute(_KEEP_PREPAY, {
        "order": order_id, "p_prepay_id": prepay_id, "p_trade_type": trade_type, "p_expires": expires,
        "p_code_url": answer.code_url, "p_client_ip": client_ip, "p_rid": pay_request_id, "p_now": utcnow()}).first()
    db.session.commit()
    if row is None:
        order = db.session.get(Order, order_id)
        assert order is not None
        ensure_payable(order)  # it changed state meanwhile: say how
        return order
    for key, value in row._mapping.items():
        set_committed_value(order, key, value)
    return order


def _handle_prepay_refusal(order_id: int, err: PayError) -> None:
    """WeChat's answers that mean the order's state is not what we thought."""
    order = db.session.get(Order, order_id)
    if err.code == "ORDERPAID" and order is not None:
        sync_order(order)  # WeChat says paid: learn the transaction from its order query
        raise conflict("order_paid", "this order is already paid") from None
    if err.code == "ORDERCLOSED" and order is not None:
        mark_closed(order_id)
        raise conflict("order_closed", "this order is closed at WeChat") from None
    if err.code in ("OUT_TRADE_NO_USED", "INVALID_REQUEST"):
        raise conflict("out_trade_no_used", "WeChat already has this order with other details") from None


def jsapi_params(order: Order) -> dict[str, str]:
    assert order.prepay_id
    return wechat.gateway.jsapi_params(order.prepay_id)


def mark_closed(order_id: int) -> bool:
    result = db.session.execute(
        update(Order).where(Order.id == order_id, Order.status == OrderStatus.UNPAID.value)
        .values(status=OrderStatus.CLOSED.value, closed_at=utcnow(), updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()
    return result.rowcount == 1


# -- the exactly-once path ------------------------------------------------------------------------

def apply_payment(*, out_trade_no: str, transaction_id: str, total_fee: int, time_end: str | None, source: str,
                  record: dict[str, Any] | None = None, before_commit: Callable[[str], None] | None = None,
                  note: str = "", payer_openid: str | None = None) -> str:
    """Apply one payment WeChat vouches for; returns the verdict. Commits (with `record`, if given).

    `before_commit(verdict)` runs inside the transaction just before its commit (the notification's
    audit row rides along with it); `note` ends the one log line of the outcome; `payer_openid` is who
    paid as WeChat says (the shipping upload must name them).
    """
    paid_at = parse_wechat_time(time_end or "") or utcnow()
    payer = (payer_openid or None) and str(payer_openid)[:128]
    for attempt in range(5):
        try:
            verdict = _apply_once(out_trade_no, transaction_id, total_fee, paid_at, source, quick=attempt == 0,
                                  payer_openid=payer)
            if record is not None:
                fast_sql.execute(db.session.connection(), _INSERT_NOTIFICATION, {**record, "verdict": verdict})
            if before_commit is not None:
                before_commit(verdict)
            db.session.commit()
            log.info("payment %s for %s via %s: %s%s", transaction_id, out_trade_no, source, verdict, note)
            messages.send_ready()  # the buyer's "paid" message, now that the payment is committed
            if verdict == PAID and current_app.config.get("AUTO_SHIP_VIRTUAL"):
                # After the payment's commit, never inside it: a failure here cannot undo the payment,
                # and reconcile ships what is left unshipped.
                from .shipping import auto_ship_virtual

                auto_ship_virtual(out_trade_no)
            return verdict
        except IntegrityError:
            # A concurrent copy recorded this transaction first (or it paid another order); the next pass
            # takes the careful path and sees it as a duplicate.
            db.session.rollback()
        except OperationalError:
            db.session.rollback()  # deadlock or lock timeout: try again
            if attempt == 4:
                raise
    raise ApiError(503, "try_again", "could not record the payment; WeChat will retry")


def _apply_once(out_trade_no: str, transaction_id: str, total_fee: int, paid_at: datetime, source: str,
                quick: bool = True, payer_openid: str | None = None) -> str:
    begin_write(db.session)
    if quick:
        # The common case in two statements: an unpaid order of exactly this amount becomes paid, and its
        # payment row is written. The UPDATE's own row lock serializes concurrent copies: the second
        # waits, then matches nothing (the order is no longer unpaid) and takes the careful path below. A
        # transaction id already recorded (for another order) fails the payment's unique index: the
        # caller rolls back and retries without this shortcut. Core statements on the session's
        # connection (same transaction): no ORM bulk-persistence layer for rows it does not track.
        conn = db.session.connection()
        now = utcnow()
        paid = fast_sql.execute(conn, _PAY_UNPAID, {"no": out_trade_no, "fee": total_fee, "txn": transaction_id,
                                                    "paid": paid_at, "now": now}).first()
        if paid is not None:
            fast_sql.execute(conn, _INSERT_PAYMENT, {"order_id": paid.id, "transaction_id": transaction_id,
                                                     "total_fee": total_fee, "time_end": paid_at, "source": source,
                                                     "payer_openid": payer_openid, "anomaly": None, "created_at": now})
            # The order's row as it now is, locked by the UPDATE: what the message is made of.
            messages.queue(paid, "paid", values={"paid_at": paid_at})  # in this transaction: gone if it rolls back
            return PAID
        # Already recorded? A payment row never changes once written, so no lock is needed to say so.
        known = fast_sql.execute(conn, _KNOWN, {"txn": transaction_id, "no": out_trade_no}).first()
        if known is None:
            return UNKNOWN_ORDER
        if known[1] is not None:
            return known[2] or DUPLICATE
    order = db.session.execute(
        db.select(Order).filter_by(out_trade_no=out_trade_no).with_for_update()
    ).scalar_one_or_none()
    if order is None:
        return UNKNOWN_ORDER
    seen = db.session.execute(db.select(Payment).filter_by(transaction_id=transaction_id)).scalar_one_or_none()
    if seen is not None:
        return seen.anomaly or DUPLICATE
    if total_fee != order.total_fee:
        return _anomaly(order, transaction_id, total_fee, paid_at, source, Anomaly.AMOUNT_MISMATCH,
                        f"paid {total_fee} fen for an order of {order.total_fee} fen")
    if order.status == OrderStatus.UNPAID.value:
        moved = db.session.execute(
            update(Order).where(Order.id == order.id, Order.status == OrderStatus.UNPAID.value)
            .values(status=OrderStatus.PAID.value, transaction_id=transaction_id, paid_at=paid_at, updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        ).rowcount
        if moved == 1:
            db.session.add(Payment(order_id=order.id, transaction_id=transaction_id, total_fee=total_fee,
                                   time_end=paid_at, source=source, payer_openid=payer_openid))
            messages.queue(order, "paid", values={"paid_at": paid_at})  # in this transaction: gone if it rolls back
            db.session.expire(order)
            return PAID
        db.session.refresh(order)
    if order.status == OrderStatus.CLOSED.value:
        return _anomaly(order, transaction_id, total_fee, paid_at, source, Anomaly.PAID_AFTER_CLOSE,
                        "paid after the order was closed")
    return _anomaly(order, transaction_id, total_fee, paid_at, source, Anomaly.DOUBLE_PAYMENT,
                    f"second payment; the order was paid by {order.transaction_id}")


def _anomaly(order: Order, transaction_id: str, total_fee: int, paid_at: datetime, source: str, kind: Anomaly,
             detail: str) -> str:
    """Record a payment an operator must look at (and usually refund); the order's status stays."""
    db.session.add(Payment(order_id=order.id, transaction_id=transaction_id, total_fee=total_fee, time_end=paid_at,
                           source=source, anomaly=kind.value))
    if not order.anomaly:
        order.anomaly = kind.value
    order.anomaly_detail = ((order.anomaly_detail + "; ") if order.anomaly_detail else "") + \
        f"{kind.value}: {detail} (transaction {transaction_id})"
    order.anomaly_detail = order.anomaly_detail[:255]
    log.warning("payment anomaly on %s: %s", order.out_trade_no, kind.value)
    return kind.value


# -- asking WeChat -----------------------------------------------------------------------------------

def sync_order(order: Order) -> Order:
    """Ask WeChat (order query) and apply what it says through the same path as a notification."""
    order_id, no = order.id, order.out_trade_no
    db.session.commit()
    try:
        answer = wechat.gateway.query(no)
    except PayError as err:
        if err.code == "ORDERNOTEXIST":  # never reached WeChat: nothing to learn
            return db.session.get(Order, order_id)  # type: ignore[return-value]
        raise
    if answer.paid and answer.transaction_id:
        apply_payment(out_trade_no=no, transaction_id=answer.transaction_id,
                      total_fee=answer.total_fee if answer.total_fee is not None else -1, time_end=answer.time_end,
                      source="query", payer_openid=answer.openid)
    elif answer.trade_state in ("CLOSED", "REVOKED", "PAYERROR"):
        mark_closed(order_id)
    fresh = db.session.get(Order, order_id)
    db.session.refresh(fresh)
    return fresh  # type: ignore[return-value]
