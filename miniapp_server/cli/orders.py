"""`flask orders`: look at orders and act on them, with exit codes scripts can use.

Exit codes (the contract's): 0 done, 1 refused (wrong state or bad input; an unknown order is bad
input), 2 usage, 3 WeChat failed (refused or gave no usable answer) or unreachable.
"""

from __future__ import annotations

import json
import sys
from datetime import timezone

import click
from flask.cli import AppGroup

from ..errors import ApiError
from ..extensions import db
from ..models import Order, OrderStatus, PaymentNotification, User
from ..shell import find_order

orders = AppGroup("orders", help="List, show, sync, close and refund orders; reconcile them with WeChat.")

DONE, REFUSED, USAGE, WECHAT_FAILED = 0, 1, 2, 3


def refuse(message: str) -> None:
    """We will not do it (wrong state, bad input, unknown order): exit 1."""
    click.echo(message, err=True)
    sys.exit(REFUSED)


def wechat_failed(message: str) -> None:
    """WeChat refused it or could not be reached: exit 3."""
    click.echo(message, err=True)
    sys.exit(WECHAT_FAILED)


def _emit(data, as_json: bool, table) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        table(data)


def _order_or_exit(no: str) -> Order:
    order = find_order(no)
    if order is None:
        refuse(f"no order {no}")
    return order  # type: ignore[return-value]


def order_summary(o: Order) -> dict:
    return {**o.to_dict(), "user_id": o.user_id, "anomaly": o.anomaly, "prepay_id": o.prepay_id,
            "shipping_reminded_at": o.shipping_reminded_at.isoformat() if o.shipping_reminded_at else None}


@orders.command("list")
@click.option("--status", type=click.Choice([s.value for s in OrderStatus]))
@click.option("--user", "user", help="user id or openid")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), help="created on or after (UTC)")
@click.option("--anomalies", is_flag=True, help="only orders flagged for an operator")
@click.option("--needs-shipping", is_flag=True,
              help="only paid, unshipped orders WeChat reminded us to ship (trade_manage_remind_shipping)")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def list_(status, user, since, anomalies, needs_shipping, limit, as_json) -> None:
    """List orders, newest first."""
    query = db.select(Order).order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
    if status:
        query = query.where(Order.status == status)
    if user:
        query = query.join(User).where(User.id == int(user) if user.isdigit() else User.openid == user)
    if since:
        query = query.where(Order.created_at >= since.replace(tzinfo=timezone.utc))
    if anomalies:
        query = query.where(Order.anomaly.is_not(None))
    if needs_shipping:
        query = query.where(Order.status == OrderStatus.PAID.value, Order.shipping_reminded_at.is_not(None))
    rows = [order_summary(o) for o in db.session.execute(query).scalars()]

    def table(rows):
        click.echo(f"{'out_trade_no':<32}  {'status':<9}  {'total_fee':>9}  {'refunded':>8}  {'user':>5}  "
                   f"{'created_at (UTC)':<19}  anomaly")
        for r in rows:
            click.echo(f"{r['out_trade_no']:<32}  {r['status']:<9}  {r['total_fee']:>9}  {r['refunded_fee']:>8}  "
                       f"{r['user_id']:>5}  {r['created_at'][:19]:<19}  {r['anomaly'] or ''}")
        click.echo(f"({len(rows)} orders)")

    _emit(rows, as_json, table)


