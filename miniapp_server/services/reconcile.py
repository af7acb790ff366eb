"""Reconciliation: make our orders and refunds agree with WeChat when a notification went missing.

One pass:
1. unpaid orders whose time is up: `closeorder` at WeChat first (so nobody can pay
   them any more), then `closed` here; WeChat answering ORDERPAID means a payment
   landed, which is learnt through the order query instead;
2. unpaid orders with a prepay id older than `older_than` seconds: order query,
   applied through `apply_payment`, the notification's own exactly-once path;
3. refunds WeChat never answered (`pending`): sent again with their own
   out_refund_no; refunds left `processing`: refund query, applied through
   `settle_refund`, the refund notification's own path;
4. subscribe messages left `pending` (WeChat unreachable or busy, or the sender
   died) whose next attempt is due: sent again (services/messages.py claims each
   first, so no message goes twice from two passes or a pass and a request);
5. yesterday's bills (China time), once WeChat has made them (after 10:00 China time), and again
   after a failed check (`services/bills.py`; the outcome of each check is a `bill_checks` row);
6. once a day, certificates expiring within 30 days logged (`services/doctor.py`);
7. shipping uploads WeChat has not taken yet (`pending`): sent again (`shipping.try_upload`,
   which first asks WeChat whether an earlier attempt already got through); WeChat's permanent
   refusals are recorded on the shipment and never sent again; with AUTO_SHIP_VIRTUAL, paid
   orders left unshipped (the process died between the payment and the shipment) are shipped.

Every step is idempotent, so two passes at once (two machines, cron overlapping
`--watch`) cannot do harm; a lock (in the store, and a PostgreSQL advisory lock
for machines that share only the database) still keeps them from doubling the
calls to WeChat. A payment that lands after its order was closed is kept and
flagged by `apply_payment` (paid_after_close), for an operator to refund.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Iterator

from flask import current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..errors import ApiError
from ..extensions import db, store
from ..models import MessageState, Order, OrderStatus, Refund, RefundStatus, SubscribeMessage, utcnow
from ..store import LockTimeout
from ..wechat.errors import WeChatError
from . import bills, closing, doctor, messages, payments, refunds, shipping

log = logging.getLogger(__name__)

LOCK_NAME = "reconcile"
LOCK_LEASE = 600  # seconds; a pass that outlives it may overlap the next, which is harmless (see above)
PG_LOCK_KEY = 0x6D696E6972636E  # any constant shared by every machine


@dataclass
class Summary:
    skipped: bool = False  # another pass held the lock
    checked: int = 0  # orders looked at
    paid: int = 0  # found paid at WeChat (a lost notification)
    closed: int = 0  # closed here (at WeChat too when they had a prepay id)
    anomalies: int = 0  # payments flagged for an operator
    unchanged: int = 0
    refunds_checked: int = 0
    refunds_settled: int = 0  # success or failed now
    messages_checked: int = 0  # pending subscribe messages tried again
    messages_sent: int = 0
    messages_refused: int = 0  # WeChat refused them for good (43101 no credit, 47003, ...)
    uploads_checked: int = 0  # shipping uploads sent again
    uploads_done: int = 0  # accepted by WeChat now
    uploads_refused: int = 0  # refused for good: an operator must look (named in failures)
    auto_shipped: int = 0  # AUTO_SHIP_VIRTUAL orders shipped by this pass
    errors: int = 0
    failures: list[str] = field(default_factory=list)  # "out_trade_no: what went wrong"
    bills: list[dict] = field(default_factory=list)  # the bill checks this pass ran (services/bills.py)

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        if self.skipped:
            return "reconcile: skipped, another reconcile is running"
        messages = (f"{self.messages_checked} messages retried: {self.messages_sent} sent, {self.messages_refused} "
                    "refused; ") if self.messages_checked else ""
        uploads = (f"{self.uploads_checked} shipping uploads retried: {self.uploads_done} uploaded, "
                   f"{self.uploads_refused} refused; ") if self.uploads_checked else ""
        if self.auto_shipped:
            uploads += f"{self.auto_shipped} auto-shipped; "
        return (f"reconcile: {self.checked} orders checked: {self.paid} paid, {self.closed} closed, "
                f"{self.anomalies} anomalies, {self.unchanged} unchanged; {self.refunds_checked} refunds checked, "
                f"{self.refunds_settled} settled; {messages}{uploads}{self.errors} errors"
                # Bills that need an operator (all of them are in the JSON): `flask orders bills check` tells more.
                + "".join(f"; bill {b['bill_type']} {b['bill_date']}: {b['status']}"
                          f" ({b['discrepancy_count']} discrepancies)" for b in self.bills
                          if b["status"] in ("discrepancies", "failed")))


@contextlib.contextmanager
def _single_pass() -> Iterator[bool]:
    """True when this process may run a pass; False when another one is running."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(store.lock(LOCK_NAME, timeout=LOCK_LEASE, wait=0))
        except LockTimeout:
            yield False
            return
        if db.engine.dialect.name == "postgresql":
            conn = held.enter_context(db.engine.connect())  # a session-level lock, released with the connection
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar()
            conn.commit()
            if not got:
                yield False
                return
            held.callback(lambda: (conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY}),
                                   conn.commit()))
        yield True


