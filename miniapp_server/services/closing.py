"""Closing unpaid orders: at WeChat first (so nobody can pay them any more), then here."""

from __future__ import annotations

from ..errors import conflict
from ..extensions import db, wechat
from ..models import Order, OrderStatus
from ..wechat.errors import PayError
from . import payments


def close_order(order: Order) -> Order:
    if order.status != OrderStatus.UNPAID.value:
        raise conflict(f"order_{order.status}", f"only unpaid orders can be closed; this one is {order.status}")
    order_id = order.id
    if order.prepay_id:
        db.session.commit()
        try:
            wechat.gateway.close(order.out_trade_no)
        except PayError as err:
            if err.code == "ORDERPAID":  # paid at the last moment: learn it instead of closing
                return payments.sync_order(order)
            if err.code not in ("ORDERNOTEXIST", "ORDERCLOSED"):
                raise
    payments.mark_closed(order_id)
    fresh = db.session.get(Order, order_id)
    db.session.refresh(fresh)
    return fresh  # type: ignore[return-value]
