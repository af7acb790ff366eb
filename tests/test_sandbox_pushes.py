"""The sandbox's confirm-receipt: shipped through the fulfilment service, the buyer confirms in 'WeChat',
the sandbox pushes the signed (safe-mode encrypted) settlement event, and the order is completed; in
plain and safe mode, JSON and XML, v2 and v3, with WeChat's refusals and its retries."""

from __future__ import annotations

import time

import pytest

from miniapp_server.models import PushEvent
from miniapp_server.services import events
from miniapp_server.services.shipping import ship_order
from miniapp_server.extensions import db

from .conftest import bearer, login
from .ops_helpers import fresh, paid_order, sandbox_notifications


def shipped_order(client, user) -> dict:
    order = paid_order(client, user)
    outcome = ship_order(fresh(order["out_trade_no"]), "virtual")
    assert outcome.error is None and outcome.upload_state == "uploaded"
    assert fresh(order["out_trade_no"]).status == "shipped"
    return order


def confirm(client, **body):
    return client.post("/sandbox/control/confirm-receipt", json=body)


def push_verdicts(no: str) -> list[str]:
    db.session.rollback()
    return list(db.session.execute(db.select(PushEvent.verdict).filter_by(out_trade_no=no)
                                   .order_by(PushEvent.id)).scalars())


def test_confirm_receipt_completes_the_order_through_a_signed_encrypted_push(app, client, user):
    order = shipped_order(client, user)
    no = order["out_trade_no"]
    resp = confirm(client, out_trade_no=no)
    assert resp.status_code == 200, resp.get_json()
    answer = resp.get_json()
    assert answer["push"]["acknowledged"] and answer["push"]["status"] == 200 and answer["order_state"] == 3
    event = answer["event"]
    assert event["Event"] == "trade_manage_order_settlement" and event["merchant_trade_no"] == no
    assert event["confirm_receive_time"] and event["merchant_id"] == app.config["WECHAT_MCH_ID"]
    done = fresh(no)
    assert done.status == "completed" and int(done.received_at.timestamp()) == event["confirm_receive_time"]
    api = client.get(f"/api/orders/{no}", headers=user["headers"]).get_json()
    assert api["status"] == "completed" and api["received_at"]
    assert push_verdicts(no) == ["completed"]
    db.session.rollback()
    assert db.session.execute(db.select(PushEvent.encrypted).filter_by(out_trade_no=no)).scalar_one() is True
    [entry] = sandbox_notifications(client, no, "push:trade_manage_order_settlement:confirm")
    assert entry["acknowledged"] and entry["url"].endswith("/api/wechat/events")
    # The buyer cannot confirm twice; WeChat's shipping desk says so too.
    again = confirm(client, out_trade_no=no)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "order_already_confirmed"
    state = client.get("/sandbox/control/shipping", query_string={"out_trade_no": no}).get_json()["order_state"]
    assert state == 3


def test_wechat_refuses_what_it_never_saw_shipped(app, client, user):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    resp = confirm(client, out_trade_no=no)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_not_shipped"
    # Shipped here but the upload never reached WeChat: WeChat still refuses.
    client.post("/sandbox/control/shipping-behaviour", json={"fail_next": -1})
    outcome = ship_order(fresh(no), "virtual")
    assert outcome.upload_state == "pending" and fresh(no).status == "shipped"
    resp = confirm(client, out_trade_no=no)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_not_shipped"
    assert fresh(no).status == "shipped" and push_verdicts(no) == []
    assert sandbox_notifications(client, no, "push:trade_manage_order_settlement:confirm") == []
    for body, status in (({"out_trade_no": "2026" + "0" * 28}, 404), ({"transaction_id": "4200" + "0" * 24}, 404),
                         ({}, 400), ({"out_trade_no": 12}, 400), ({"out_trade_no": no, "format": "yaml"}, 400)):
        assert confirm(client, **body).status_code == status, body
    assert client.post("/sandbox/control/confirm-receipt", data=b"[1]",
                       content_type="application/json").status_code == 400


def test_by_transaction_id_in_xml_and_the_estimated_variant_first(app, client, user):
    order = shipped_order(client, user)
    no = order["out_trade_no"]
    txn = fresh(no).transaction_id
    estimated = confirm(client, transaction_id=txn, estimated=True, format="xml")
    assert estimated.status_code == 200 and estimated.get_json()["push"]["acknowledged"]
    assert "estimated_settlement_time" in estimated.get_json()["event"]
    assert fresh(no).status == "shipped" and push_verdicts(no) == ["settlement_estimated"]
    resp = confirm(client, transaction_id=txn, format="xml")
    assert resp.status_code == 200 and resp.get_json()["push"]["acknowledged"]
    assert fresh(no).status == "completed" and push_verdicts(no) == ["settlement_estimated", "completed"]
    db.session.rollback()
    assert set(db.session.execute(db.select(PushEvent.data_format).filter_by(out_trade_no=no)).scalars()) == {"xml"}


