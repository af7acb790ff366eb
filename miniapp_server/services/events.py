"""WeChat's message push: verified, replay-proof, acted on exactly once, every push recorded.

The events of order-shipping management (发货信息管理服务) that WeChat pushes:

- `trade_manage_order_settlement` comes twice in a trade's life: when shipping is complete, with
  an `estimated_settlement_time` (recorded, nothing else), and when the buyer confirmed receipt or
  the trade settled by itself, with `confirm_receive_time` / `settlement_time`: that one makes the
  order `completed` (`received_at`), once, in one transaction with a conditional UPDATE under the
  order's row lock, however often and however concurrently it comes. WeChat lets a buyer confirm only
  what was shipped at WeChat, so it comes for `shipped` orders, and for `paid` ones whose shipping was
  entered in WeChat's console rather than here (verdict `completed_unshipped`, for an operator).
  A refunding or refunded order keeps its state (`not_completable`).
- `trade_manage_remind_shipping`: an order paid long ago (48 h) is not shipped: flagged on the
  order (`shipping_reminded_at`, `flask orders list --needs-shipping`).
- `trade_manage_remind_access_api`: the mini-program should use the API: recorded and logged.
- Anything else is acknowledged and recorded.

Replays: a push's timestamp must be within PUSH_WINDOW of our clock, and its (timestamp, nonce) is
claimed in the store that every instance shares. The claim remembers the body's digest: the same
push again (WeChat retrying after a lost answer) is answered `success` and changes nothing; a
reused nonce with another body is refused; a claim is dropped when handling fails, so WeChat's retry
of a push we could not record is handled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from flask import current_app
from sqlalchemy import or_, update
from sqlalchemy.exc import OperationalError

from ..extensions import db, store
from ..models import Order, OrderStatus, Payment, PushEvent, utcnow
from ..sqlite_tuning import begin_write
from ..wechat import push
from ..wechat.push import PushCipher, PushRejected

log = logging.getLogger(__name__)

PUSH_WINDOW = 300  # seconds a push's timestamp may be off our clock (as for v3's notifications)
CLAIM_TTL = 2 * PUSH_WINDOW + 60  # a handled push's claim outlives the window: once it expires the push is stale
PENDING_TTL = 30  # a claim being handled: short, so that a worker that died mid-way does not block WeChat's retry
SUCCESS = "success"  # what WeChat wants once a push is handled

# Verdicts
COMPLETED = "completed"
COMPLETED_UNSHIPPED = "completed_unshipped"
DUPLICATE = "duplicate"
ESTIMATED = "settlement_estimated"
UNKNOWN_ORDER = "unknown_order"
OTHER_MERCHANT = "other_merchant"
MISMATCH = "transaction_mismatch"
NOT_COMPLETABLE = "not_completable"
REMINDED = "shipping_reminded"
ALREADY_SHIPPED = "already_shipped"
ACCESS_API = "access_api_reminder"
ACKNOWLEDGED = "acknowledged"
BAD_FIELDS = "bad_fields"

_now = time.time  # tests move the clock


@dataclass
class PushAnswer:
    """What the view answers (status, text or error) and what the audit trail records."""

    status: int
    verdict: str
    message: str = SUCCESS
    audit: dict[str, Any] = field(default_factory=dict)
    out_trade_no: str | None = None
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def _settings() -> tuple[str, PushCipher | None] | None:
    cfg = current_app.config
    token = cfg.get("WECHAT_PUSH_TOKEN") or ""
    if not token:
        return None
    key = cfg.get("WECHAT_PUSH_AES_KEY") or ""
    return token, (PushCipher(key, cfg["WECHAT_APPID"]) if key else None)


def _disabled(audit: dict[str, Any]) -> PushAnswer:
    return PushAnswer(403, "push_disabled", "message push is not configured here (WECHAT_PUSH_TOKEN)", audit)


def check_url(query: Mapping[str, str]) -> PushAnswer:
    """The console's URL check (GET): `echostr` back once `signature` verifies."""
    audit = {"query": dict(query)}
    settings = _settings()
    if settings is None:
        return _disabled(audit)
    try:
        echostr = push.check_url(query, settings[0])
    except PushRejected as err:
        log.warning("message-push URL check refused: %s", err.code)
        return PushAnswer(err.status, err.code, err.message, audit)
    return PushAnswer(200, "url_checked", echostr, audit)


