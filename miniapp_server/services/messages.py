"""Subscribe messages to the buyer when an order is paid, shipped or refunded: durable, exactly once.

The service that changes an order's state calls `queue()` inside its own transaction, with
the order locked. If the event's template is configured and the order's owner has a credit
for it (services/subscriptions.py), one credit is spent and one `subscribe_messages` row is
written, in that transaction: a rolled-back payment leaves neither. A unique constraint
(order, event, event_ref, template) keeps it to one message per event. Only once that
transaction has committed does `send_ready()` send it; whatever is left `pending` (no
answer, WeChat busy, a crash in between) is sent by the reconcile pass (`retry_due()`).

Sending claims the row first (a lease in `claimed_until`, taken by a conditional UPDATE),
so the request that committed it and a reconcile pass on another machine never both send
it. WeChat keeps no idempotency key for subscribe/send: a sender that dies after WeChat
took the message but before we wrote `sent` leaves it to be sent again once the lease
runs out; WeChat spent the credit, so that second try gets 43101 unless the person
accepted again.

WeChat's answers: `ok` -> sent. 43101 -> refused, and our count of that person's credits
for the template drops to 0 (WeChat says there are none). Other refusals (40003, 40037,
47003, 41030, any errcode not known to be passing) -> refused, and the credit is given back,
since WeChat spent none. No answer, -1, 45009/45011, a token refused twice -> pending,
retried later with a growing delay.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, event, or_, update
from sqlalchemy.exc import SQLAlchemyError

from .. import audit, fast_sql
from ..extensions import db, wechat
from ..message_settings import STATUS_TEXT, MessageTemplate
from ..models import MessageCredit, MessageState, Order, SubscribeMessage, User, utcnow
from ..wechat.errors import InvalidCredential, WeChatError
from ..wechat.subscribe import NO_CREDIT, RETRYABLE_CODES, Fen, fit, kind_of

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)  # longer than a send can take: token fetch + send + one refetch and resend
MAX_BACKOFF = timedelta(hours=1)
_QUEUED = "miniapp.messages_queued"  # rows written in the open transaction
_READY = "miniapp.messages_ready"  # rows whose transaction committed: send them
# Spending one credit: built once, since every payment runs it (bench/README.md).
_credits = MessageCredit.__table__
_SPEND_CREDIT = (
    update(_credits)
    .where(_credits.c.user_id == bindparam("user"), _credits.c.template_id == bindparam("template"),
           _credits.c.credits > 0)
    .values(credits=_credits.c.credits - 1, updated_at=bindparam("now"))
)


# -- queueing, inside the state change's transaction ---------------------------------------------------

def queue(order: Order, event_name: str, *, ref: str = "", values: dict[str, Any] | None = None) -> int | None:
    """Spend the owner's credit and write the message of `event_name` for `order`; the row id, or None.

    Call inside the transaction that makes the change, with the order locked, and send with
    `send_ready()` after the commit. `values` adds what only the event knows (paid_at,
    refund_amount, ...). Never raises for a message: no template or no credit is no message.
    """
    template: MessageTemplate | None = current_app.config["WECHAT_MESSAGES"].get(event_name)
    if template is None:
        return None
    user_id, now = order.user_id, utcnow()
    # The common case (no credit) costs this one UPDATE; credits are never negative (a CHECK too).
    spent = fast_sql.execute(db.session.connection(), _SPEND_CREDIT,
                             {"user": user_id, "template": template.template_id, "now": now}).rowcount
    if not spent:  # the usual case, not news: at INFO it was a second log line on every notification
        log.debug("no %s message for %s: its owner has no credit for template %s", event_name, order.out_trade_no,
                  template.template_id)
        return None
    seen = db.session.execute(db.select(SubscribeMessage.id).filter_by(
        order_id=order.id, event=event_name, event_ref=ref, template_id=template.template_id)).scalar_one_or_none()
    if seen is not None:  # the same event again: it has its message; the credit goes back
        _give_back(user_id, template.template_id)
        return None
    openid = db.session.execute(db.select(User.openid).filter_by(id=user_id)).scalar_one()
    row = SubscribeMessage(
        order_id=order.id, user_id=user_id, event=event_name, event_ref=ref, template_id=template.template_id,
        touser=openid, page=template.page_for(order.out_trade_no) if template.page else None,
        data=json.dumps(render(template, order, values or {}), ensure_ascii=False),
        state=MessageState.PENDING.value, next_attempt_at=now, created_at=now,
    )
    db.session.add(row)
    db.session.flush()
    db.session.info.setdefault(_QUEUED, []).append(row.id)
    return row.id


def render(template: MessageTemplate, order: Order, values: dict[str, Any]) -> dict[str, str]:
    """The template's fields filled from the order and the event, each within its kind's limit."""
    sources: dict[str, Any] = {
        "out_trade_no": order.out_trade_no, "item": order.body, "amount": Fen(order.total_fee),
        "paid_at": order.paid_at, "status": STATUS_TEXT[template.event], **values,
    }
    data = {}
    for key, source in template.fields:
        kind = kind_of(key)
        assert kind is not None  # message_settings checked every key
        value = sources.get(source)
        if value is None:  # not expected; a placeholder of the kind rather than a failed send
            value = {"time": utcnow(), "date": utcnow(), "amount": Fen(0)}.get(kind, "-")
        data[key] = fit(kind, value)
    return data


def _give_back(user_id: int, template_id: str) -> None:
    db.session.execute(
        update(MessageCredit).where(MessageCredit.user_id == user_id, MessageCredit.template_id == template_id)
        .values(credits=MessageCredit.credits + 1, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )


def _after_commit(session) -> None:
    queued = session.info.pop(_QUEUED, None)
    if queued:
        session.info.setdefault(_READY, []).extend(queued)


def _after_transaction_end(session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_QUEUED, None)  # rolled back: those rows never existed


def install() -> None:
    """Hook the session once per process (db.session serves every app)."""
    if not event.contains(db.session, "after_commit", _after_commit):
        event.listen(db.session, "after_commit", _after_commit)
        event.listen(db.session, "after_transaction_end", _after_transaction_end)


# -- sending --------------------------------------------------------------------------------------------

def send_ready() -> None:
    """Send the messages whose transaction has committed. Never raises: reconcile picks up what is left."""
    ready = db.session.info.pop(_READY, None)
    for message_id in ready or ():
        deliver(message_id)


def deliver(message_id: int) -> str | None:
    """Claim one pending message, send it, record WeChat's answer; the state it ends in (None: not ours)."""
    try:
        claimed = _claim(message_id)
    except SQLAlchemyError as err:
        db.session.rollback()
        log.warning("message %s not claimed (%s); reconcile will send it", message_id, type(err).__name__)
        return None
    if claimed is None:
        return None
    body, out_trade_no = claimed
    try:
        with audit.for_order(out_trade_no):
            answer = wechat.access_token.call(lambda token: wechat.miniapp.send_subscribe_message(token, body))
    except WeChatError as err:
        return _record_failure(message_id, err)
    except Exception:  # noqa: BLE001 - a message must never break the payment that sent it
        log.exception("message %s for %s: unexpected error; it stays pending", message_id, out_trade_no)
        return MessageState.PENDING.value
    return _record(message_id, state=MessageState.SENT.value, sent_at=utcnow(), msgid=str(answer.get("msgid") or "")
                   [:32] or None, errcode=0, error=None)


