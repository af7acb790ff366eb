"""What `flask shell` opens with: the database, the models, `select`, and order helpers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from . import models
from .extensions import db
from .models import (Order, OrderItem, OrderStatus, Payment, PaymentNotification, Product, Refund, RefundStatus,
                     Shipment, UploadState, User, WeChatExchange, utcnow)


def find_order(out_trade_no: str) -> Order | None:
    """The order with this out_trade_no, or None."""
    return db.session.execute(select(Order).filter_by(out_trade_no=out_trade_no)).scalar_one_or_none()


def user_orders(user: int | str, limit: int = 20) -> list[Order]:
    """A user's newest orders, by user id or openid."""
    query = select(Order).join(User).order_by(Order.created_at.desc()).limit(limit)
    query = query.where(User.id == user) if isinstance(user, int) else query.where(User.openid == user)
    return list(db.session.execute(query).scalars())


def recent_anomalies(days: int = 7) -> list[Order]:
    """Orders flagged for an operator in the last `days` days."""
    since = utcnow() - timedelta(days=days)
    return list(db.session.execute(
        select(Order).where(Order.anomaly.is_not(None), Order.updated_at >= since).order_by(Order.updated_at.desc())
    ).scalars())


def exchanges(out_trade_no: str) -> list[WeChatExchange]:
    """The audit trail of one order: every call to WeChat about it and every notification, in order."""
    from .audit import exchanges_for

    return exchanges_for(out_trade_no)


def shipments(out_trade_no: str) -> list[dict]:
    """An order's shipments with their upload state (WeChat's errcode and errmsg when it refused one)."""
    order = find_order(out_trade_no)
    return [s.operator_dict() for s in order.shipments] if order else []


def pending_shipments(limit: int = 50) -> list[Shipment]:
    """Shipments whose upload WeChat has not accepted yet (pending) or refused (failed), oldest first."""
    return list(db.session.execute(
        select(Shipment).where(Shipment.upload_state != UploadState.UPLOADED.value, Shipment.superseded.is_(False))
        .order_by(Shipment.created_at).limit(limit)).scalars())


def shell_context() -> dict:
    from .services.reconcile import reconcile
    from .services.refunds import refund_order
    from .services.shipping import ship_order

    return {
        "db": db, "select": select, "models": models,
        "User": User, "Product": Product, "Order": Order, "OrderItem": OrderItem, "Payment": Payment,
        "PaymentNotification": PaymentNotification, "Refund": Refund, "WeChatExchange": WeChatExchange,
        "OrderStatus": OrderStatus, "RefundStatus": RefundStatus,
        "find_order": find_order, "user_orders": user_orders, "recent_anomalies": recent_anomalies,
        "exchanges": exchanges, "refund_order": refund_order, "reconcile": reconcile,
        "Shipment": Shipment, "UploadState": UploadState, "ship_order": ship_order, "shipments": shipments,
        "pending_shipments": pending_shipments,
    }