def handle_push(query: Mapping[str, str], body: bytes) -> PushAnswer:
    """A POSTed push: 200 `success` once handled and committed; 4xx when refused; 503 to be retried."""
    db.session.rollback()  # start clean: nothing of this request's may ride along
    query = dict(query)
    settings = _settings()
    if settings is None:
        return _disabled({"query": query, "body_bytes": len(body)})
    try:
        opened = push.open_push(query, body, *settings)
    except PushRejected as err:
        log.warning("message push refused: %s", err.code)
        return PushAnswer(err.status, err.code, err.message, {"query": query, "claimed": _claims(body)})
    audit = {"query": query, "data_format": opened.data_format, "encrypted": opened.encrypted,
             "message": opened.fields}
    named = opened.fields.get("merchant_trade_no")  # verified: the audit files the push under its order
    named = named if isinstance(named, str) and 0 < len(named) <= 64 else None
    if opened.encrypted:
        audit["envelope"] = _claims(body)  # its Encrypt is recorded by size only
    if abs(_now() - opened.timestamp) > PUSH_WINDOW:
        log.warning("message push refused: timestamp %s is outside the window", opened.timestamp)
        return PushAnswer(403, "stale", f"the push's timestamp is more than {PUSH_WINDOW} s off", audit,
                          out_trade_no=named)
    claim_key = f"push:nonce:{opened.timestamp}:{opened.nonce}"
    digest = hashlib.sha256(body).hexdigest()
    try:
        claim = _claim(claim_key, digest)
    except Exception as exc:  # noqa: BLE001 - the store is down: WeChat retries, nothing is lost
        log.warning("message push not handled: the store is unavailable (%s)", type(exc).__name__)
        return PushAnswer(503, "store_unavailable", "the store is unavailable; try again", audit, retry_after=5)
    if claim == "done":
        try:
            _record(opened, DUPLICATE, "the same push again (same timestamp, nonce and body): nothing changed")
        except Exception as exc:  # noqa: BLE001 - it changed nothing either way
            db.session.rollback()
            log.warning("duplicate message push not recorded (%s)", type(exc).__name__)
        return PushAnswer(200, DUPLICATE, SUCCESS, audit, named)
    if claim == "busy":
        return PushAnswer(503, "in_progress", "the same push is being handled; try again", audit, retry_after=2)
    if claim == "reused":
        log.warning("message push refused: nonce reused with another body")
        return PushAnswer(403, "replayed", "this timestamp and nonce were used by another push", audit)
    try:
        verdict, out_trade_no = _act(opened)
    except _BadFields as err:
        db.session.rollback()
        _release(claim_key)
        try:
            _record(opened, BAD_FIELDS, str(err))
        except Exception:  # noqa: BLE001
            db.session.rollback()
        log.warning("message push refused: %s", err)
        return PushAnswer(400, BAD_FIELDS, str(err), audit, named)
    except Exception:  # noqa: BLE001 - the database failed us: WeChat retries, the claim is dropped for it
        db.session.rollback()
        _release(claim_key)
        log.exception("message push not handled; WeChat will retry")
        return PushAnswer(503, "try_again", "could not record the push; WeChat will retry", audit, retry_after=5)
    _done(claim_key, digest)
    return PushAnswer(200, verdict, SUCCESS, audit, out_trade_no or named)


def _claims(body: bytes) -> dict[str, Any]:
    """What a refused push claimed, for the audit (which redacts secrets and ciphertext)."""
    try:
        return push.parse_document(body)[1]
    except PushRejected:
        return {"unreadable_body_bytes": len(body)}


# -- replay defence ----------------------------------------------------------------------------------

def _claim(key: str, digest: str) -> str:
    if store.add(key, "pending:" + digest, ttl=PENDING_TTL):
        return "new"
    seen = store.get(key) or ""
    state, _, seen_digest = seen.partition(":")
    if seen_digest != digest:
        return "reused"
    return "done" if state == "done" else "busy"


def _done(key: str, digest: str) -> None:
    try:
        store.set(key, "done:" + digest, ttl=CLAIM_TTL)
    except Exception as exc:  # noqa: BLE001 - handled and committed; a replay would find the order as it is
        log.warning("message push handled, claim not marked done (%s)", type(exc).__name__)