def _claim(message_id: int) -> tuple[dict[str, Any], str] | None:
    db.session.commit()  # hold no transaction of the caller's while we talk to WeChat
    now = utcnow()
    taken = db.session.execute(
        update(SubscribeMessage).where(
            SubscribeMessage.id == message_id, SubscribeMessage.state == MessageState.PENDING.value,
            or_(SubscribeMessage.claimed_until.is_(None), SubscribeMessage.claimed_until < now))
        .values(claimed_until=now + LEASE, attempts=SubscribeMessage.attempts + 1),
        execution_options={"synchronize_session": False},
    ).rowcount
    if taken != 1:
        db.session.commit()
        return None
    row = db.session.execute(db.select(SubscribeMessage, Order.out_trade_no)
                             .join(Order, Order.id == SubscribeMessage.order_id)
                             .where(SubscribeMessage.id == message_id)).one()
    message, out_trade_no = row
    cfg = current_app.config
    body: dict[str, Any] = {"touser": message.touser, "template_id": message.template_id,
                            "data": {key: {"value": value} for key, value in json.loads(message.data).items()},
                            "miniprogram_state": cfg["WECHAT_MSG_STATE"], "lang": cfg["WECHAT_MSG_LANG"]}
    if message.page:
        body["page"] = message.page
    db.session.commit()
    return body, out_trade_no


