"""Refunds: asked of WeChat (`secapi/pay/refund`), settled by its notification or a refund query.

A refund is one row, stored *before* WeChat is called, under a row lock on its
order; its `out_refund_no` is derived from the order (`<out_trade_no>R<n>`) and
reused for every retry, so WeChat (idempotent on out_refund_no) never refunds it
twice. Under that lock the sum of an order's non-failed refunds of a transaction
never exceeds what that transaction paid.

A refund's states: `pending` (stored; WeChat has not knowingly accepted it: the
next `flask orders refund` or reconcile sends it again with the same number),
`processing` (accepted), `success`, `failed` (refused or closed; its amount is
free again).

The order's status follows the refunds of its own payment: `refunding` while one
is pending or processing, then `refunded` once everything paid has come back. A
partial refund (or a refused one) leaves the order where it was, `paid`, `shipped`
or `completed` (with `refunded_fee` saying how much came back), because the rest of
the money, and the goods, are still the customer's; another partial refund can
follow. A shipped or completed order can be refunded like a paid one. Refunds of an anomalous payment (amount
mismatch, paid after close, double payment) never change the order's status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import current_app, has_request_context, url_for
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import ApiError, bad_request, conflict, not_found
from ..extensions import db, wechat
from ..models import Order, OrderStatus, Payment, PaymentNotification, Refund, RefundStatus, utcnow
from ..public_urls import path_for
from ..sqlite_tuning import begin_write
from ..wechat.errors import PayError, WeChatError
from ..wechat.numbers import ascii_uint
from ..wechat.subscribe import Fen
from . import messages

log = logging.getLogger(__name__)

MAX_REASON = 80  # WeChat's refund_desc
# err_codes after which WeChat wants the same request again: the refund stays pending, same out_refund_no.
RETRY_SAME = {"SYSTEMERROR", "BIZERR_NEED_RETRY", "FREQUENCY_LIMITED", "INVALID_REQ_TOO_MUCH"}
OPEN = (RefundStatus.PENDING.value, RefundStatus.PROCESSING.value)
# Where a paid order may stand when a refund of its payment begins (and returns to, if it is not all refunded).
_SETTLED = (OrderStatus.PAID.value, OrderStatus.SHIPPED.value, OrderStatus.COMPLETED.value)
SETTLED_REFUND_STATES = {"SUCCESS", "REFUNDCLOSE", "CHANGE"}

# What settle_refund concluded; the notify endpoint acknowledges the first group.
REFUNDED = "refunded"
REFUND_FAILED = "refund_failed"
DUPLICATE = "duplicate"
PROCESSING = "processing"
UNKNOWN_REFUND = "unknown_refund"
MISMATCH = "refund_mismatch"
REFUNDED_ELSEWHERE = "refunded_elsewhere"  # a refund made in the merchant platform, recorded from WeChat's word
ACKNOWLEDGED = {REFUNDED, REFUND_FAILED, DUPLICATE, REFUNDED_ELSEWHERE}


@dataclass
class RefundOutcome:
    refund: Refund
    resumed: bool  # an earlier refund WeChat had not answered was sent again (same out_refund_no)
    error: WeChatError | None = None  # WeChat refused (refund failed) or did not answer (still pending)


def refund_notify_url() -> str | None:
    """Where WeChat should send the refund's notification (None: the merchant platform's setting)."""
    cfg = current_app.config
    if cfg["WECHAT_REFUND_NOTIFY_URL"]:
        return cfg["WECHAT_REFUND_NOTIFY_URL"]
    notify = cfg["WECHAT_NOTIFY_URL"]
    if notify and notify.rstrip("/").endswith("/notify"):
        return notify.rstrip("/")[: -len("/notify")] + "/refund-notify"
    if cfg.get("PUBLIC_BASE_URL"):
        return cfg["PUBLIC_BASE_URL"] + path_for("pay.refund_notify")
    if cfg["WECHAT_SANDBOX"] and has_request_context():
        return url_for("pay.refund_notify", _external=True)  # the in-app sandbox: any host reaches the app
    if cfg["WECHAT_SANDBOX"]:
        return "http://localhost/api/pay/refund-notify"  # the in-app sandbox delivers to the app, any host
    return None


# -- asking for a refund ----------------------------------------------------------------------------

def refund_order(order: Order, fee: int | None = None, reason: str | None = None,
                 transaction_id: str | None = None) -> RefundOutcome:
    """Refund `fee` fen (default: all that is left) of the order's payment, or of `transaction_id`."""
    if fee is not None and (not isinstance(fee, int) or isinstance(fee, bool) or fee <= 0):
        raise bad_request("invalid_refund_fee", "the refund must be a positive number of fen")
    if reason is not None and len(reason) > MAX_REASON:
        raise bad_request("invalid_reason", f"the reason is at most {MAX_REASON} characters")
    if not current_app.config["WECHAT_SANDBOX"] and not current_app.config["WECHAT_CERT_PATH"]:
        raise ApiError(503, "refund_cert_missing",
                       "refunds need the merchant client certificate: set WECHAT_CERT_PATH and WECHAT_KEY_PATH")
    refund, resumed = _reserve(order.id, fee, reason or None, transaction_id)
    return _submit(refund, resumed)