def _release(key: str) -> None:
    try:
        store.delete(key)
    except Exception as exc:  # noqa: BLE001 - it expires by itself
        log.warning("message push claim not released (%s)", type(exc).__name__)


# -- the events --------------------------------------------------------------------------------------

class _BadFields(ValueError):
    """A verified push whose fields we cannot read: refused (400), recorded."""


def _act(opened: push.Push) -> tuple[str, str | None]:
    fields = opened.fields
    event = _note(fields, "Event", 64) if fields.get("MsgType") == "event" else ""
    if event == "trade_manage_order_settlement":
        return _settlement(opened)
    if event == "trade_manage_remind_shipping":
        return _remind_shipping(opened)
    if event == "trade_manage_remind_access_api":
        log.warning("WeChat asks this mini-program to upload shipping information through the API: %s",
                    _note(fields, "msg", 200) or "-")
        _record(opened, ACCESS_API, _note(fields, "msg", 255))
        return ACCESS_API, None
    _record(opened, ACKNOWLEDGED, None)
    return ACKNOWLEDGED, None


def _text(fields: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool) or len(str(value)) > limit:
        raise _BadFields(f"{name} is not a short string")
    return str(value)


def _note(fields: Mapping[str, Any], name: str, limit: int) -> str | None:
    """Free text (WeChat's `msg`), clipped; never a reason to refuse a push."""
    value = fields.get(name)
    return str(value)[:limit] if isinstance(value, (str, int)) and value != "" else None


def _epoch(fields: Mapping[str, Any], name: str) -> datetime | None:
    """WeChat's second-resolution Unix times (JSON numbers, XML text); 0 or absent means none."""
    value = fields.get(name)
    if value in (None, "", 0, "0"):
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise _BadFields(f"{name} is not a Unix time")
    seconds = int(value)
    if not 10 ** 9 <= seconds < 10 ** 10:
        raise _BadFields(f"{name} is not a Unix time in seconds")
    return datetime.fromtimestamp(seconds, timezone.utc)


def _order_keys(fields: Mapping[str, Any]) -> tuple[str | None, str | None]:
    no, txn = _text(fields, "merchant_trade_no", 64), _text(fields, "transaction_id", 32)
    if not no and not txn:
        raise _BadFields("the push names no order (merchant_trade_no or transaction_id)")
    return no, txn


def _find_order(no: str | None, txn: str | None, lock: bool) -> Order | None:
    query = db.select(Order)
    if no:
        query = query.where(Order.out_trade_no == no)
    else:
        paid_by = db.select(Payment.order_id).where(Payment.transaction_id == txn)
        query = query.where(or_(Order.transaction_id == txn, Order.id.in_(paid_by)))
    if lock:
        query = query.with_for_update()
    return db.session.execute(query).scalars().first()


def _ours(order: Order, txn: str | None) -> bool:
    """The transaction WeChat names is one of this order's (its own, or an anomalous second payment)."""
    if not txn or order.transaction_id == txn:
        return True
    return any(p.transaction_id == txn for p in order.payments)


def _settlement(opened: push.Push) -> tuple[str, str | None]:
    fields = opened.fields
    no, txn = _order_keys(fields)
    mch = _text(fields, "merchant_id", 32)
    confirmed, settled = _epoch(fields, "confirm_receive_time"), _epoch(fields, "settlement_time")
    estimated = _epoch(fields, "estimated_settlement_time")
    if mch and mch != current_app.config["WECHAT_MCH_ID"]:
        _record(opened, OTHER_MERCHANT, f"merchant_id {mch} is not ours", no, txn)
        return OTHER_MERCHANT, no
    received = confirmed or settled
    if received is None:
        # The push sent when shipping is complete: WeChat tells when it expects to settle. Nothing changes.
        detail = f"estimated settlement at {estimated.isoformat()}" if estimated else "no settlement times"
        _record(opened, ESTIMATED, detail, no, txn)
        return ESTIMATED, no
    how = "receipt confirmed" if confirmed else "settled"
    method = _note(fields, "confirm_receive_method", 4)
    detail = f"{how} at {received.isoformat()}" + (f" (confirm_receive_method {method})" if method else "")
    for attempt in range(5):
        try:
            verdict, order_no = _complete_once(opened, no, txn, received, detail)
            db.session.commit()
            log.info("settlement push for %s: %s", order_no or no or txn, verdict)
            return verdict, order_no or no
        except OperationalError:
            db.session.rollback()  # deadlock or lock timeout: try again
            if attempt == 4:
                raise
    raise RuntimeError("unreachable")


