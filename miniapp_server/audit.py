"""The audit trail: every exchange with WeChat, both ways, in `wechat_exchanges`, secrets redacted.

Outgoing calls arrive through the clients' `on_exchange` hooks (wired in
`integrations.py`); incoming notifications are recorded by their services, in the
transaction that applies them (`record_in_transaction`).

An audit row must never break the caller's transaction, nor be lost with it. So a row
rides along with the caller's next commit, inside a SAVEPOINT of its own on PostgreSQL
(a failing audit insert rolls back to it, is logged, and the caller's commit goes on;
SQLite keeps its transaction after a failed statement by itself); if the
caller's transaction rolls back instead, the row is written on a connection of its own
right after (a rolled-back payment is still an exchange that happened). Within a request
a row recorded between transactions (an outgoing call, made with no transaction open)
waits for the request's next commit, or for its end; outside a request it is written at
once. One INSERT in a transaction that exists anyway, instead of a pool checkout, a
BEGIN and a COMMIT of its own per row (bench/README.md). On SQLite that also means no
second connection ever waits on the write lock that the caller's own connection holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Iterator, Mapping

from flask import Flask, current_app, has_app_context, has_request_context
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from . import fast_sql, metrics
from .extensions import db
from .logging_setup import current_request_id, valid_request_id
from .models import WeChatExchange, utcnow

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
MAX_TEXT = 8000
_PENDING = "miniapp.audit_pending"
# The order a call is about when its own fields do not say (a subscribe message names only its openid).
_ORDER: ContextVar[str | None] = ContextVar("audit_order", default=None)
_AFTER = "miniapp.audit_after_commit"
_INSERT = insert(WeChatExchange.__table__)  # built once: one a request on the hot paths

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
    metrics.wechat_exchange(path, outcome, seconds)
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
    _incoming(path, fields, acknowledged, message, seconds, conditional=False)


def record_in_transaction(path: str, fields: Mapping[str, Any] | None, acknowledged: bool, message: str,
                          seconds: float) -> None:
    """Like `incoming`, for a service about to commit what it answers: the row is part of that commit,
    and goes if the transaction rolls back (then the answer is an error, recorded by `incoming`)."""
    _incoming(path, fields, acknowledged, message, seconds, conditional=True)


def _incoming(path: str, fields: Mapping[str, Any] | None, acknowledged: bool, message: str, seconds: float,
              conditional: bool) -> None:
    metrics.notification(path, acknowledged, message)  # one count per exchange, kept or rolled back
    fields = fields or {}
    rid = request_id_from_attach(fields.get("attach")) or current_request_id()
    answer = {"return_code": "SUCCESS" if acknowledged else "FAIL", "return_msg": message}
    record("in", path, fields, answer, f"{answer['return_code']}:{message}", seconds,
           out_trade_no=fields.get("out_trade_no"), request_id=rid, conditional=conditional)


def record(direction: str, path: str, request: Any, response: Any, outcome: str, seconds: float,
           out_trade_no: Any = None, request_id: str | None = None, conditional: bool = False) -> None:
    try:
        if not has_app_context():
            return  # a client used from a plain script: nothing to record into
        row = {
            "at": utcnow() - timedelta(seconds=seconds), "direction": direction, "path": str(path)[:128],
            "out_trade_no": str(out_trade_no)[:64] if out_trade_no else None, "outcome": str(outcome)[:64],
            "duration_ms": int(round(seconds * 1000)), "request_id": (request_id or current_request_id()),
            "request": _dump(request), "response": _dump(response),
        }
        _enqueue(db.engine, row, conditional)
    except Exception as exc:  # noqa: BLE001 - the audit is never a reason for a payment to fail
        log.warning("audit row for %s not recorded (%s)", path, type(exc).__name__)


def _enqueue(engine: Engine, row: dict[str, Any], conditional: bool = False) -> None:
    session = db.session()
    if session.in_transaction() or has_request_context():
        session.info.setdefault(_PENDING, []).append((engine, row, conditional))
    elif not conditional:
        _write(engine, [row])


def _write(engine: Engine, rows: list[dict[str, Any]]) -> None:
    started = time.perf_counter()
    try:
        with engine.begin() as conn:
            conn.execute(_INSERT, rows[0] if len(rows) == 1 else rows)
    except Exception as exc:  # noqa: BLE001
        log.warning("audit rows not written after %.0fms (%s)", (time.perf_counter() - started) * 1000,
                    type(exc).__name__)


def _write_each(pending: list[tuple[Engine, dict[str, Any], bool]]) -> None:
    """Rows on connections of their own, one transaction per engine."""
    by_engine: dict[int, tuple[Engine, list[dict[str, Any]]]] = {}
    for engine, row, _ in pending:
        by_engine.setdefault(id(engine), (engine, []))[1].append(row)
    for engine, rows in by_engine.values():
        _write(engine, rows)


def _before_commit(session) -> None:
    """The rows waiting on this session join its commit, in a savepoint that a failing insert rolls back."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    bind = session.get_bind()
    mine = [row for engine, row, _ in pending if engine is bind]
    others = [entry for entry in pending if entry[0] is not bind and not entry[2]]
    if mine:
        _insert_beside(session.connection(), mine)
    if others:
        session.info[_AFTER] = others