def retryable(err: WeChatError) -> bool:
    """May the same message succeed later? No answer, WeChat busy, quotas, a token refused twice."""
    return err.should_retry or isinstance(err, InvalidCredential) or err.code in RETRYABLE_CODES


def _record_failure(message_id: int, err: WeChatError) -> str:
    code = err.code if isinstance(err.code, int) else None
    text = str(err)[:255]
    if retryable(err):
        message = db.session.get(SubscribeMessage, message_id)
        attempts = message.attempts if message is not None else 1
        delay = min(timedelta(minutes=1) * 2 ** max(attempts - 1, 0), MAX_BACKOFF)
        log.warning("message %s: WeChat did not take it (%s); retried in %ss", message_id, text,
                    int(delay.total_seconds()))
        return _record(message_id, state=MessageState.PENDING.value, errcode=code, error=text,
                       next_attempt_at=utcnow() + delay)
    log.warning("message %s refused by WeChat: %s", message_id, text)
    return _record(message_id, state=MessageState.REFUSED.value, errcode=code, error=text,
                   credit="zero" if code == NO_CREDIT else "give_back")


def _record(message_id: int, *, state: str, credit: str | None = None, **values: Any) -> str:
    """Write the outcome of the attempt we hold the lease of; with `credit`, fix our count of WeChat's."""
    try:
        db.session.rollback()
        moved = db.session.execute(
            update(SubscribeMessage).where(SubscribeMessage.id == message_id,
                                           SubscribeMessage.state == MessageState.PENDING.value)
            .values(state=state, claimed_until=None, **values),
            execution_options={"synchronize_session": False},
        ).rowcount
        if moved and credit:
            message = db.session.get(SubscribeMessage, message_id)
            assert message is not None
            if credit == "zero":
                db.session.execute(update(MessageCredit).where(MessageCredit.user_id == message.user_id,
                                                               MessageCredit.template_id == message.template_id)
                                   .values(credits=0, updated_at=utcnow()),
                                   execution_options={"synchronize_session": False})
            else:
                _give_back(message.user_id, message.template_id)
        db.session.commit()
    except SQLAlchemyError as err:
        db.session.rollback()
        log.warning("message %s: outcome %s not recorded (%s); the lease runs out and it is tried again",
                    message_id, state, type(err).__name__)
    return state


# -- the reconcile pass ---------------------------------------------------------------------------------

def due(now: datetime, limit: int) -> list[int]:
    """Pending messages whose time has come and that no sender holds."""
    ids = list(db.session.execute(
        db.select(SubscribeMessage.id).where(
            SubscribeMessage.state == MessageState.PENDING.value, SubscribeMessage.next_attempt_at <= now,
            or_(SubscribeMessage.claimed_until.is_(None), SubscribeMessage.claimed_until < now))
        .order_by(SubscribeMessage.next_attempt_at).limit(limit)).scalars())
    db.session.commit()
    return ids


def for_order(order_id: int) -> list[SubscribeMessage]:
    return list(db.session.execute(db.select(SubscribeMessage).filter_by(order_id=order_id)
                                   .order_by(SubscribeMessage.id)).scalars())
