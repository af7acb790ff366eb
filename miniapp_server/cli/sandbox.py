"""`flask sandbox`: the emulator's own process, and a demo of the whole journey."""

from __future__ import annotations

import os
import sys
import time
import uuid

import click
import requests
from flask import current_app
from flask.cli import AppGroup

from .. import devserver

sandbox = AppGroup("sandbox", help="The built-in WeChat emulator.")


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5100, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the emulator as a process of its own (development server; use gunicorn for load)."""
    from werkzeug.serving import run_simple

    from ..sandbox.standalone import create_sandbox_app

    # Not app.run(): inside the `flask` command Flask ignores it (it would block the CLI) and exits at once.
    click.echo(f"WeChat sandbox at http://{host}:{port}/sandbox (WECHAT_API_BASE / WECHAT_PAY_BASE)", err=True)
    run_simple(host, port, create_sandbox_app(), threaded=True)


@sandbox.command("port")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="this port or nothing (exit 1 if it is taken)")
@click.option("--default", "default_port", type=int, default=devserver.DEFAULT_PORT, show_default=True,
              help="tried first when --port is not given; then the next free one")
def port(host: str, port: int | None, default_port: int) -> None:
    """Choose the port `make run` serves on, print it, and write it down for `flask sandbox demo` and the
    mini-program (miniprogram/utils/dev-server.js)."""
    try:
        chosen, note = devserver.choose_port(host, port, default_port)
    except devserver.PortTaken as exc:
        click.echo(f"✗ {exc}", err=True)
        sys.exit(1)
    if note:
        click.echo(f"! {note}", err=True)
    devserver.remember(host, chosen, current_app.instance_path, _root())
    click.echo(chosen)


def _root() -> str:
    return os.path.dirname(current_app.root_path)


@sandbox.command("demo")
@click.option("--url", default=None, help="the running backend  [default: where `make run` serves, else "
                                          "http://127.0.0.1:5000]")
@click.option("--timeout", default=20.0, show_default=True, help="seconds to wait for the notification")
def demo(url: str | None, timeout: float) -> None:
    """Run the whole journey against a running server in sandbox mode, printing each step."""
    http = requests.Session()
    url = (url or devserver.remembered_url(current_app.instance_path, _root())).rstrip("/")

    def step(title: str, method: str, path: str, **kwargs):
        resp = http.request(method, url + path, timeout=10, **kwargs)
        ok = resp.status_code < 400
        click.echo(f"{'✓' if ok else '✗'} {title}: {method} {path} -> {resp.status_code}")
        if not ok:
            click.echo(f"  {resp.text[:300]}", err=True)
            sys.exit(1)
        return resp.json() if resp.content else {}

    try:
        login = step("log in (wx.login code -> code2session)", "POST", "/api/auth/login",
                     json={"code": f"demo#{uuid.uuid4().hex[:8]}"})
    except requests.ConnectionError:
        click.echo(f"✗ cannot reach {url}: start it with `make run`", err=True)
        sys.exit(1)
    http.headers["Authorization"] = f"Bearer {login['token']}"
    click.echo(f"  user {login['user']['id']} ({login['user']['openid']})")
    items = step("list products", "GET", "/api/products")["items"]
    if not items:
        click.echo("✗ no products: add one with `flask products add NAME PRICE_FEN`", err=True)
        sys.exit(1)
    product = items[0]
    click.echo(f"  buying 2 x {product['name']} at {product['price_fen']} fen")
    order = step("create the order (priced by the server)", "POST", "/api/orders",
                 json={"items": [{"product_id": product["id"], "quantity": 2}]})
    no = order["out_trade_no"]
    click.echo(f"  order {no}: {order['total_fee']} fen, {order['status']}")
    params = step("get wx.requestPayment parameters (unified order + second signature)", "POST",
                  f"/api/orders/{no}/pay")
    click.echo(f"  {params['package']} signType={params['signType']} paySign={params['paySign'][:8]}...")
    paid = step("pay in the sandbox, as the phone would", "POST", "/sandbox/control/pay", json=params)
    note = paid["notification"]
    if note.get("queued"):
        click.echo(f"  transaction {paid['transaction_id']}; notification on its way to {note['url']}")
    else:
        click.echo(f"  transaction {paid['transaction_id']}; notification answered "
                   f"{'SUCCESS' if note['acknowledged'] else 'not acknowledged'}")
    deadline = time.monotonic() + timeout
    while True:
        status = step("check the order", "GET", f"/api/orders/{no}")["status"]
        if status == "paid" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    click.echo(f"  order {no} is {status}")
    if status != "paid":
        sys.exit(1)
    click.echo("  the order was made paid by WeChat's signed notification")
    shipped = _ship(no)
    view = step("check the order", "GET", f"/api/orders/{no}")
    if view["status"] != "shipped" or not view["shipments"]:
        click.echo(f"✗ the order is {view['status']}, not shipped", err=True)
        sys.exit(1)
    package = view["shipments"][0]
    click.echo(f"  order {no} is shipped: {package['express_company']} {package['tracking_no']}; WeChat's "
               f"order-shipping management has it ({shipped})")
    confirmed = step("the buyer confirms receipt in WeChat (wx.openBusinessView weappOrderConfirm)", "POST",
                     "/sandbox/control/confirm-receipt", json={"out_trade_no": no})
    pushed = confirmed["push"]
    click.echo(f"  WeChat pushed trade_manage_order_settlement to {pushed['url']}: "
               f"{'answered success' if pushed['acknowledged'] else 'not acknowledged yet (retried)'}")
    deadline = time.monotonic() + timeout
    while True:
        view = step("check the order", "GET", f"/api/orders/{no}")
        if view["status"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if view["status"] != "completed":
        click.echo(f"✗ the order is {view['status']}, not completed", err=True)
        sys.exit(1)
    click.echo(f"  order {no} is completed: receipt confirmed at {view['received_at']}")
    click.echo("journey complete: paid by WeChat's signed notification, shipped and uploaded to WeChat, "
               "completed by WeChat's signed push")


def _ship(no: str) -> str:
    """Ship the order as an operator would (`flask orders ship NO --express SF ...`), on this shell's database."""
    from ..services.shipping import PackageIn, ship_order
    from ..shell import find_order

    order = find_order(no)
    if order is None:
        click.echo(f"✗ order {no} is not in this shell's database: run the demo where the server runs "
                   "(same DATABASE_URL), or ship it there with `flask orders ship`", err=True)
        sys.exit(1)
    tracking = "SF" + uuid.uuid4().hex[:12].upper()
    outcome = ship_order(order, "express", [PackageIn(tracking_no=tracking, express_company="SF",
                                                      receiver_phone="13800138000")])
    click.echo(f"{'✓' if outcome.upload_state == 'uploaded' else '✗'} ship it (flask orders ship {no} --express SF "
               f"--tracking {tracking}): upload to /wxa/sec/order/upload_shipping_info {outcome.upload_state}")
    if outcome.upload_state != "uploaded":
        click.echo(f"  {outcome.error}", err=True)
        sys.exit(1)
    return f"upload {outcome.upload_state}"