def resume_refund(refund: Refund) -> RefundOutcome:
    """Send a pending refund again, with its own out_refund_no (reconcile does this)."""
    return _submit(refund, True)


def _reserve(order_id: int, fee: int | None, reason: str | None, transaction_id: str | None) -> tuple[Refund, bool]:
    for attempt in range(5):
        try:
            refund, resumed = _reserve_once(order_id, fee, reason, transaction_id)
            db.session.commit()
            return refund, resumed
        except ApiError:
            db.session.rollback()
            raise
        except IntegrityError:
            db.session.rollback()  # a concurrent refund took the same number: count again
        except OperationalError:
            db.session.rollback()
            if attempt == 4:
                raise
    raise ApiError(503, "try_again", "could not record the refund; try again")


def _reserve_once(order_id: int, fee: int | None, reason: str | None,
                  transaction_id: str | None) -> tuple[Refund, bool]:
    begin_write(db.session)  # read-then-write: SQLite's write lock up front; a row lock on PostgreSQL below
    order = _locked_order(order_id)
    txn, paid = _refundable(order, transaction_id)
    refunds = db.session.execute(
        db.select(Refund).filter_by(order_id=order.id, transaction_id=txn).order_by(Refund.id)
    ).scalars().all()
    unanswered = [r for r in refunds if r.status == RefundStatus.PENDING.value]
    if unanswered:
        pending = unanswered[0]
        if fee is None or fee == pending.refund_fee:
            return pending, True
        raise conflict("refund_pending",
                       f"refund {pending.out_refund_no} of {pending.refund_fee} fen has no answer from WeChat yet; "
                       f"run the refund again with no --fee (or --fee {pending.refund_fee}) to resume it first")
    committed = sum(r.refund_fee for r in refunds if r.status != RefundStatus.FAILED.value)
    available = paid - committed
    amount = available if fee is None else fee
    if amount <= 0 or amount > available:
        raise conflict("refund_exceeds_paid",
                       f"a refund of {max(amount, 0)} fen would exceed what was paid: transaction {txn} paid {paid} fen, "
                       f"{committed} fen already refunded or being refunded")
    count = db.session.execute(db.select(func.count(Refund.id)).filter_by(order_id=order.id)).scalar_one()
    refund = Refund(order_id=order.id, out_refund_no=f"{order.out_trade_no}R{count + 1}", transaction_id=txn,
                    refund_fee=amount, status=RefundStatus.PENDING.value, reason=reason)
    db.session.add(refund)
    if txn == order.transaction_id and order.status in _SETTLED:
        order.status = OrderStatus.REFUNDING.value
    db.session.flush()
    log.info("refund %s of %s fen for %s (transaction %s) stored", refund.out_refund_no, amount,
             order.out_trade_no, txn)
    return refund, False