@orders.command("show")
@click.argument("out_trade_no")
@click.option("--json", "as_json", is_flag=True)
def show(out_trade_no: str, as_json: bool) -> None:
    """Show one order: items, payments, notifications, refunds."""
    o = _order_or_exit(out_trade_no)
    notes = db.session.execute(db.select(PaymentNotification).filter_by(out_trade_no=o.out_trade_no)
                               .order_by(PaymentNotification.id)).scalars().all()
    from ..audit import exchanges_for
    from ..services.messages import for_order as messages_for
    from ..services.events import events_for

    refunded = {}  # per transaction: what came back (an anomalous payment's refunds show here)
    for r in o.refunds:
        if r.status == "success":
            refunded[r.transaction_id] = refunded.get(r.transaction_id, 0) + r.refund_fee
    data = {**order_summary(o), "anomaly_detail": o.anomaly_detail,
            "payments": [{**p.to_dict(), "refunded_fee": refunded.get(p.transaction_id, 0)} for p in o.payments],
            "notifications": [n.to_dict() for n in notes], "refunds": [r.to_dict() for r in o.refunds],
            "messages": [m.to_dict() for m in messages_for(o.id)],
            "shipments": [s.operator_dict() for s in o.shipments],
            "exchanges": [{k: v for k, v in x.to_dict().items() if k not in ("request", "response")}
                          for x in exchanges_for(o.out_trade_no)],
            "push_events": [e.to_dict() for e in events_for(o.out_trade_no)]}

    def table(d):
        for key in ("out_trade_no", "status", "total_fee", "refunded_fee", "user_id", "trade_type", "prepay_id",
                    "transaction_id", "created_at", "paid_at", "shipped_at", "received_at", "closed_at", "expires_at",
                    "shipping_reminded_at", "anomaly", "anomaly_detail"):
            click.echo(f"{key:<15} {d[key] if d[key] is not None else '-'}")
        click.echo("items:")
        for i in d["items"]:
            click.echo(f"  {i['quantity']:>3} x {i['name']} @ {i['unit_price_fen']} = {i['subtotal_fen']}")
        click.echo("payments:")
        for p in d["payments"]:
            click.echo(f"  {p['transaction_id']}  {p['total_fee']:>9}  {p['source']:<6}  refunded {p['refunded_fee']:>7}"
                       f"  {p['anomaly'] or ''}")
        click.echo("notifications:")
        for n in d["notifications"]:
            click.echo(f"  {n['received_at'][:19]}  {n['kind']:<7}  {n['verdict']:<16}  {n['transaction_id'] or '-'}"
                       f"  {n['total_fee']}")
        click.echo("refunds:")
        for r in d["refunds"]:
            click.echo(f"  {r['out_refund_no']}  {r['refund_fee']:>9}  {r['status']:<10}  {r['transaction_id'] or '-'}"
                       f"  {r['failure'] or ''}")
        click.echo("shipments:")
        for sh in d["shipments"]:
            what = (f"{sh['express_company']} {sh['tracking_no']}" if sh["logistics_type"] == "express"
                    else sh["logistics_type"])
            state = sh["upload_state"] + (f" ({sh['errcode']} {sh['errmsg']})" if sh["errcode"] else "")
            note = " superseded" if sh["superseded"] else (" change" if sh["is_change"] else "")
            click.echo(f"  #{sh['upload_no']}.{sh['package_no']}  {what:<28}  {state:<24}  attempts {sh['attempts']}"
                       f"{note}  {sh['item_desc']}")
            if sh["upload_state"] != "uploaded" and sh["last_error"]:
                click.echo(f"      last error: {sh['last_error']}")
        click.echo("messages:")
        for m in d["messages"]:
            click.echo(f"  {m['event']:<8}  {m['template_id']:<43}  {m['state']:<8}  {(m['sent_at'] or '-')[:19]:<19}"
                       f"  {m['event_ref'] or ''}  {m['error'] or ''}")
        click.echo("wechat pushes:")
        for e in d["push_events"]:
            click.echo(f"  {e['received_at'][:19]}  {e['event']:<30}  {e['verdict']:<20}  {e['detail'] or ''}")
        click.echo("wechat exchanges:")
        for x in d["exchanges"]:
            click.echo(f"  {x['at'][:19]}  {x['direction']:<3}  {x['path']:<22}  {x['outcome']:<24}  {x['duration_ms']:>5}ms"
                       f"  {x['request_id'] or '-'}")

    _emit(data, as_json, table)


@orders.command("sync")
@click.argument("out_trade_no")
@click.option("--json", "as_json", is_flag=True)
def sync(out_trade_no: str, as_json: bool) -> None:
    """Ask WeChat about an order and apply what it says."""
    from ..services.payments import sync_order
    from ..wechat.errors import WeChatError

    o = _order_or_exit(out_trade_no)
    before = o.status
    try:
        o = sync_order(o)
    except WeChatError as err:
        wechat_failed(f"WeChat: {err}")
    except ApiError as err:
        refuse(err.message)
    _emit({"out_trade_no": o.out_trade_no, "before": before, "status": o.status}, as_json,
          lambda d: click.echo(f"{d['out_trade_no']}: {d['before']} -> {d['status']}"))


@orders.command("close")
@click.argument("out_trade_no")
@click.option("--json", "as_json", is_flag=True)
def close(out_trade_no: str, as_json: bool) -> None:
    """Close an unpaid order, at WeChat first and then here."""
    from ..services.closing import close_order
    from ..wechat.errors import WeChatError

    o = _order_or_exit(out_trade_no)
    try:
        o = close_order(o)
    except WeChatError as err:
        wechat_failed(f"WeChat: {err}")
    except ApiError as err:
        refuse(err.message)
    _emit({"out_trade_no": o.out_trade_no, "status": o.status}, as_json,
          lambda d: click.echo(f"{d['out_trade_no']}: {d['status']}"))
    if o.status != OrderStatus.CLOSED.value:
        sys.exit(REFUSED)


@orders.command("checkout-link")
@click.argument("out_trade_no")
@click.option("--base-url", default=None,
              help="the address customers reach this server at  [default: where `make run` serves]")
@click.option("--json", "as_json", is_flag=True)
def checkout_link(out_trade_no: str, base_url: str | None, as_json: bool) -> None:
    """Print a signed link to the order's scan-to-pay checkout page (it expires; see CHECKOUT_LINK_TTL)."""
    import os

    from flask import current_app

    from ..checkout.links import checkout_url
    from ..devserver import remembered_url

    base_url = base_url or remembered_url(current_app.instance_path, os.path.dirname(current_app.root_path))

    o = _order_or_exit(out_trade_no)
    with current_app.test_request_context(base_url=base_url):
        url = checkout_url(o.out_trade_no)
    _emit({"out_trade_no": o.out_trade_no, "url": url}, as_json, lambda d: click.echo(d["url"]))
