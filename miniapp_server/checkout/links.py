"""Signed links to one order's checkout page, QR image and status.

The token is itsdangerous' timestamped signature (HMAC with SECRET_KEY) over the order number: it
cannot be guessed or moved to another order, and it stops working after CHECKOUT_LINK_TTL seconds.
One token serves the page and everything the page fetches, so nothing else needs a login.
"""

from __future__ import annotations

import hmac

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer

from ..models import Order
from ..public_urls import public_url
from ..services import native

SALT = "checkout.native.v1"  # a token for this purpose is useless for any other use of SECRET_KEY
DEFAULT_TTL = 24 * 3600  # a day: long enough for a desk, short enough that an old link dies


def link_ttl() -> int:
    return int(current_app.config.get("CHECKOUT_LINK_TTL", DEFAULT_TTL))


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def sign(out_trade_no: str) -> str:
    return _serializer().dumps(out_trade_no)


def verify(out_trade_no: str, token: str | None) -> bool:
    """True only for an unexpired token made by `sign` for this very order."""
    if not token or len(token) > 256:
        return False
    try:
        value = _serializer().loads(token, max_age=link_ttl())
    except BadData:
        return False
    return isinstance(value, str) and hmac.compare_digest(value.encode(), out_trade_no.encode())


def checkout_url(out_trade_no: str, token: str | None = None) -> str:
    return public_url("checkout.native_page", out_trade_no=out_trade_no, sig=token or sign(out_trade_no))


def qrcode_url(order: Order, token: str | None = None, fmt: str | None = None) -> str | None:
    """The QR image's URL for the order's current code; `v` changes with the code, so caches never mix codes."""
    if not order.code_url:
        return None
    args = {"format": fmt} if fmt else {}
    return public_url("checkout.native_qr", out_trade_no=order.out_trade_no, sig=token or sign(order.out_trade_no),
                      v=native.code_version(order.code_url), **args)
