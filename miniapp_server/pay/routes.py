"""WeChat's side: the payment and refund notifications, each recorded in the audit trail.

The same URLs take API v2 (signed XML, answered with XML) and v3 (JSON signed in `Wechatpay-*`
headers, answered 204, or 4xx/5xx with `{"code": "FAIL", "message"}`).
"""

import time

from flask import Response, request

from .. import audit
from ..services.notifications import handle_payment_notification
from ..services.refund_notifications import handle_refund_notification
from ..wechat.pay.gateway import V2, V3, is_signature_probe, is_v3_notification, notification_answer
from ..wechat.pay.xmlcodec import MAX_BODY
from . import bp


def _body() -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return b"x" * (MAX_BODY + 1)  # refuse without reading a huge body; still recorded
    return request.stream.read(MAX_BODY + 1)


def _answer(ok: bool, message: str) -> Response:
    answer = notification_answer(V3 if is_v3_notification(request.headers) else V2, ok, message,
                                 probe=is_signature_probe(request.headers))
    return Response(answer.body, status=answer.status, mimetype=answer.mimetype)


@bp.post("/notify")
def notify():
    started = time.perf_counter()
    body = _body()
    ok, message, fields = handle_payment_notification(body, request.remote_addr, headers=request.headers)
    # The fields the service read (v3's body is ciphertext: its decrypted fields), parsed once.
    audit.incoming(request.path, fields, ok, message, time.perf_counter() - started)
    return _answer(ok, message)


@bp.post("/refund-notify")
def refund_notify():
    started = time.perf_counter()
    body = _body()
    ok, message, fields = handle_refund_notification(body, request.remote_addr, headers=request.headers)
    audit.incoming(request.path, fields, ok, message, time.perf_counter() - started)
    return _answer(ok, message)