def reconcile(older_than: int = 300, limit: int = 500, now: datetime | None = None) -> Summary:
    summary = Summary()
    with _single_pass() as mine:
        if not mine:
            summary.skipped = True
            log.info(summary.line())
            return summary
        now = now or utcnow()
        _close_expired(summary, now, limit)
        _query_stale(summary, now - timedelta(seconds=older_than), now, limit)
        _refunds(summary, now - timedelta(seconds=older_than), limit)
        _messages(summary, now, limit)
        _auto_ship(summary, now - timedelta(seconds=older_than), limit)
        _uploads(summary, now - timedelta(seconds=older_than), limit)
        _bills(summary, now)
        _expiry_warnings(now)
    log.info(summary.line())
    _count(summary)
    return summary


def _bills(summary: Summary, now: datetime) -> None:
    """Yesterday's bills (China time), once WeChat has made them, and again after a failure. Under the
    pass's lock, so two instances do not both download them; the checks are safe to overlap anyway."""
    cfg = current_app.config
    if not cfg.get("BILLS_RECONCILE", True):
        return
    try:
        due = bills.due_checks(now, bills.bill_kinds(cfg), timedelta(minutes=cfg.get("BILLS_RETRY_MINUTES", 30)))
        for day, kind in due:
            check = bills.check_bill(day, kind, trigger="reconcile")
            summary.bills.append(check.to_dict(with_discrepancies=False))
    except SQLAlchemyError as err:  # the next pass tries again; the orders and refunds above are done
        db.session.rollback()
        log.warning("reconcile bills: %s", type(err).__name__)


def _expiry_warnings(now: datetime) -> None:
    """Certificates expiring within 30 days, in the log once a day (across instances: a key in the store)."""
    try:
        doctor.daily_expiry_warnings(now)
    except Exception as exc:  # noqa: BLE001 - a warning must never break the pass
        log.warning("certificate expiry not checked (%s)", type(exc).__name__)


def _count(summary: Summary) -> None:
    """The pass's outcomes for /metrics (shared with the web workers through PROMETHEUS_MULTIPROC_DIR)."""
    from .. import metrics

    for kind, outcome, n in (("order", "paid", summary.paid), ("order", "closed", summary.closed),
                             ("order", "anomaly", summary.anomalies), ("order", "unchanged", summary.unchanged),
                             ("refund", "settled", summary.refunds_settled),
                             ("refund", "unsettled", summary.refunds_checked - summary.refunds_settled),
                             ("message", "sent", summary.messages_sent), ("message", "refused", summary.messages_refused),
                             ("shipping_upload", "uploaded", summary.uploads_done),
                             ("shipping_upload", "refused", summary.uploads_refused),
                             ("shipping_upload", "still_pending",
                              summary.uploads_checked - summary.uploads_done - summary.uploads_refused),
                             ("any", "error", summary.errors)):
        if n:
            metrics.RECONCILE.labels(kind, outcome).inc(n)


def _ids(query) -> list[int]:
    ids = list(db.session.execute(query).scalars())
    db.session.commit()  # hold nothing while talking to WeChat
    return ids


def _close_expired(summary: Summary, now: datetime, limit: int) -> None:
    ids = _ids(db.select(Order.id).where(Order.status == OrderStatus.UNPAID.value, Order.expires_at <= now)
               .order_by(Order.expires_at).limit(limit))
    for order_id in ids:
        _step(summary, order_id, lambda order: closing.close_order(order))


def _query_stale(summary: Summary, cutoff: datetime, now: datetime, limit: int) -> None:
    ids = _ids(db.select(Order.id).where(Order.status == OrderStatus.UNPAID.value, Order.prepay_id.is_not(None),
                                         Order.created_at <= cutoff, Order.expires_at > now)
               .order_by(Order.created_at).limit(limit))
    for order_id in ids:
        _step(summary, order_id, payments.sync_order)