def _complete_once(opened: push.Push, no: str | None, txn: str | None, received: datetime,
                   detail: str) -> tuple[str, str | None]:
    begin_write(db.session)
    order = _find_order(no, txn, lock=True)
    if order is None:
        _add_event(opened, UNKNOWN_ORDER, detail, no, txn)
        return UNKNOWN_ORDER, None
    if not _ours(order, txn):
        _add_event(opened, MISMATCH, f"transaction {txn} is not order {order.out_trade_no}'s", no, txn)
        return MISMATCH, order.out_trade_no
    completable = (OrderStatus.SHIPPED.value, OrderStatus.PAID.value)
    was = order.status
    if was in completable:
        moved = db.session.execute(
            update(Order).where(Order.id == order.id, Order.status == was)
            .values(status=OrderStatus.COMPLETED.value, received_at=received, updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        ).rowcount
        if moved == 1:
            verdict = COMPLETED if was == OrderStatus.SHIPPED.value else COMPLETED_UNSHIPPED
            if verdict == COMPLETED_UNSHIPPED:
                log.warning("order %s completed by WeChat but never shipped here (shipped in WeChat's console?)",
                            order.out_trade_no)
            _add_event(opened, verdict, detail, order.out_trade_no, txn)
            db.session.expire(order)
            return verdict, order.out_trade_no
        db.session.refresh(order)
    if order.status == OrderStatus.COMPLETED.value:
        _add_event(opened, DUPLICATE, detail, order.out_trade_no, txn)
        return DUPLICATE, order.out_trade_no
    _add_event(opened, NOT_COMPLETABLE, f"{detail}; the order is {order.status} and keeps that state",
               order.out_trade_no, txn)
    log.warning("settlement push for %s, which is %s: recorded, nothing changed", order.out_trade_no, order.status)
    return NOT_COMPLETABLE, order.out_trade_no


def _remind_shipping(opened: push.Push) -> tuple[str, str | None]:
    fields = opened.fields
    no, txn = _order_keys(fields)
    at = _epoch(fields, "CreateTime") or utcnow()
    begin_write(db.session)
    order = _find_order(no, txn, lock=True)
    if order is None:
        _record(opened, UNKNOWN_ORDER, _note(fields, "msg", 255), no, txn)
        return UNKNOWN_ORDER, None
    moved = db.session.execute(
        update(Order).where(Order.id == order.id, Order.status == OrderStatus.PAID.value)
        .values(shipping_reminded_at=at, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    ).rowcount
    verdict = REMINDED if moved == 1 else ALREADY_SHIPPED
    if moved == 1:
        log.warning("WeChat reminds: order %s is paid and not shipped (%s)", order.out_trade_no,
                    _note(fields, "msg", 200) or "-")
    _add_event(opened, verdict, _note(fields, "msg", 255) if moved == 1 else f"the order is {order.status}",
               order.out_trade_no, txn)
    db.session.commit()
    return verdict, order.out_trade_no


def _add_event(opened: push.Push, verdict: str, detail: str | None, no: str | None = None,
               txn: str | None = None) -> None:
    fields = opened.fields
    event = fields.get("Event") if fields.get("MsgType") == "event" else fields.get("MsgType")
    db.session.add(PushEvent(
        event=str(event or "unknown")[:64], out_trade_no=no, transaction_id=txn, verdict=verdict,
        detail=(detail or None) and detail[:255], data_format=opened.data_format, encrypted=opened.encrypted,
        message=json.dumps(fields, ensure_ascii=False, default=str)[:8000],
    ))


def _record(opened: push.Push, verdict: str, detail: str | None, no: str | None = None,
            txn: str | None = None) -> None:
    """A push's row on its own (no order changes with it)."""
    if no is None and txn is None:
        try:
            no, txn = _text(opened.fields, "merchant_trade_no", 64), _text(opened.fields, "transaction_id", 32)
        except _BadFields:
            no = txn = None
    _add_event(opened, verdict, detail, no, txn)
    db.session.commit()


def events_for(out_trade_no: str) -> list[PushEvent]:
    return list(db.session.execute(
        db.select(PushEvent).filter_by(out_trade_no=out_trade_no).order_by(PushEvent.id)).scalars())
