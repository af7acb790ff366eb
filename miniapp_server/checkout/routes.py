"""`/pay/native/<no>?sig=...`: the checkout page, its QR image, its status and its renewal.

Thin views: the signed link is checked here, everything else is `services.native`. Status is polled
(a small JSON every few seconds) rather than pushed with server-sent events, because an open SSE
stream would hold one of gunicorn's few worker threads for as long as the page is open.
"""

from __future__ import annotations

from datetime import datetime

from flask import Response, current_app, make_response, render_template, request, url_for

from ..errors import ApiError, bad_request, not_found
from ..models import Order, OrderStatus, utcnow
from ..services import native
from ..http_utils import client_address
from ..public_urls import notify_url
from . import bp, links

PAID_STATES = {OrderStatus.PAID.value, OrderStatus.REFUNDING.value, OrderStatus.REFUNDED.value}
DEFAULT_POLL_MS = 2000

# The page runs only its own script and talks only to its own origin; the token in its URL must not
# leak to anyone through a Referer header.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


@bp.app_template_filter("yuan")
def yuan(fen: int) -> str:
    """Integer fen as yuan with two decimals, without ever going through a float."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def _seconds_until(when: datetime | None, now: datetime) -> int:
    return max(0, int((when - now).total_seconds())) if when else 0


def page_state(order: Order, token: str) -> dict:
    """What the page shows and polls: this order's status and its live code, nothing else."""
    now = utcnow()
    code_url = native.live_code(order, now)
    code = None
    if code_url:
        code = {"version": native.code_version(code_url), "qrcode_url": links.qrcode_url(order, token),
                "expires_in": _seconds_until(order.prepay_expires_at, now),
                "expires_at": order.prepay_expires_at.isoformat() if order.prepay_expires_at else None}
    return {
        "out_trade_no": order.out_trade_no,
        "status": order.status,
        "paid": order.status in PAID_STATES,
        "trade_type": order.trade_type,
        "total_fee": order.total_fee,
        "code": code,
        "order_expires_in": _seconds_until(order.expires_at, now),
        "paid_at": order.paid_at.isoformat() if order.paid_at else None,
    }


def _signed_order(out_trade_no: str) -> tuple[Order, str]:
    """The order the link names, if the link is genuine and unexpired; else a plain 404."""
    token = request.args.get("sig", "")
    if not links.verify(out_trade_no, token):
        raise not_found("no such checkout link, or it has expired")
    return native.find_order(out_trade_no), token


def _with_headers(response: Response, headers: dict[str, str]) -> Response:
    for name, value in headers.items():
        response.headers[name] = value
    return response


@bp.get("/native/<out_trade_no>")
def native_page(out_trade_no: str):
    try:
        order, token = _signed_order(out_trade_no)
    except ApiError:
        # Same page whether the order exists or not: a link tells nothing about other orders.
        page = render_template("checkout/invalid.html")
        return _with_headers(make_response(page, 404), PAGE_HEADERS)
    order = native.refresh(order)
    page = render_template("checkout/native.html", order=order, state=page_state(order, token),
                           status_url=_endpoint_url("checkout.native_status", order, token),
                           renew_url=_endpoint_url("checkout.native_renew", order, token),
                           poll_ms=int(current_app.config.get("CHECKOUT_POLL_MS", DEFAULT_POLL_MS)))
    return _with_headers(make_response(page), PAGE_HEADERS)


def _endpoint_url(endpoint: str, order: Order, token: str) -> str:
    return url_for(endpoint, out_trade_no=order.out_trade_no, sig=token)


@bp.get("/native/<out_trade_no>/status")
def native_status(out_trade_no: str):
    order, token = _signed_order(out_trade_no)
    order = native.refresh(order)
    return _with_headers(make_response(page_state(order, token)), {"Cache-Control": "no-store"})


@bp.post("/native/<out_trade_no>/renew")
def native_renew(out_trade_no: str):
    """A scannable code for the order: the same one while valid, a fresh one for the same trade once expired."""
    order, token = _signed_order(out_trade_no)
    order = native.start(order, notify_url=notify_url(), client_ip=client_address())
    return _with_headers(make_response(page_state(order, token)), {"Cache-Control": "no-store"})


def _wanted_format() -> str:
    fmt = request.args.get("format")
    if fmt is not None:  # given, even empty: it must name a format
        fmt = fmt.lower()
        if fmt not in native.QR_TYPES:
            raise bad_request("invalid_format", "format must be png or svg")
        return fmt
    # PNG unless the client prefers SVG outright (browsers' <img> Accept rates both alike).
    accept = request.accept_mimetypes
    return "svg" if accept.quality("image/svg+xml") > accept.quality("image/png") else "png"


@bp.get("/native/<out_trade_no>/qr")
def native_qr(out_trade_no: str):
    order, _ = _signed_order(out_trade_no)
    fmt = _wanted_format()
    now = utcnow()
    code_url = native.live_code(order, now)
    if code_url is None:
        raise ApiError(404, "no_live_code", "this order has no scannable code now; renew it from the checkout page")
    assert order.prepay_expires_at is not None
    valid_for = order.prepay_expires_at - now
    version = native.code_version(code_url)
    response = make_response(native.qr_image(code_url, fmt, valid_for))
    response.mimetype = native.QR_TYPES[fmt]
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Vary"] = "Accept"
    response.set_etag(f"{version}.{fmt}")
    if request.args.get("v") == version:
        # This URL names this very code: cache it for as long as the code lives.
        response.headers["Cache-Control"] = f"private, max-age={max(0, int(valid_for.total_seconds()))}"
    else:
        response.headers["Cache-Control"] = "private, no-cache"
    return response.make_conditional(request)
