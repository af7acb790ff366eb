"""The audit trail: every exchange with WeChat, both ways, in `wechat_exchanges`, secrets redacted.

Outgoing calls arrive through the clients' `on_exchange` hooks (wired in
`integrations.py`); incoming notifications are recorded by their views.

An audit row must never join, break or wait on the caller's transaction. So it
is written on a connection of its own, in a short transaction of its own, and
only when the caller's session holds no transaction: on SQLite there is one
write lock per database, and writing on a second connection while the caller's
write transaction holds it would wait (then fail) on a lock that the waiting
thread itself holds. When the caller is inside a transaction, the row waits in
`session.info` and is written as soon as that transaction ends (commit or
rollback: a rolled-back payment is still an exchange that happened).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Iterator, Mapping

from flask import current_app, has_app_context
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from .extensions import db
from .logging_setup import current_request_id, valid_request_id
from .models import WeChatExchange, utcnow

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
MAX_TEXT = 8000
_PENDING = "miniapp.audit_pending"
# The order a call is about when its own fields do not say (a subscribe message names only its openid).
_ORDER: ContextVar[str | None] = ContextVar("audit_order", default=None)

# Field names whose values never reach the trail (compared lower-cased).
SECRET_FIELDS = frozenset({
    "sign", "paysign", "key", "api_key", "pay_key", "secret", "appsecret", "session_key", "access_token",
    "refresh_token", "token", "js_code", "code", "encrypteddata", "iv", "password",
    "phonenumber", "purephonenumber",  # personal data rather than secrets: not ours to keep in a log
    "signature", "msg_signature", "msgsignature", "echostr",  # the message push's signatures and challenge
})
# Ciphertext is recorded by its size only; its decrypted fields are recorded instead.
CIPHERTEXT_FIELDS = frozenset({"req_info", "encrypt"})
SECRET_SUFFIXES = ("_key", "_secret", "_token", "sign")


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_FIELDS or lowered.endswith(SECRET_SUFFIXES)


def redact(fields: Any) -> Any:
    """A copy of `fields` with every secret value replaced; nested objects too."""
    if isinstance(fields, Mapping):
        out: dict[str, Any] = {}
        for name, value in fields.items():
            if _is_secret(str(name)):
                out[str(name)] = REDACTED
            elif str(name).lower() in CIPHERTEXT_FIELDS:
                out[str(name)] = f"[encrypted, {len(str(value))} chars]"
            else:
                out[str(name)] = redact(value)
        return out
    if isinstance(fields, (list, tuple)):
        return [redact(v) for v in fields]
    return fields


def _dump(fields: Any) -> str | None:
    if fields is None:
        return None
    text = json.dumps(redact(fields), ensure_ascii=False, sort_keys=True, default=str)
    # Belt and braces: a configured secret that turns up under an unexpected name.
    for name in ("WECHAT_PAY_KEY", "WECHAT_PAY_V3_KEY", "WECHAT_APPSECRET", "SECRET_KEY", "WECHAT_PUSH_TOKEN",
                 "WECHAT_PUSH_AES_KEY"):
        secret = current_app.config.get(name) or ""
        if len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    return text[:MAX_TEXT]


# -- request ids that follow a payment ---------------------------------------------------------------

ATTACH_PREFIX = "rid="


def attach_for_request() -> str | None:
    """WeChat's `attach` for a unified order: the request id, which WeChat echoes in the notification."""
    rid = current_request_id()
    return ATTACH_PREFIX + rid if rid else None


def request_id_from_attach(attach: str | None) -> str | None:
    if attach and attach.startswith(ATTACH_PREFIX):
        rid = attach[len(ATTACH_PREFIX):]
        return rid if valid_request_id(rid) else None
    return None


# -- recording ---------------------------------------------------------------------------------------

def outgoing(path: str, request: Mapping[str, Any], answer: Mapping[str, Any] | None, outcome: str,
             seconds: float) -> None:
    """The clients' `on_exchange` hook. Never raises: the audit must not break a payment."""
    key = request.get("order_key") if isinstance(request.get("order_key"), Mapping) else {}
    no = request.get("out_trade_no") or key.get("out_trade_no") or request.get("merchant_trade_no") \
        or (answer or {}).get("out_trade_no") or _ORDER.get()
    record("out", path, request, answer, outcome, seconds, out_trade_no=no)


@contextlib.contextmanager
def for_order(out_trade_no: str | None) -> Iterator[None]:
    """Calls to WeChat made inside this block are filed under `out_trade_no` in the trail."""
    reset = _ORDER.set(out_trade_no)
    try:
        yield
    finally:
        _ORDER.reset(reset)


def incoming(path: str, fields: Mapping[str, Any] | None, acknowledged: bool, message: str, seconds: float) -> None:
    """A notification from WeChat and what we answered; the row carries the paying request's id."""
    fields = fields or {}
    rid = request_id_from_attach(fields.get("attach")) or current_request_id()
    answer = {"return_code": "SUCCESS" if acknowledged else "FAIL", "return_msg": message}
    record("in", path, fields, answer, f"{answer['return_code']}:{message}", seconds,
           out_trade_no=fields.get("out_trade_no"), request_id=rid)


def record(direction: str, path: str, request: Any, response: Any, outcome: str, seconds: float,
           out_trade_no: Any = None, request_id: str | None = None) -> None:
    try:
        if not has_app_context():
            return  # a client used from a plain script: nothing to record into
        row = {
            "at": utcnow() - timedelta(seconds=seconds), "direction": direction, "path": str(path)[:128],
            "out_trade_no": str(out_trade_no)[:64] if out_trade_no else None, "outcome": str(outcome)[:64],
            "duration_ms": int(round(seconds * 1000)), "request_id": (request_id or current_request_id()),
            "request": _dump(request), "response": _dump(response),
        }
        _enqueue(db.engine, row)
    except Exception as exc:  # noqa: BLE001 - the audit is never a reason for a payment to fail
        log.warning("audit row for %s not recorded (%s)", path, type(exc).__name__)


def _enqueue(engine: Engine, row: dict[str, Any]) -> None:
    session = db.session()
    if session.in_transaction():
        session.info.setdefault(_PENDING, []).append((engine, row))
    else:
        _write(engine, [row])


def _write(engine: Engine, rows: list[dict[str, Any]]) -> None:
    started = time.perf_counter()
    try:
        with engine.begin() as conn:
            conn.execute(insert(WeChatExchange), rows)
    except Exception as exc:  # noqa: BLE001
        log.warning("audit rows not written after %.0fms (%s)", (time.perf_counter() - started) * 1000,
                    type(exc).__name__)


def _after_transaction_end(session, transaction) -> None:
    if transaction.parent is not None:  # a savepoint: the caller's transaction goes on
        return
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    by_engine: dict[int, tuple[Engine, list[dict[str, Any]]]] = {}
    for engine, row in pending:
        by_engine.setdefault(id(engine), (engine, []))[1].append(row)
    for engine, rows in by_engine.values():
        _write(engine, rows)


def install() -> None:
    """Hook the session once per process (db.session serves every app)."""
    if not event.contains(db.session, "after_transaction_end", _after_transaction_end):
        event.listen(db.session, "after_transaction_end", _after_transaction_end)


def exchanges_for(out_trade_no: str, limit: int = 50) -> list[WeChatExchange]:
    return list(db.session.execute(
        db.select(WeChatExchange).filter_by(out_trade_no=out_trade_no).order_by(WeChatExchange.at, WeChatExchange.id)
        .limit(limit)).scalars())