def test_plain_mode(make_app):
    app = make_app(WECHAT_PUSH_AES_KEY="")
    client = app.test_client()
    with app.app_context():
        user = {"headers": bearer(login(client)["token"])}
        order = shipped_order(client, user)
        assert confirm(client, out_trade_no=order["out_trade_no"]).get_json()["push"]["acknowledged"]
        assert fresh(order["out_trade_no"]).status == "completed"
        db.session.rollback()
        assert db.session.execute(db.select(PushEvent.encrypted)).scalar_one() is False


def test_an_unanswered_push_is_retried_on_the_schedule_until_success(app, client, user, monkeypatch):
    order = shipped_order(client, user)
    no = order["out_trade_no"]
    real = events.handle_push
    refusals = {"left": 2}

    def flaky(query, body):
        if refusals["left"]:
            refusals["left"] -= 1
            return events.PushAnswer(503, "try_again", "busy")
        return real(query, body)

    monkeypatch.setattr(events, "handle_push", flaky)
    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(app.extensions["sandbox"], "sleep", lambda s: slept.append(s) or real_sleep(s))
    first = confirm(client, out_trade_no=no).get_json()["push"]
    assert first["attempt"] == 1 and not first["acknowledged"] and first["status"] == 503
    deadline = time.monotonic() + 10
    items: list[dict] = []
    while time.monotonic() < deadline:
        items = sandbox_notifications(client, no, "push:trade_manage_order_settlement:confirm")
        if items and items[-1]["acknowledged"]:
            break
        real_sleep(0.05)
    assert [(i["attempt"], i["acknowledged"]) for i in items] == [(1, False), (2, False), (3, True)]
    scale = app.config["SANDBOX_TIME_SCALE"]
    assert slept[:2] == pytest.approx([15 * scale, 15 * scale])
    assert fresh(no).status == "completed" and push_verdicts(no) == ["completed"]


def test_the_standalone_sandbox_pushes_over_http_to_the_backend_that_gave_the_notify_url(gunicorn, tmp_path):
    """The sandbox as a process of its own: separately configured (the same defaults), real HTTP to the backend."""
    from datetime import datetime, timezone

    from miniapp_server import create_app
    from miniapp_server.sandbox.standalone import create_sandbox_app

    server = gunicorn("--workers", "1", "--threads", "2")
    sandbox = create_sandbox_app(env={"EMBEDDED_STORE_PATH": str(tmp_path / "store.sqlite3"),
                                      "SANDBOX_TIME_SCALE": "0.001"})
    client = sandbox.test_client()
    cfg = sandbox.config
    no, txn, openid = "20261201" + "ab" * 12, "4200000001202612010000000042", "o-standalone-buyer"
    with sandbox.app_context():
        from miniapp_server.sandbox.routes import emulator

        emu = emulator()  # WeChat's side: a paid trade whose notify URL names the backend
        emu.save_order({"out_trade_no": no, "total_fee": "1800", "paid_fee": 1800, "trade_type": "JSAPI",
                        "openid": openid, "body": "demo", "notify_url": server.url + "/api/pay/notify",
                        "state": "SUCCESS", "transaction_id": txn, "created": time.time(), "refunds": []})
        emu.store.set("sandbox:txn:" + txn, no)
    token = client.post("/sandbox/cgi-bin/stable_token", json={
        "grant_type": "client_credential", "appid": cfg["WECHAT_APPID"], "secret": cfg["WECHAT_APPSECRET"]}
    ).get_json()["access_token"]
    upload = client.post(f"/sandbox/wxa/sec/order/upload_shipping_info?access_token={token}", json={
        "order_key": {"order_number_type": 1, "mchid": cfg["WECHAT_MCH_ID"], "out_trade_no": no},
        "logistics_type": 3, "delivery_mode": 1, "shipping_list": [{"item_desc": "demo"}],
        "upload_time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "payer": {"openid": openid}})
    assert upload.get_json()["errcode"] == 0, upload.get_json()
    resp = client.post("/sandbox/control/confirm-receipt", json={"out_trade_no": no})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["push"]["url"] == server.url + "/api/wechat/events"
    # Another host than the sandbox's own: sent over HTTP from a background thread, as notifications are.
    deadline, entries = time.monotonic() + 20, []
    while time.monotonic() < deadline and not any(e["acknowledged"] for e in entries):
        time.sleep(0.1)
        entries = client.get("/sandbox/control/notifications", query_string={"out_trade_no": no}).get_json()["items"]
    [pushed] = [e for e in entries if e["kind"] == "push:trade_manage_order_settlement:confirm"]
    assert pushed["status"] == 200 and pushed["acknowledged"] and pushed["answer"] == "success"
    # The backend verified and decrypted it (another process, its own settings) and recorded it.
    backend = create_app(env=server.env)
    with backend.app_context():
        [row] = db.session.execute(db.select(PushEvent)).scalars().all()
        assert (row.event, row.out_trade_no, row.verdict, row.encrypted) == (
            "trade_manage_order_settlement", no, "unknown_order", True)
        db.engine.dispose()