def _locked_order(order_id: int) -> Order:
    order = db.session.execute(
        db.select(Order).filter_by(id=order_id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if order is None:
        raise not_found("no such order")
    return order


def _refundable(order: Order, transaction_id: str | None) -> tuple[str, int]:
    """(transaction, what it paid): the order's own payment, or the anomalous one named."""
    txn = transaction_id or order.transaction_id
    if not txn:
        raise conflict("order_not_paid", f"order {order.out_trade_no} is {order.status} and has no payment to "
                                         "refund; name an anomalous payment with --transaction")
    payment = db.session.execute(db.select(Payment).filter_by(order_id=order.id, transaction_id=txn)) \
        .scalar_one_or_none()
    if payment is None:
        raise not_found(f"order {order.out_trade_no} has no payment {txn}")
    return txn, payment.total_fee


def _submit(refund: Refund, resumed: bool) -> RefundOutcome:
    refund_pk = refund.id
    if refund.status != RefundStatus.PENDING.value:
        return RefundOutcome(refund, resumed)
    order = refund.order
    paid = db.session.execute(db.select(Payment.total_fee).filter_by(transaction_id=refund.transaction_id)) \
        .scalar_one()
    params: dict[str, Any] = dict(
        out_trade_no=order.out_trade_no, out_refund_no=refund.out_refund_no, total_fee=paid,
        refund_fee=refund.refund_fee, notify_url=refund_notify_url(), reason=refund.reason,
        transaction_id=refund.transaction_id,
    )
    db.session.commit()  # never hold a database transaction across a call to WeChat
    try:
        answer = wechat.gateway.refund(**params)
    except PayError as err:
        if err.should_retry or err.code in RETRY_SAME:
            log.warning("refund %s: WeChat says try again (%s); it stays pending", params["out_refund_no"], err.code)
        else:
            _refused(refund_pk, str(err.code or "FAIL"))
        return RefundOutcome(_fresh(refund_pk), resumed, err)
    except WeChatError as err:  # no answer, or one we cannot believe: WeChat may have it; resend it later
        log.warning("refund %s: no usable answer from WeChat (%s); it stays pending",
                    params["out_refund_no"], type(err).__name__)
        return RefundOutcome(_fresh(refund_pk), resumed, err)
    db.session.execute(
        update(Refund).where(Refund.id == refund_pk, Refund.status == RefundStatus.PENDING.value)
        .values(status=RefundStatus.PROCESSING.value, refund_id=answer.refund_id, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )  # a notification that came first (status success) is left alone
    db.session.commit()
    log.info("refund %s accepted by WeChat", params["out_refund_no"])
    return RefundOutcome(_fresh(refund_pk), resumed)


def _fresh(refund_pk: int) -> Refund:
    refund = db.session.get(Refund, refund_pk)
    assert refund is not None
    db.session.refresh(refund)
    return refund


def _refused(refund_pk: int, failure: str) -> None:
    """WeChat refused the refund outright: it failed, and its amount is free again."""
    begin_write(db.session)
    refund = db.session.get(Refund, refund_pk)
    assert refund is not None
    order = _locked_order(refund.order_id)
    moved = db.session.execute(
        update(Refund).where(Refund.id == refund_pk, Refund.status == RefundStatus.PENDING.value)
        .values(status=RefundStatus.FAILED.value, failure=failure[:128], updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    ).rowcount
    if moved:
        _recompute_status(order)
    db.session.commit()
    log.warning("refund %s refused by WeChat: %s", refund.out_refund_no, failure)


def _recompute_status(order: Order) -> None:
    """The order's status from the refunds of its own payment (call with the order locked)."""
    if not order.transaction_id or order.status not in (
            *_SETTLED, OrderStatus.REFUNDING.value, OrderStatus.REFUNDED.value):
        return
    open_refunds = db.session.execute(
        db.select(func.count(Refund.id)).where(Refund.order_id == order.id,
                                              Refund.transaction_id == order.transaction_id,
                                              Refund.status.in_(OPEN))
    ).scalar_one()
    if open_refunds:
        status = OrderStatus.REFUNDING.value
    elif order.refunded_fee >= order.total_fee:
        status = OrderStatus.REFUNDED.value
    else:  # nothing refunded, or a partial refund: back where it stood (see the module's docstring)
        status = _fulfilment_status(order)
    if status != order.status:
        order.status = status


def _fulfilment_status(order: Order) -> str:
    """paid, shipped or completed: what the order's shipping and receipt say it is, refunds aside."""
    if order.received_at is not None:
        return OrderStatus.COMPLETED.value
    if order.shipped_at is not None:
        return OrderStatus.SHIPPED.value
    return OrderStatus.PAID.value


# -- WeChat's word on a refund (notification or refund query) ----------------------------------------

def settle_refund(fields: dict[str, str], source: str, record: dict[str, Any] | None = None) -> str:
    """Apply what WeChat says of one refund, exactly once; returns the verdict. Commits (with `record`)."""
    for attempt in range(5):
        try:
            verdict = _settle_once(fields, source)
            if record is not None:
                db.session.add(PaymentNotification(**record, verdict=verdict))
            db.session.commit()
            log.info("refund %s for %s via %s: %s", fields.get("out_refund_no"), fields.get("out_trade_no"),
                     source, verdict)
            messages.send_ready()  # the buyer's "refunded" message, now that the refund is settled
            return verdict
        except IntegrityError:
            db.session.rollback()  # a concurrent copy recorded a refund made elsewhere first: a duplicate now
        except OperationalError:
            db.session.rollback()  # deadlock or lock timeout: try again
            if attempt == 4:
                raise
    raise ApiError(503, "try_again", "could not record the refund; WeChat will retry")


def _settle_once(fields: dict[str, str], source: str) -> str:
    out_refund_no = fields.get("out_refund_no", "")
    begin_write(db.session)
    refund = db.session.execute(db.select(Refund).filter_by(out_refund_no=out_refund_no)).scalar_one_or_none()
    if refund is None:
        return _refund_made_elsewhere(fields)
    order = _locked_order(refund.order_id)
    db.session.refresh(refund)  # as it stands now that we hold the lock
    fee = ascii_uint(fields.get("refund_fee"))
    if order.out_trade_no != fields.get("out_trade_no") or fee is None or fee != refund.refund_fee \
            or (fields.get("transaction_id") and refund.transaction_id
                and fields["transaction_id"] != refund.transaction_id):
        log.warning("refund %s: WeChat's order, transaction or amount is not ours", out_refund_no)
        return MISMATCH
    state = fields.get("refund_status", "")
    if state == "SUCCESS":
        if refund.status == RefundStatus.SUCCESS.value:
            return DUPLICATE
        if refund.status == RefundStatus.FAILED.value:  # WeChat's word is final; an operator should look
            log.warning("refund %s was marked failed (%s) but WeChat says it succeeded", out_refund_no, refund.failure)
        refund.status = RefundStatus.SUCCESS.value
        refund.refund_id = fields.get("refund_id") or refund.refund_id
        refund.succeeded_at = _success_time(fields.get("success_time")) or utcnow()
        refund.failure = None
        if refund.transaction_id == order.transaction_id:
            order.refunded_fee = order.refunded_fee + refund.refund_fee
        db.session.flush()
        _recompute_status(order)
        messages.queue(order, "refunded", ref=refund.out_refund_no,
                       values={"refund_amount": Fen(refund.refund_fee), "refunded_at": refund.succeeded_at})
        return REFUNDED
    if state in ("REFUNDCLOSE", "CHANGE"):
        if refund.status not in OPEN:
            return DUPLICATE
        refund.status = RefundStatus.FAILED.value
        refund.failure = state
        db.session.flush()
        _recompute_status(order)
        log.warning("refund %s for %s failed at WeChat: %s", out_refund_no, order.out_trade_no, state)
        return REFUND_FAILED
    return PROCESSING


def _refund_made_elsewhere(fields: dict[str, str]) -> str:
    """A successful refund this shop never asked for (made by hand in the merchant platform, whose notification
    comes to our refund URL, as v2 XML even when the shop runs on v3): recorded once, as WeChat tells it, when it
    is a refund of one of our orders' payments and fits in what is left of it; anything else stays unknown."""
    no, txn, fee = fields.get("out_trade_no", ""), fields.get("transaction_id", ""), fields.get("refund_fee", "")
    if fields.get("refund_status") != "SUCCESS" or not no or not txn or not fee.isdigit() or int(fee) <= 0:
        return UNKNOWN_REFUND
    order = db.session.execute(db.select(Order).filter_by(out_trade_no=no).with_for_update()
                               .execution_options(populate_existing=True)).scalar_one_or_none()
    payment = db.session.execute(db.select(Payment).filter_by(transaction_id=txn)).scalar_one_or_none()
    if order is None or payment is None or payment.order_id != order.id:
        return UNKNOWN_REFUND
    out_refund_no = fields.get("out_refund_no", "")
    if db.session.execute(db.select(Refund.id).filter_by(out_refund_no=out_refund_no)).first() is not None:
        return DUPLICATE  # a concurrent copy, under the lock we now hold, got here first
    taken = db.session.execute(db.select(func.coalesce(func.sum(Refund.refund_fee), 0)).where(
        Refund.transaction_id == txn, Refund.status != RefundStatus.FAILED.value)).scalar_one()
    if int(fee) > payment.total_fee - taken:
        return UNKNOWN_REFUND
    refund = Refund(order_id=order.id, out_refund_no=out_refund_no, refund_id=(fields.get("refund_id") or "")[:32]
                    or None, transaction_id=txn, refund_fee=int(fee), status=RefundStatus.SUCCESS.value,
                    reason="made in the merchant platform",
                    succeeded_at=_success_time(fields.get("success_time")) or utcnow())
    db.session.add(refund)
    if txn == order.transaction_id:
        order.refunded_fee = order.refunded_fee + int(fee)
    db.session.flush()
    _recompute_status(order)
    messages.queue(order, "refunded", ref=refund.out_refund_no,
                   values={"refund_amount": Fen(refund.refund_fee), "refunded_at": refund.succeeded_at})
    log.warning("refund %s of %s fen for %s was made outside this shop (merchant platform): recorded",
                out_refund_no, fee, no)
    return REFUNDED_ELSEWHERE


def _success_time(value: str | None) -> datetime | None:
    """WeChat's `success_time` is "yyyy-MM-dd HH:mm:ss" in China time."""
    try:
        local = datetime.strptime(value or "", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return local.replace(tzinfo=timezone(timedelta(hours=8))).astimezone(timezone.utc)


def query_refund(refund: Refund) -> str:
    """Ask WeChat (refund query) how a refund stands and apply it; reconcile uses this."""
    out_refund_no = refund.out_refund_no
    db.session.commit()
    state = wechat.gateway.refund_query(out_refund_no)
    if state is not None and state.out_refund_no == out_refund_no:
        return settle_refund(state.fields(), source="query")
    return PROCESSING