def _failed(summary: Summary, what: str, no: str, err: Exception) -> None:
    """One order or refund WeChat (or the database) failed on: counted and named, and the pass goes on."""
    db.session.rollback()
    summary.errors += 1
    summary.failures.append(f"{no}: {err}"[:300])
    log.warning("reconcile %s %s: %s", what, no, err)


def _step(summary: Summary, order_id: int, action) -> None:
    order = db.session.get(Order, order_id)
    if order is None or order.status != OrderStatus.UNPAID.value:
        return  # someone else (a notification, another pass) got there first
    summary.checked += 1
    no, anomaly_before = order.out_trade_no, order.anomaly_detail
    try:
        order = action(order)
    except (WeChatError, ApiError, SQLAlchemyError) as err:
        _failed(summary, "order", no, err)
        return
    if order.anomaly_detail != anomaly_before:
        summary.anomalies += 1
    if order.status == OrderStatus.PAID.value:
        summary.paid += 1
        log.info("reconcile %s: paid at WeChat (its notification never arrived)", no)
    elif order.status == OrderStatus.CLOSED.value:
        summary.closed += 1
        log.info("reconcile %s: closed", no)
    else:
        summary.unchanged += 1


def _refunds(summary: Summary, cutoff: datetime, limit: int) -> None:
    ids = _ids(db.select(Refund.id).where(Refund.status.in_(refunds.OPEN), Refund.created_at <= cutoff)
               .order_by(Refund.created_at).limit(limit))
    for refund_id in ids:
        refund = db.session.get(Refund, refund_id)
        if refund is None or refund.status not in refunds.OPEN:
            continue
        summary.refunds_checked += 1
        no = refund.out_refund_no
        try:
            if refund.status == RefundStatus.PENDING.value:
                outcome = refunds.resume_refund(refund)
                if outcome.error is not None and outcome.refund.status == RefundStatus.PENDING.value:
                    raise outcome.error
                refund = outcome.refund
            else:
                refunds.query_refund(refund)
                refund = db.session.get(Refund, refund_id)
        except (WeChatError, ApiError, SQLAlchemyError) as err:
            _failed(summary, "refund", no, err)
            continue
        if refund is not None and refund.status in (RefundStatus.SUCCESS.value, RefundStatus.FAILED.value):
            summary.refunds_settled += 1


def _messages(summary: Summary, now: datetime, limit: int) -> None:
    for message_id in messages.due(now, limit):
        summary.messages_checked += 1
        state = messages.deliver(message_id)
        if state == MessageState.SENT.value:
            summary.messages_sent += 1
        elif state == MessageState.REFUSED.value:
            summary.messages_refused += 1
        elif state == MessageState.PENDING.value:  # WeChat failed again: it waits for a later pass
            row = db.session.execute(
                db.select(Order.out_trade_no, SubscribeMessage.event, SubscribeMessage.error)
                .join(Order, Order.id == SubscribeMessage.order_id).where(SubscribeMessage.id == message_id)).first()
            db.session.commit()
            summary.errors += 1
            no, event, error = row if row is not None else ("?", "?", "not sent")
            summary.failures.append(f"{no}: {event} message not sent: {error}"[:300])


def _auto_ship(summary: Summary, cutoff: datetime, limit: int) -> None:
    from flask import current_app

    if not current_app.config.get("AUTO_SHIP_VIRTUAL"):
        return
    for no in shipping.unshipped_paid_orders(cutoff, limit):
        if shipping.auto_ship_virtual(no) is not None:
            summary.auto_shipped += 1


def _uploads(summary: Summary, cutoff: datetime, limit: int) -> None:
    for order_id, upload_no in shipping.pending_uploads(cutoff, limit):
        summary.uploads_checked += 1
        no = db.session.get(Order, order_id).out_trade_no  # type: ignore[union-attr]
        db.session.commit()
        try:
            error = shipping.try_upload(order_id, upload_no)
        except (ApiError, SQLAlchemyError) as err:
            _failed(summary, "shipping upload", no, err)
            continue
        state = shipping.upload_state(order_id, upload_no)
        if state == "uploaded":
            summary.uploads_done += 1
            log.info("reconcile %s: shipping upload %s accepted by WeChat", no, upload_no)
        elif state == "failed":
            summary.uploads_refused += 1
            summary.failures.append(f"{no}: WeChat refused shipping upload {upload_no}: {error}"[:300])
            log.warning("reconcile %s: WeChat refused shipping upload %s for good: %s", no, upload_no, error)
        elif error is not None:
            _failed(summary, "shipping upload", no, error)
