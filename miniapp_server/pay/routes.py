"""WeChat's side: the payment notification."""

from flask import Response, request

from ..services.notifications import handle_payment_notification
from ..wechat.pay.client import ack
from ..wechat.pay.xmlcodec import MAX_BODY
from . import bp


@bp.post("/notify")
def notify():
    if request.content_length is not None and request.content_length > MAX_BODY:
        body = b"x" * (MAX_BODY + 1)  # refuse without reading a huge body; still recorded below
    else:
        body = request.stream.read(MAX_BODY + 1)
    ok, message = handle_payment_notification(body, request.remote_addr)
    return Response(ack(ok, message), status=200, mimetype="text/xml")
