"""WeChat's side: the payment and refund notifications, each recorded in the audit trail."""

import time

from flask import Response, request

from .. import audit
from ..services.notifications import handle_payment_notification
from ..services.refund_notifications import handle_refund_notification
from ..wechat.pay import xmlcodec
from ..wechat.pay.client import ack
from ..wechat.pay.xmlcodec import MAX_BODY
from . import bp


def _body() -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return b"x" * (MAX_BODY + 1)  # refuse without reading a huge body; still recorded
    return request.stream.read(MAX_BODY + 1)


def _fields(body: bytes) -> dict:
    try:
        return xmlcodec.loads(body)
    except xmlcodec.XMLError:
        return {"unreadable_body_bytes": len(body)}


@bp.post("/notify")
def notify():
    started = time.perf_counter()
    body = _body()
    ok, message = handle_payment_notification(body, request.remote_addr)
    audit.incoming(request.path, _fields(body), ok, message, time.perf_counter() - started)
    return Response(ack(ok, message), status=200, mimetype="text/xml")


@bp.post("/refund-notify")
def refund_notify():
    started = time.perf_counter()
    body = _body()
    ok, message, fields = handle_refund_notification(body, request.remote_addr)
    audit.incoming(request.path, fields, ok, message, time.perf_counter() - started)
    return Response(ack(ok, message), status=200, mimetype="text/xml")
