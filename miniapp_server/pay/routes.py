"""WeChat's side: the payment and refund notifications, each recorded in the audit trail.

The same URLs take API v2 (signed XML, answered with XML) and v3 (JSON signed in `Wechatpay-*`
headers, answered 204, or 4xx/5xx with `{"code": "FAIL", "message"}`).
"""

import logging
import time

from flask import Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import audit
from ..errors import too_large
from ..extensions import db
from ..services.notifications import handle_payment_notification
from ..services.refund_notifications import handle_refund_notification
from ..wechat.pay.gateway import V2, V3, is_signature_probe, is_v3_notification, notification_answer
from ..wechat.pay.xmlcodec import MAX_BODY
from . import bp

log = logging.getLogger(__name__)


def _limit() -> int:
    return min(MAX_BODY, current_app.config.get("MAX_CONTENT_LENGTH") or MAX_BODY)


def _body() -> bytes:
    """The body, or `limit + 1` bytes standing for one too large (refused unread, and still recorded)."""
    limit = _limit()
    if request.content_length is not None and request.content_length > limit:
        return b"x" * (limit + 1)
    try:
        return request.stream.read(limit + 1)
    except RequestEntityTooLarge:  # a chunked body past the app's limit
        return b"x" * (limit + 1)


def _answer(ok: bool, message: str, status: int | None = None) -> Response:
    answer = notification_answer(V3 if is_v3_notification(request.headers) else V2, ok, message,
                                 probe=is_signature_probe(request.headers))
    return Response(answer.body, status=status or answer.status, mimetype=answer.mimetype)


def _reply(body: bytes, ok: bool, message: str) -> Response:
    response = _answer(ok, message, 413 if len(body) > _limit() else None)
    return too_large(response) if response.status_code == 413 else response


@bp.errorhandler(Exception)
def _fail_in_wechat_format(err: Exception):
    """Whatever fails behind the notify URLs (the database down or read-only, the store, a bug), WeChat
    gets its own format: v2 FAIL XML, v3 a 5xx with {"code": "FAIL"}. It retries; nothing was acknowledged."""
    if isinstance(err, HTTPException) and err.code and err.code < 500:
        return _answer(False, err.description or err.name, err.code)
    log.exception("notification on %s not recorded: %s", request.path, type(err).__name__)
    db.session.rollback()
    return _answer(False, "not recorded, try again later", 503)


@bp.post("/notify")
def notify():
    started = time.perf_counter()
    body = _body()
    try:
        # Its audit row (the fields the service read: v3's decrypted ones) is committed with the outcome.
        ok, message, _ = handle_payment_notification(body, request.remote_addr, headers=request.headers,
                                                     path=request.path, started=started)
    except Exception as exc:
        # No outcome was committed (WeChat will retry); that it came, and how it failed, is still recorded.
        audit.incoming(request.path, {"body_bytes": len(body)}, False, f"error: {type(exc).__name__}",
                       time.perf_counter() - started)
        raise
    return _reply(body, ok, message)


@bp.post("/refund-notify")
def refund_notify():
    started = time.perf_counter()
    body = _body()
    ok, message, fields = handle_refund_notification(body, request.remote_addr, headers=request.headers)
    audit.incoming(request.path, fields, ok, message, time.perf_counter() - started)
    return _reply(body, ok, message)
