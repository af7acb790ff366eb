"""Helpers for the operations tests (reconcile, refunds, CLI, audit): orders paid through the sandbox."""

from __future__ import annotations

from miniapp_server.extensions import db
from miniapp_server.models import Order, Refund
from miniapp_server.shell import find_order


def new_order(client, user, quantity: int = 2, product_id: int = 1) -> dict:
    resp = client.post("/api/orders", json={"items": [{"product_id": product_id, "quantity": quantity}]},
                       headers=user["headers"])
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def prepay(client, user, order: dict, request_id: str | None = None) -> dict:
    headers = {**user["headers"], **({"X-Request-Id": request_id} if request_id else {})}
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def pay_in_sandbox(client, params: dict) -> dict:
    """The person holding the phone pays; the sandbox notifies the backend."""
    resp = client.post("/sandbox/control/pay", json=params)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def paid_order(client, user, quantity: int = 2) -> dict:
    order = new_order(client, user, quantity)
    paid = pay_in_sandbox(client, prepay(client, user, order))
    assert paid["notification"]["acknowledged"]
    assert fresh(order["out_trade_no"]).status == "paid"
    return order


def fresh(out_trade_no: str) -> Order:
    db.session.rollback()  # a fresh snapshot: other requests and threads may have committed since
    order = find_order(out_trade_no)
    assert order is not None
    return order


def refunds_of(out_trade_no: str) -> list[Refund]:
    return list(fresh(out_trade_no).refunds)


def sandbox_calls(client) -> dict:
    return client.get("/sandbox/control/calls").get_json()


def sandbox_notifications(client, out_trade_no: str, kind: str | None = None) -> list[dict]:
    items = client.get("/sandbox/control/notifications", query_string={"out_trade_no": out_trade_no}).get_json()["items"]
    return [i for i in items if kind is None or i.get("kind") == kind]
