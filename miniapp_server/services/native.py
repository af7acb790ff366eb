"""NATIVE (scan-to-pay): one WeChat trade per order, its QR code, and renewing an expired code.

How renewal works, and why this way
-----------------------------------
WeChat gives a NATIVE trade a `code_url` that can be scanned for two hours (like a prepay_id), while
the trade itself stays open until its `time_expire`. We send the order's own deadline as
`time_expire`, the same value every time (see `payments.prepay`), so a repeated unified order for an
order is identical to the first one. WeChat then answers:

- while the code is still valid: the *same* prepay_id and code_url (nothing is renewed, and
  `prepay` keeps the old expiry rather than believing it was extended);
- once the code has expired but the trade is still open: a fresh prepay_id and code_url for the
  *same* trade (same out_trade_no). The old code cannot be scanned any more.

So renewing is asking unified order again for the same out_trade_no; there is never a second
out_trade_no, so there are never two payable trades for one order: WeChat refuses to take a second
payment for a trade it has already been paid for (ORDERPAID). We do not close the trade to renew,
because WeChat refuses any unified order for a closed out_trade_no (ORDERCLOSED): closing is for the
end of an order's life. When an unpaid order is past its own deadline there is nothing to renew:
`start` closes the trade at WeChat (`services.closing`, which learns a last-moment payment instead of
closing) and answers 409.

The other design, a new out_trade_no per payment attempt (closing the previous one each time), needs
a table of attempts per order, i.e. a schema change, and buys nothing here: the order's deadline is
far shorter than WeChat's 2-hour code anyway unless ORDER_TTL is raised.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from datetime import datetime, timedelta

import qrcode
from flask import current_app
from qrcode.image.pure import PyPNGImage
from qrcode.image.svg import SvgPathFillImage

from ..errors import not_found
from ..extensions import db, store
from ..models import Order, OrderStatus, utcnow
from ..wechat.errors import WeChatError
from ..wechat.ipaddr import clean_ip
from . import closing, payments

log = logging.getLogger(__name__)

TRADE_TYPE = "NATIVE"
QR_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
QR_BOX_PX = 8  # pixels per module in the PNG: ~300 px for a typical code, sharp on a desk screen
QR_BORDER = 4  # the quiet zone the QR standard asks for
# A notification normally lands within seconds of the scan. If an unpaid code has been shown longer
# than this, the status check asks WeChat now and then (order query), in case a notification was lost.
DEFAULT_QUERY_INTERVAL = 30


def find_order(out_trade_no: str) -> Order:
    """Any order by its number; callers must have checked the caller may see it (a signed link)."""
    if not out_trade_no or len(out_trade_no) > 32:
        raise not_found("no such order")
    order = db.session.execute(db.select(Order).filter_by(out_trade_no=out_trade_no)).scalar_one_or_none()
    if order is None:
        raise not_found("no such order")
    return order


def product_id_for(order: Order) -> str:
    # WeChat requires a product_id for NATIVE; the first line's product is stable for the order's life,
    # which keeps a repeated unified order identical.
    return str(order.items[0].product_id) if order.items else order.out_trade_no


def start(order: Order, *, notify_url: str, client_ip: str) -> Order:
    """The order with a scannable code_url: the current one while valid, else a fresh one for the same trade."""
    if order.status == OrderStatus.UNPAID.value and order.expires_at <= utcnow():
        order = closing.close_order(order)  # past its deadline: make sure nobody can still pay it
        payments.ensure_payable(order)  # says closed (or paid, if WeChat had it paid at the last moment)
    # Reuse the first call's client IP so the repeated unified order stays identical to the first.
    return payments.prepay(order, trade_type=TRADE_TYPE, notify_url=notify_url,
                           client_ip=clean_ip(order.client_ip) or client_ip, product_id=product_id_for(order))


def live_code(order: Order, now: datetime | None = None) -> str | None:
    """The order's code_url if it can be scanned now, else None."""
    now = now or utcnow()
    if order.status != OrderStatus.UNPAID.value or order.trade_type != TRADE_TYPE or not order.code_url:
        return None
    if order.prepay_expires_at is None or order.prepay_expires_at <= now:
        return None
    return order.code_url


def code_version(code_url: str) -> str:
    """A short stable name for one code_url, for cache keys, ETags and image URLs."""
    return hashlib.sha256(code_url.encode("utf-8")).hexdigest()[:16]


def render_qr(code_url: str, fmt: str) -> bytes:
    if fmt not in QR_TYPES:
        raise ValueError("fmt must be png or svg")
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=QR_BOX_PX, border=QR_BORDER)
    qr.add_data(code_url)
    qr.make(fit=True)
    factory = PyPNGImage if fmt == "png" else SvgPathFillImage
    buf = io.BytesIO()
    qr.make_image(image_factory=factory).save(buf)
    return buf.getvalue()


def qr_image(code_url: str, fmt: str, valid_for: timedelta) -> bytes:
    """The QR image for `code_url`, rendered once and kept in the store while the code is valid."""
    key = f"native:qr:{fmt}:{hashlib.sha256(code_url.encode('utf-8')).hexdigest()}"
    cached = store.get(key)
    if cached is not None:
        return base64.b64decode(cached)
    image = render_qr(code_url, fmt)
    ttl = max(1.0, min(valid_for.total_seconds(), 7200.0))
    store.set(key, base64.b64encode(image).decode("ascii"), ttl=ttl)
    return image


def refresh(order: Order) -> Order:
    """The order as a checkout page should show it.

    An unpaid NATIVE order whose code has been up for a while is checked with WeChat's order query,
    at most once per interval per order across all workers, so a lost notification still turns the
    page to paid.
    """
    if order.status != OrderStatus.UNPAID.value or order.trade_type != TRADE_TYPE or not order.prepay_id:
        return order
    interval = int(current_app.config.get("NATIVE_QUERY_INTERVAL", DEFAULT_QUERY_INTERVAL))
    if interval <= 0 or utcnow() - order.updated_at < timedelta(seconds=interval):
        return order
    if not store.add(f"native:query:{order.out_trade_no}", "1", ttl=interval):
        return order  # another poll asked recently
    try:
        return payments.sync_order(order)
    except WeChatError as err:  # the page just keeps polling; the notification may still come
        log.warning("order query for %s failed: %s", order.out_trade_no, err.code)
        return db.session.get(Order, order.id)  # type: ignore[return-value]
