"""What is waiting: the queues reconcile and the outboxes work through, counted for /metrics.

One COUNT per queue on indexed columns, run when Prometheus scrapes (every 15-60 s), never per request.
"""

from __future__ import annotations

from sqlalchemy import func

from ..extensions import db
from ..models import (MessageState, Order, OrderStatus, Refund, RefundStatus, Shipment, SubscribeMessage,
                      UploadState, utcnow)


def counts() -> dict[str, int]:
    now = utcnow()

    def count(model, *where) -> int:
        return int(db.session.execute(db.select(func.count()).select_from(model).where(*where)).scalar_one())

    try:
        return {
            # unpaid past their deadline: reconcile closes them at WeChat, then here
            "orders_overdue": count(Order, Order.status == OrderStatus.UNPAID.value, Order.expires_at < now),
            # refunds WeChat has not settled: pending (not yet accepted) and processing (awaiting its result)
            "refunds_pending": count(Refund, Refund.status == RefundStatus.PENDING.value),
            "refunds_processing": count(Refund, Refund.status == RefundStatus.PROCESSING.value),
            "messages_pending": count(SubscribeMessage, SubscribeMessage.state == MessageState.PENDING.value),
            # packages whose upload to WeChat's order-shipping management is not taken yet (reconcile retries),
            # and those WeChat refused for good (an operator must act)
            "shipments_pending": count(Shipment, Shipment.upload_state == UploadState.PENDING.value),
            "shipments_failed": count(Shipment, Shipment.upload_state == UploadState.FAILED.value),
        }
    finally:
        db.session.rollback()