def _insert_beside(conn, rows: list[dict[str, Any]]) -> None:
    """Insert audit rows into the caller's transaction such that a failing insert leaves it as it was.

    SQLite backs out only the failed statement and keeps the transaction. PostgreSQL aborts the whole
    transaction on any error, so there the rows go inside a savepoint, issued as plain SQL without
    SQLAlchemy's nested-transaction bookkeeping (`begin_nested()` and its commit, round trips included,
    were 11% of a notification's CPU in-process; bench/README.md). On psycopg the statements go to the
    driver directly (fast_sql.py). Not in a psycopg pipeline, though it saves two round trips: a
    pipeline waits for the server by polling a socket that is always writable, and under gunicorn that
    spin was 11% of a notification.
    """
    started = time.perf_counter()
    savepoint = conn.dialect.name != "sqlite"
    try:
        if savepoint:
            fast_sql.plain(conn, "SAVEPOINT audit_rows")
        for row in rows:
            fast_sql.execute(conn, _INSERT, row)
        if savepoint:
            fast_sql.plain(conn, "RELEASE SAVEPOINT audit_rows")
    except Exception as exc:  # noqa: BLE001 - the caller's commit goes on without them
        if savepoint:
            fast_sql.plain(conn, "ROLLBACK TO SAVEPOINT audit_rows")
        log.warning("audit rows not written after %.0fms (%s)", (time.perf_counter() - started) * 1000,
                    type(exc).__name__)


def _after_commit(session) -> None:
    others = session.info.pop(_AFTER, None)
    if others:
        _write_each(others)


def _after_transaction_end(session, transaction) -> None:
    if transaction.parent is not None or transaction.nested:  # a savepoint: the caller's transaction goes on
        return
    pending = session.info.get(_PENDING)
    if not pending:
        return
    # Rolled back (a commit would have taken them): what happened is written anyway; what was to be
    # part of the commit goes with it.
    session.info.pop(_PENDING)
    _write_each([entry for entry in pending if not entry[2]])


def flush_pending() -> None:
    """At the end of a request: rows still waiting (no commit came after them) are written on their own."""
    session = db.session()
    if session.in_transaction():
        return  # the session's close rolls it back: _after_transaction_end writes them
    pending = session.info.pop(_PENDING, None)
    if pending:
        _write_each([entry for entry in pending if not entry[2]])


def install(app: Flask | None = None) -> None:
    """Hook the session once per process (db.session serves every app), and each app's request end."""
    for name, fn in (("before_commit", _before_commit), ("after_commit", _after_commit),
                     ("after_transaction_end", _after_transaction_end)):
        if not event.contains(db.session, name, fn):
            event.listen(db.session, name, fn)
    if app is not None:
        app.teardown_request(lambda _exc: flush_pending())


def exchanges_for(out_trade_no: str, limit: int = 50) -> list[WeChatExchange]:
    return list(db.session.execute(
        db.select(WeChatExchange).filter_by(out_trade_no=out_trade_no).order_by(WeChatExchange.at, WeChatExchange.id)
        .limit(limit)).scalars())
