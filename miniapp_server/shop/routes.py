"""The mini-program's shop API: products, orders, and paying for them."""

from flask import g

from ..auth.guard import login_required
from ..http_utils import client_address, int_arg, json_body
from ..public_urls import notify_url
from ..services import app_pay, native, orders, payments
from . import bp


@bp.get("/products")
def products():
    return {"items": [p.to_dict() for p in orders.list_products()]}


@bp.post("/orders")
@login_required
def create_order():
    return orders.create_order(g.session.user_id, json_body().get("items")), 201


@bp.get("/orders")
@login_required
def list_orders():
    page = int_arg("page", 1, 1, 10_000)
    per_page = int_arg("per_page", 10, 1, 50)
    return orders.list_own_orders(g.session.user_id, page, per_page)


@bp.get("/orders/<out_trade_no>")
@login_required
def get_order(out_trade_no: str):
    return orders.own_order_view(g.session.user_id, out_trade_no)


@bp.post("/orders/<out_trade_no>/pay")
@login_required
def pay(out_trade_no: str):
    order = orders.get_own_order(g.session.user_id, out_trade_no)
    order = payments.prepay(order, trade_type="JSAPI", openid=g.session.openid, notify_url=notify_url(),
                            client_ip=client_address())
    return payments.jsapi_params(order)


@bp.post("/orders/<out_trade_no>/native")
@login_required
def native_pay(out_trade_no: str):
    from ..checkout import links  # the checkout blueprint signs the links to the QR image and page

    order = orders.get_own_order(g.session.user_id, out_trade_no)
    order = native.start(order, notify_url=notify_url(), client_ip=client_address())
    token = links.sign(order.out_trade_no)
    return {"code_url": order.code_url, "qrcode_url": links.qrcode_url(order, token),
            "checkout_url": links.checkout_url(order.out_trade_no, token),
            "expires_at": order.prepay_expires_at.isoformat() if order.prepay_expires_at else None}


@bp.post("/orders/<out_trade_no>/app-pay")
@login_required
def app_pay_params(out_trade_no: str):
    order = orders.get_own_order(g.session.user_id, out_trade_no)
    return app_pay.start(order, notify_url=notify_url(), client_ip=client_address())


@bp.post("/orders/<out_trade_no>/sync")
@login_required
def sync(out_trade_no: str):
    order = orders.get_own_order(g.session.user_id, out_trade_no)
    return payments.sync_order(order).to_dict()
