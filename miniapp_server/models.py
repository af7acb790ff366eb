"""The whole product's data, in SQLAlchemy 2's typed style. Money is always integer fen."""

from __future__ import annotations

import enum
import secrets
from datetime import date, datetime, timezone
from typing import Any, Iterable

from flask import current_app, has_app_context
from sqlalchemy import (CheckConstraint, Date, DateTime, ForeignKey, Index, Integer, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

MAX_ID = 2**31 - 1  # ids are INTEGER columns (int4 on PostgreSQL): a client's id beyond is no id of ours


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every back end (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given; use aware UTC times")
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class OrderStatus(str, enum.Enum):
    UNPAID = "unpaid"
    PAID = "paid"
    SHIPPED = "shipped"  # an operator shipped it (all of it, for split shipping)
    COMPLETED = "completed"  # WeChat says the buyer confirmed receipt or the trade settled
    CLOSED = "closed"
    REFUNDING = "refunding"
    REFUNDED = "refunded"


class Anomaly(str, enum.Enum):
    """Payments WeChat's guides say need an operator (and usually a refund)."""

    AMOUNT_MISMATCH = "amount_mismatch"
    PAID_AFTER_CLOSE = "paid_after_close"
    DOUBLE_PAYMENT = "double_payment"


def new_out_trade_no() -> str:
    """32 characters: the UTC date for humans, then 96 random bits so that nobody can guess one."""
    return utcnow().strftime("%Y%m%d") + secrets.token_hex(12)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    openid: Mapped[str] = mapped_column(String(64), unique=True)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    orders: Mapped[list["Order"]] = relationship(back_populates="user")

    def to_dict(self) -> dict:
        return {"id": self.id, "openid": self.openid, "has_phone": bool(self.phone),
                "created_at": self.created_at.isoformat()}


class Product(db.Model):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("price_fen > 0", name="price_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    price_fen: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "price_fen": self.price_fen}


class Order(db.Model):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total_fee > 0", name="total_positive"),
        CheckConstraint("status IN ('unpaid', 'paid', 'shipped', 'completed', 'closed', 'refunding', 'refunded')",
                        name="status_known"),
        Index("ix_orders_user_created", "user_id", "created_at"),
        Index("ix_orders_status_created", "status", "created_at"),
        Index("ix_orders_status_expires", "status", "expires_at"),  # reconcile: unpaid orders past their time
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    out_trade_no: Mapped[str] = mapped_column(String(32), unique=True, default=new_out_trade_no)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.UNPAID.value)
    total_fee: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(String(128))
    trade_type: Mapped[str | None] = mapped_column(String(16))
    prepay_id: Mapped[str | None] = mapped_column(String(64))
    prepay_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_url: Mapped[str | None] = mapped_column(String(256))
    transaction_id: Mapped[str | None] = mapped_column(String(32), index=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when everything was shipped
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # WeChat: receipt confirmed / trade settled
    # WeChat's trade_manage_remind_shipping: paid long ago and still not shipped (`orders list --needs-shipping`).
    shipping_reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    refunded_fee: Mapped[int] = mapped_column(Integer, default=0)
    anomaly: Mapped[str | None] = mapped_column(String(32), index=True)
    anomaly_detail: Mapped[str | None] = mapped_column(String(255))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    # The id of the request that opened the trade at WeChat, sent as `attach` on every unified order for
    # it (so a renewal stays identical) and echoed by WeChat in the notification: it follows the payment.
    pay_request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="orders")
    items: Mapped[list["OrderItem"]] = relationship(back_populates="order", cascade="all, delete-orphan",
                                                    order_by="OrderItem.id")
    payments: Mapped[list["Payment"]] = relationship(back_populates="order", order_by="Payment.id")
    refunds: Mapped[list["Refund"]] = relationship(back_populates="order", order_by="Refund.id")
    shipments: Mapped[list["Shipment"]] = relationship(back_populates="order",
                                                       order_by="[Shipment.upload_no, Shipment.package_no]")

    @property
    def current_shipments(self) -> list["Shipment"]:
        """The packages as they stand (a change of shipping information replaces the earlier ones)."""
        return [s for s in self.shipments if not s.superseded]

    def confirm_receipt(self) -> dict | None:
        """What the mini-program gives `wx.openBusinessView({businessType: 'weappOrderConfirm', extraData})`."""
        return confirm_receipt_of(self)

    def to_dict(self) -> dict:
        return order_dict(self, self.items, self.current_shipments)


def order_dict(order: Any, items: Iterable[Any], shipments: Iterable[Any] = ()) -> dict:
    """What the API shows of an order: from an `Order`, or from a row of its columns (a path that writes
    with Core and builds no ORM objects), with its lines (`OrderItem`s or rows) and current shipments."""
    return {
        "out_trade_no": order.out_trade_no,
        "status": order.status,
        "total_fee": order.total_fee,
        "body": order.body,
        "trade_type": order.trade_type,
        "items": [item_dict(item) for item in items],
        "created_at": order.created_at.isoformat(),
        "expires_at": order.expires_at.isoformat(),
        "paid_at": order.paid_at.isoformat() if order.paid_at else None,
        "closed_at": order.closed_at.isoformat() if order.closed_at else None,
        "transaction_id": order.transaction_id,
        "refunded_fee": order.refunded_fee,
        "shipped_at": order.shipped_at.isoformat() if order.shipped_at else None,
        "received_at": order.received_at.isoformat() if order.received_at else None,
        "shipments": [shipment_dict(s) for s in shipments],
        "confirm_receipt": confirm_receipt_of(order),
    }


def confirm_receipt_of(order: Any) -> dict | None:
    """What the mini-program gives `wx.openBusinessView({businessType: 'weappOrderConfirm', extraData})`."""
    if not order.transaction_id:
        return None
    mch_id = current_app.config.get("WECHAT_MCH_ID") if has_app_context() else None
    return {"merchant_id": mch_id, "merchant_trade_no": order.out_trade_no, "transaction_id": order.transaction_id}


def shipment_dict(shipment: Any) -> dict:
    """What the buyer sees of a package (the contract's shape): no upload state, no contacts."""
    return {"logistics_type": shipment.logistics_type, "express_company": shipment.express_company,
            "tracking_no": shipment.tracking_no, "item_desc": shipment.item_desc}


def item_dict(item: Any) -> dict:
    return {"product_id": item.product_id, "name": item.name, "unit_price_fen": item.unit_price_fen,
            "quantity": item.quantity, "subtotal_fen": item.unit_price_fen * item.quantity}


class OrderItem(db.Model):
    __tablename__ = "order_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))  # copied: renaming a product later does not rewrite history
    unit_price_fen: Mapped[int] = mapped_column(Integer)  # copied at purchase time
    quantity: Mapped[int] = mapped_column(Integer)

    order: Mapped[Order] = relationship(back_populates="items")

    @property
    def subtotal_fen(self) -> int:
        return self.unit_price_fen * self.quantity

    def to_dict(self) -> dict:
        return item_dict(self)


class Payment(db.Model):
    """One WeChat transaction that paid (or tried to pay) an order; a second one is a double payment."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    transaction_id: Mapped[str] = mapped_column(String(32), unique=True)
    total_fee: Mapped[int] = mapped_column(Integer)
    time_end: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)  # a day's payments: bill checks
    source: Mapped[str] = mapped_column(String(16))  # notify | query | bill
    # Who paid, as WeChat's notification or query names them: for NATIVE and APP payments not always the
    # order's owner, and what WeChat's shipping upload wants as `payer.openid`.
    payer_openid: Mapped[str | None] = mapped_column(String(128))
    anomaly: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    order: Mapped[Order] = relationship(back_populates="payments")

    def to_dict(self) -> dict:
        return {"transaction_id": self.transaction_id, "total_fee": self.total_fee, "source": self.source,
                "anomaly": self.anomaly, "time_end": self.time_end.isoformat() if self.time_end else None}


class PaymentNotification(db.Model):
    """Every payment notification received, with what we made of it."""

    __tablename__ = "payment_notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16), default="payment")  # payment | refund
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    total_fee: Mapped[int | None] = mapped_column(Integer)
    result_code: Mapped[str | None] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(255))
    remote_addr: Mapped[str | None] = mapped_column(String(45))
    body_size: Mapped[int] = mapped_column(Integer, default=0)

    def to_dict(self) -> dict:
        return {"received_at": self.received_at.isoformat(), "kind": self.kind, "out_trade_no": self.out_trade_no,
                "transaction_id": self.transaction_id, "total_fee": self.total_fee,
                "result_code": self.result_code, "verdict": self.verdict, "detail": self.detail}


class RefundStatus(str, enum.Enum):
    PENDING = "pending"  # stored, WeChat has not (knowingly) accepted it: resubmit with the same out_refund_no
    PROCESSING = "processing"  # WeChat accepted it; its notification (or a refund query) settles it
    SUCCESS = "success"
    FAILED = "failed"  # WeChat refused or closed it; its amount is free again


class Refund(db.Model):
    """One refund of one WeChat transaction (the order's own payment or an anomalous one)."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("refund_fee > 0", name="refund_positive"),
        CheckConstraint("status IN ('pending', 'processing', 'success', 'failed')", name="status_known"),
        Index("ix_refunds_status_created", "status", "created_at"),  # reconcile: refunds left unsettled
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    out_refund_no: Mapped[str] = mapped_column(String(64), unique=True)
    refund_id: Mapped[str | None] = mapped_column(String(32))
    transaction_id: Mapped[str | None] = mapped_column(String(32), index=True)
    refund_fee: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=RefundStatus.PENDING.value)
    reason: Mapped[str | None] = mapped_column(String(80))
    failure: Mapped[str | None] = mapped_column(String(128))  # WeChat's err_code or refund_status when it failed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    order: Mapped[Order] = relationship(back_populates="refunds")

    def to_dict(self) -> dict:
        return {"out_refund_no": self.out_refund_no, "refund_id": self.refund_id, "refund_fee": self.refund_fee,
                "transaction_id": self.transaction_id, "status": self.status, "reason": self.reason,
                "failure": self.failure, "created_at": self.created_at.isoformat(),
                "succeeded_at": self.succeeded_at.isoformat() if self.succeeded_at else None}


class LogisticsType(str, enum.Enum):
    """WeChat's `logistics_type`: 1 express, 2 same-city delivery, 3 virtual goods, 4 picked up by the buyer."""

    EXPRESS = "express"
    SAME_CITY = "same_city"
    VIRTUAL = "virtual"
    PICKUP = "pickup"


class UploadState(str, enum.Enum):
    PENDING = "pending"  # stored; WeChat has not (knowingly) accepted it: tried again by reconcile
    UPLOADED = "uploaded"  # WeChat accepted it
    FAILED = "failed"  # WeChat refused it in a way retrying cannot fix: an operator must act


class Shipment(db.Model):
    """One package of an order, and the state of its upload to WeChat's order-shipping management.

    One `flask orders ship` is one upload (`upload_no`) of one or more packages (`package_no`);
    every package of an upload shares its state, attempts and WeChat's answer.
    """

    __tablename__ = "shipments"
    __table_args__ = (
        CheckConstraint("logistics_type IN ('express', 'same_city', 'virtual', 'pickup')", name="logistics_known"),
        CheckConstraint("upload_state IN ('pending', 'uploaded', 'failed')", name="upload_state_known"),
        CheckConstraint("delivery_mode IN (1, 2)", name="delivery_mode_known"),
        UniqueConstraint("order_id", "upload_no", "package_no", name="uq_shipments_package"),
        Index("ix_shipments_state_created", "upload_state", "created_at"),  # reconcile: uploads left pending
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    upload_no: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per order
    package_no: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per upload
    logistics_type: Mapped[str] = mapped_column(String(16))
    delivery_mode: Mapped[int] = mapped_column(Integer, default=1)  # 1 unified, 2 split
    is_all_delivered: Mapped[bool] = mapped_column(default=True)
    is_change: Mapped[bool] = mapped_column(default=False)  # re-ships what WeChat already accepted (once per order)
    superseded: Mapped[bool] = mapped_column(default=False)  # replaced by a later upload
    express_company: Mapped[str | None] = mapped_column(String(32))
    tracking_no: Mapped[str | None] = mapped_column(String(128))
    item_desc: Mapped[str] = mapped_column(String(120))
    receiver_contact: Mapped[str | None] = mapped_column(String(32))  # masked, as WeChat wants it
    consignor_contact: Mapped[str | None] = mapped_column(String(32))  # masked
    upload_state: Mapped[str] = mapped_column(String(16), default=UploadState.PENDING.value)
    upload_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # sent as is on every attempt
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    errcode: Mapped[int | None] = mapped_column(Integer)  # WeChat's last errcode, if it answered one
    errmsg: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(String(255))  # what went wrong last, in our words
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    order: Mapped[Order] = relationship(back_populates="shipments")

    def to_dict(self) -> dict:
        return shipment_dict(self)

    def operator_dict(self) -> dict:
        return {**self.to_dict(), "upload_no": self.upload_no, "package_no": self.package_no,
                "delivery_mode": self.delivery_mode, "is_all_delivered": self.is_all_delivered,
                "is_change": self.is_change, "superseded": self.superseded,
                "receiver_contact": self.receiver_contact, "consignor_contact": self.consignor_contact,
                "upload_state": self.upload_state, "attempts": self.attempts, "errcode": self.errcode,
                "errmsg": self.errmsg, "last_error": self.last_error,
                "upload_time": self.upload_time.isoformat() if self.upload_time else None,
                "uploaded_at": self.uploaded_at.isoformat() if self.uploaded_at else None,
                "created_at": self.created_at.isoformat() if self.created_at else None}


class WeChatExchange(db.Model):
    """The audit trail: every call to WeChat and every callback from it, secrets redacted."""

    __tablename__ = "wechat_exchanges"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    direction: Mapped[str] = mapped_column(String(8))  # out | in
    path: Mapped[str] = mapped_column(String(128))
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(64))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)  # follows a payment from /pay on
    request: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict:
        return {"at": self.at.isoformat(), "direction": self.direction, "path": self.path,
                "out_trade_no": self.out_trade_no, "outcome": self.outcome, "duration_ms": self.duration_ms,
                "request_id": self.request_id, "request": self.request, "response": self.response}


class MessageCredit(db.Model):
    """How many messages of one template a person has allowed us (one per accept in wx.requestSubscribeMessage).

    Our own bookkeeping of WeChat's count, which WeChat does not let us read: +1 per accept the
    mini-program reports, -1 per message queued, 0 again when WeChat answers 43101 (it has none).
    """

    __tablename__ = "message_credits"
    __table_args__ = (
        UniqueConstraint("user_id", "template_id"),
        CheckConstraint("credits >= 0", name="credits_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    template_id: Mapped[str] = mapped_column(String(64))
    credits: Mapped[int] = mapped_column(Integer, default=0)
    last_choice: Mapped[str | None] = mapped_column(String(8))  # accept | reject, as last reported
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageState(str, enum.Enum):
    PENDING = "pending"  # queued with the state change; sent right after its commit, else by reconcile
    SENT = "sent"
    REFUSED = "refused"  # WeChat refused it for good (43101 no credit, 40003, 40037, 47003, ...): never retried


class SubscribeMessage(db.Model):
    """One subscribe message to an order's owner: written with the state change it tells of, then sent."""

    __tablename__ = "subscribe_messages"
    __table_args__ = (
        # Exactly once per event (per refund, for `refunded`) per order per template.
        UniqueConstraint("order_id", "event", "event_ref", "template_id"),
        CheckConstraint("state IN ('pending', 'sent', 'refused')", name="state_known"),
        Index("ix_subscribe_messages_state_next", "state", "next_attempt_at"),  # reconcile: what is due
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    event: Mapped[str] = mapped_column(String(16))  # paid | shipped | refunded
    event_ref: Mapped[str] = mapped_column(String(64), default="")  # the refund's out_refund_no; "" if one per order
    template_id: Mapped[str] = mapped_column(String(64))
    touser: Mapped[str] = mapped_column(String(64))  # the order owner's openid, and nobody else's
    page: Mapped[str | None] = mapped_column(String(256))
    data: Mapped[str] = mapped_column(Text)  # JSON: {key: value}, already within WeChat's limits
    state: Mapped[str] = mapped_column(String(16), default=MessageState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a sender holds it until then
    errcode: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(255))
    msgid: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict:
        return {"event": self.event, "event_ref": self.event_ref or None, "template_id": self.template_id,
                "state": self.state, "attempts": self.attempts, "created_at": self.created_at.isoformat(),
                "sent_at": self.sent_at.isoformat() if self.sent_at else None, "errcode": self.errcode,
                "error": self.error, "msgid": self.msgid}


class BillCheckStatus(str, enum.Enum):
    RUNNING = "running"
    CLEAN = "clean"  # the bill and our ledger agree
    DISCREPANCIES = "discrepancies"  # see its bill_discrepancies
    NO_BILL = "no_bill"  # WeChat has no bill for that day: nothing was paid or refunded
    FAILED = "failed"  # WeChat failed, was unreachable, or the file was unreadable: checked again later


class BillCheck(db.Model):
    """One check of one of WeChat's daily bills (trade or fund flow) against our ledger."""

    __tablename__ = "bill_checks"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'clean', 'discrepancies', 'no_bill', 'failed')", name="status_known"),
        Index("ix_bill_checks_date_type", "bill_date", "bill_type"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bill_date: Mapped[date] = mapped_column(Date)  # the China-time day the bill covers
    bill_type: Mapped[str] = mapped_column(String(16))  # trade | fundflow
    api: Mapped[str] = mapped_column(String(4))  # v2 | v3
    trigger: Mapped[str] = mapped_column(String(16), default="cli")  # cli | reconcile
    status: Mapped[str] = mapped_column(String(16), default=BillCheckStatus.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lines: Mapped[int] = mapped_column(Integer, default=0)  # data lines in the bill
    payments: Mapped[int] = mapped_column(Integer, default=0)  # payment lines (trade) / income lines (fund flow)
    refunds: Mapped[int] = mapped_column(Integer, default=0)  # refund lines (trade) / expense lines (fund flow)
    paid_fen: Mapped[int] = mapped_column(Integer, default=0)
    refunded_fen: Mapped[int] = mapped_column(Integer, default=0)
    fee_fen: Mapped[int] = mapped_column(Integer, default=0)
    ours_paid_fen: Mapped[int] = mapped_column(Integer, default=0)  # our ledger's payments of that day
    ours_refunded_fen: Mapped[int] = mapped_column(Integer, default=0)  # ... and successful refunds
    applied: Mapped[int] = mapped_column(Integer, default=0)  # missed payments applied from the bill
    discrepancy_count: Mapped[int] = mapped_column(Integer, default=0)  # all found (rows kept: at most a limit)
    error: Mapped[str | None] = mapped_column(String(255))

    discrepancies: Mapped[list["BillDiscrepancy"]] = relationship(back_populates="check",
                                                                  order_by="BillDiscrepancy.id")

    def to_dict(self, with_discrepancies: bool = True) -> dict:
        data = {"id": self.id, "bill_date": self.bill_date.isoformat(), "bill_type": self.bill_type, "api": self.api,
                "trigger": self.trigger, "status": self.status, "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None, "lines": self.lines,
                "payments": self.payments, "refunds": self.refunds, "paid_fen": self.paid_fen,
                "refunded_fen": self.refunded_fen, "fee_fen": self.fee_fen, "ours_paid_fen": self.ours_paid_fen,
                "ours_refunded_fen": self.ours_refunded_fen, "applied": self.applied,
                "discrepancy_count": self.discrepancy_count, "error": self.error}
        if with_discrepancies:
            data["discrepancies"] = [d.to_dict() for d in self.discrepancies]
        return data


class BillDiscrepancy(db.Model):
    """One way the bill and our ledger disagree (docs/bills.md says what each kind means and what to do)."""

    __tablename__ = "bill_discrepancies"

    id: Mapped[int] = mapped_column(primary_key=True)
    check_id: Mapped[int] = mapped_column(ForeignKey("bill_checks.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(32))
    out_refund_no: Mapped[str | None] = mapped_column(String(64))
    bill_fen: Mapped[int | None] = mapped_column(Integer)  # what WeChat's bill says
    ours_fen: Mapped[int | None] = mapped_column(Integer)  # what our ledger says
    detail: Mapped[str | None] = mapped_column(String(255))

    check: Mapped[BillCheck] = relationship(back_populates="discrepancies")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "out_trade_no": self.out_trade_no, "transaction_id": self.transaction_id,
                "out_refund_no": self.out_refund_no, "bill_fen": self.bill_fen, "ours_fen": self.ours_fen,
                "detail": self.detail}


class PushEvent(db.Model):
    """Every message push (POST /api/wechat/events) that verified, and what we made of it.

    Pushes that did not verify are only in the audit trail (`wechat_exchanges`, direction in).
    """

    __tablename__ = "wechat_push_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(64))  # the Event, or the MsgType of a message that is no event
    out_trade_no: Mapped[str | None] = mapped_column(String(64), index=True)  # merchant_trade_no
    transaction_id: Mapped[str | None] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(255))
    data_format: Mapped[str] = mapped_column(String(8))  # json | xml
    encrypted: Mapped[bool] = mapped_column(default=False)  # safe mode
    message: Mapped[str | None] = mapped_column(Text)  # the message's fields (JSON), as WeChat sent them

    def to_dict(self) -> dict:
        return {"received_at": self.received_at.isoformat(), "event": self.event, "out_trade_no": self.out_trade_no,
                "transaction_id": self.transaction_id, "verdict": self.verdict, "detail": self.detail,
                "data_format": self.data_format, "encrypted": self.encrypted}
