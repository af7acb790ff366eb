"""APP payments: a prepay for trade_type=APP, and the parameters the app's SDK (PayReq) takes.

The app's own success callback proves nothing; as for JSAPI, only WeChat's notification or
order query makes the order paid.
"""

from __future__ import annotations

from ..extensions import wechat
from ..models import Order
from . import payments

TRADE_TYPE = "APP"


def start(order: Order, *, notify_url: str, client_ip: str) -> dict[str, str]:
    """`{appid, partnerid, prepayid, package=Sign=WXPay, noncestr, timestamp, sign}` for this order."""
    order = payments.prepay(order, trade_type=TRADE_TYPE, notify_url=notify_url, client_ip=client_ip)
    assert order.prepay_id
    return wechat.gateway.app_params(order.prepay_id)
