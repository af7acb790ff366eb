"""Fulfilment: shipping an order and uploading it to WeChat's order-shipping management, exactly once.

The upload's body is pinned field by field against WeChat's documentation (and WxJava's request
beans), not against our sandbox; the sandbox's own validation is tested on its own below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from sqlalchemy import update

from miniapp_server.extensions import db, wechat
from miniapp_server.models import Order, Shipment, utcnow
from miniapp_server.services import refunds, shipping
from miniapp_server.wechat import shipping as protocol
from miniapp_server.wechat.errors import InvalidCredential, WeChatError, WeChatUnavailable

from .conftest import ROOT
from .ops_helpers import fresh, new_order, paid_order, prepay

UPLOAD = "/wxa/sec/order/upload_shipping_info"


def run(runner, *args: str):
    db.session.rollback()  # the command starts from what is committed, as a real `flask` process would
    return runner.invoke(args=["orders", *args])


def sandbox_uploads(client, no: str | None = None) -> list[dict]:
    return client.get("/sandbox/control/shipping", query_string={"out_trade_no": no} if no else {}).get_json()["items"]


def upload_calls(client) -> int:
    return client.get("/sandbox/control/calls").get_json()["upload_shipping_info"]


def behave(client, **knobs) -> None:
    assert client.post("/sandbox/control/shipping-behaviour", json=knobs).status_code == 200


def shipments_of(no: str) -> list[Shipment]:
    return list(fresh(no).shipments)


def view(client, user, no: str) -> dict:
    resp = client.get(f"/api/orders/{no}", headers=user["headers"])
    assert resp.status_code == 200
    return resp.get_json()


@pytest.fixture
def recorded(app, monkeypatch):
    """Every request the mini-program client sends to api.weixin.qq.com, as it leaves (method, url, params, json)."""
    sent: list[dict] = []
    session = wechat.miniapp.http
    real = session.request

    def record(method, url, **kwargs):
        sent.append({"method": method, "url": url, "params": kwargs.get("params"), "json": kwargs.get("json")})
        return real(method, url, **kwargs)

    monkeypatch.setattr(session, "request", record)
    return sent


# -- the protocol, against WeChat's documentation --------------------------------------------------------

def test_upload_body_is_wechats_field_by_field():
    # WeChat's documented example time, "2022-12-15T13:29:35.120+08:00", given in UTC.
    when = datetime(2022, 12, 15, 5, 29, 35, 120000, tzinfo=timezone.utc)
    key = protocol.order_key(mchid="1230000109", out_trade_no="323232323")
    body = protocol.upload_body(
        key=key, logistics_type="express", openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", upload_time=when,
        packages=[protocol.Package(item_desc="微信红包抱枕*1个", tracking_no="323244567777", express_company="SF",
                                   receiver_contact="189****1234")])
    assert body == {
        "order_key": {"order_number_type": 1, "mchid": "1230000109", "out_trade_no": "323232323"},
        "logistics_type": 1,  # 1 express, 2 same-city, 3 virtual, 4 pickup
        "delivery_mode": 1,  # 1 UNIFIED_DELIVERY
        "shipping_list": [{"tracking_no": "323244567777", "express_company": "SF", "item_desc": "微信红包抱枕*1个",
                           "contact": {"receiver_contact": "189****1234"}}],
        "upload_time": "2022-12-15T13:29:35.120+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    }
    assert "is_all_delivered" not in body  # only in split mode
    assert isinstance(body["shipping_list"], list)  # an object there is WeChat's most reported 47001

    split = protocol.upload_body(
        key=protocol.order_key(transaction_id="4200001858202306300646157659"), logistics_type="express",
        openid="o1", upload_time=when, split=True, all_delivered=False,
        packages=[protocol.Package("a*1", "YT1", "YTO"), protocol.Package("b*1", "YT2", "YTO")])
    assert split["order_key"] == {"order_number_type": 2, "transaction_id": "4200001858202306300646157659"}
    assert split["delivery_mode"] == 2 and split["is_all_delivered"] is False
    assert [p["tracking_no"] for p in split["shipping_list"]] == ["YT1", "YT2"]
    assert "contact" not in split["shipping_list"][0]

    virtual = protocol.upload_body(key=key, logistics_type="virtual", openid="o1", upload_time=when,
                                   packages=[protocol.Package("话费充值*1")])
    assert virtual["logistics_type"] == 3 and virtual["shipping_list"] == [{"item_desc": "话费充值*1"}]
    assert [protocol.LOGISTICS_TYPES[k] for k in ("express", "same_city", "virtual", "pickup")] == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        protocol.upload_body(key=key, logistics_type="express", openid="o", upload_time=when,
                             packages=[protocol.Package("x")] * 16)  # WeChat: at most 15 packages


def test_phones_are_masked_with_the_last_four_digits_in_clear():
    assert protocol.mask_phone("13912345678") == "139****5678"
    assert protocol.mask_phone("+86 139 1234 5678") == "139****5678"
    assert protocol.mask_phone("021-12345678") == "*******5678"
    assert protocol.mask_phone("189****1234") == "189****1234"  # already masked: as given
    for bad in ("", "abc", "12", "1391234567x", "139****12a4"):
        with pytest.raises(ValueError):
            protocol.mask_phone(bad)


def test_the_call_goes_to_wechats_path_with_the_token_in_the_query(app, client, user, recorded):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    outcome = shipping.ship_order(fresh(no), "express", [shipping.PackageIn("ZTO123", "zto", "一杯拿铁")])
    assert outcome.upload_state == "uploaded" and outcome.error is None
    (call,) = [c for c in recorded if c["url"].endswith(UPLOAD)]
    assert call["method"] == "POST" and set(call["params"]) == {"access_token"} and call["params"]["access_token"]
    body = call["json"]
    o = fresh(no)
    assert body == {
        "order_key": {"order_number_type": 1, "mchid": app.config["WECHAT_MCH_ID"], "out_trade_no": no},
        "logistics_type": 1, "delivery_mode": 1,
        "shipping_list": [{"tracking_no": "ZTO123", "express_company": "ZTO", "item_desc": "一杯拿铁"}],
        "upload_time": protocol.rfc3339(o.shipments[0].upload_time),
        "payer": {"openid": o.user.openid},
    }
    assert body["upload_time"].endswith("+08:00") and "." in body["upload_time"]


# -- shipping: the order's life -------------------------------------------------------------------------

def test_ship_express_makes_the_order_shipped_and_shows_it_to_the_buyer(app, client, user, runner):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    before = view(client, user, no)
    assert before["shipments"] == [] and before["shipped_at"] is None and before["received_at"] is None
    assert before["confirm_receipt"] == {"merchant_id": app.config["WECHAT_MCH_ID"], "merchant_trade_no": no,
                                         "transaction_id": fresh(no).transaction_id}

    result = run(runner, "ship", no, "--express", "SF", "--tracking", "SF1234567890", "--receiver-phone",
                 "13912345678", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "shipped" and data["upload_state"] == "uploaded"
    after = view(client, user, no)
    assert after["status"] == "shipped" and after["shipped_at"]
    assert after["shipments"] == [{"logistics_type": "express", "express_company": "SF", "tracking_no": "SF1234567890",
                                   "item_desc": "拿铁咖啡 Latte*2"}]  # exactly the contract's keys: no upload state
    (upload,) = sandbox_uploads(client, no)
    assert upload["verdict"] == "ok"
    assert upload["body"]["shipping_list"][0]["contact"] == {"receiver_contact": "139****5678"}
    assert client.get("/sandbox/control/shipping", query_string={"out_trade_no": no}).get_json()["order_state"] == 2
    unpaid = new_order(client, user)
    assert view(client, user, unpaid["out_trade_no"])["confirm_receipt"] is None  # no transaction yet

    listed = json.loads(run(runner, "list", "--status", "shipped", "--json").stdout)
    assert [o["out_trade_no"] for o in listed] == [no]
    shown = run(runner, "show", no).stdout
    assert "status          shipped" in shown and "SF SF1234567890" in shown and "uploaded" in shown
    assert UPLOAD in shown  # the audit trail has the call, filed under the order


@pytest.mark.parametrize("kind,flag,number", [("virtual", "--virtual", 3), ("pickup", "--pickup", 4),
                                              ("same_city", "--same-city", 2)])
def test_ship_without_a_carrier(app, client, user, runner, kind, flag, number):
    no = paid_order(client, user)["out_trade_no"]
    result = run(runner, "ship", no, flag, "--item-desc", "会员月卡*1")
    assert result.exit_code == 0, result.stderr
    (upload,) = sandbox_uploads(client, no)
    assert upload["body"]["logistics_type"] == number
    assert upload["body"]["shipping_list"] == [{"item_desc": "会员月卡*1"}]
    assert view(client, user, no)["shipments"] == [{"logistics_type": kind, "express_company": None,
                                                    "tracking_no": None, "item_desc": "会员月卡*1"}]


def test_operator_mistakes_are_refused_and_change_nothing(app, client, user, runner):
    no = paid_order(client, user)["out_trade_no"]
    unpaid = new_order(client, user)["out_trade_no"]
    refused = {
        ("ship", "nosuchorder", "--virtual"): "no order nosuchorder",
        ("ship", unpaid, "--virtual"): "only paid orders can be shipped",
        ("ship", no, "--express", "XYZ", "--tracking", "1"): "unknown express company code",
        ("ship", no, "--express", "ZTO"): "needs the tracking number",
        ("ship", no, "--express", "SF", "--tracking", "SF1"): "contact phone for SF",
        ("ship", no, "--express", "ZTO", "--tracking", "1", "--receiver-phone", "call me"): "not a phone",
        ("ship", no, "--virtual", "--item-desc", "x" * 121): "at most 120 characters",
        ("ship", no, "--express", "ZTO", "--tracking", "x" * 129): "1 to 128 bytes",
        ("ship", no, "--virtual", "--split"): "only for express",
        ("ship", no, "--express", "ZTO", "--split", *[a for i in range(16) for a in ("--tracking", f"T{i}")]):
            "at most 15 packages",
        ("ship", no, "--virtual", "--change"): "no complete shipment of it to change",
    }
    for args, message in refused.items():
        result = run(runner, *args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.stderr)
    usage = [("ship", no), ("ship", no, "--virtual", "--express", "SF"), ("ship", no, "--tracking", "1", "--virtual"),
             ("ship", no, "--express", "ZTO", "--tracking", "1", "--all-delivered"),
             ("ship", no, "--express", "ZTO", "--tracking", "1", "--tracking", "2")]
    for args in usage:
        assert run(runner, *args).exit_code == 2, args
    assert shipments_of(no) == [] and fresh(no).status == "paid" and fresh(no).shipped_at is None
    assert upload_calls(client) == 0


def test_shipping_with_extra_express_codes_and_the_shops_phone_for_sf(make_app):
    app = make_app(SHIPPING_EXPRESS_CODES="ANEKY, kysy", SHIPPING_CONSIGNOR_PHONE="021-55551234")
    with app.app_context():
        client, runner = app.test_client(), app.test_cli_runner()
        from .conftest import bearer, login

        user = {"headers": bearer(login(client)["token"])}
        a, b = paid_order(client, user)["out_trade_no"], paid_order(client, user)["out_trade_no"]
        assert run(runner, "ship", a, "--express", "KYSY", "--tracking", "KY1").exit_code == 0
        assert run(runner, "ship", b, "--express", "SF", "--tracking", "SF1").exit_code == 0
        (sf,) = sandbox_uploads(client, b)
        assert sf["body"]["shipping_list"][0]["contact"] == {"consignor_contact": "*******1234"}


# -- exactly once, retried until WeChat answers --------------------------------------------------------------

def test_wechat_busy_keeps_the_upload_pending_and_reconcile_sends_it(app, client, user, runner):
    no = paid_order(client, user)["out_trade_no"]
    behave(client, fail_next=-1)
    result = run(runner, "ship", no, "--express", "YTO", "--tracking", "YT1", "--json")
    assert result.exit_code == 3 and "stays pending" in result.stderr
    assert json.loads(result.stdout)["upload_state"] == "pending"
    (s,) = shipments_of(no)
    assert (s.upload_state, s.attempts, s.errcode) == ("pending", 1, -1)
    assert fresh(no).status == "shipped"  # the goods left: the order is shipped whatever WeChat says
    assert "pending" in run(runner, "show", no).stdout

    again = run(runner, "ship", no, "--express", "YTO", "--tracking", "YT2")
    assert again.exit_code == 1 and "has not reached WeChat yet" in again.stderr  # nothing sent twice
    summary = runner.invoke(args=["orders", "reconcile", "--older-than", "0", "--json"])
    assert summary.exit_code == 0, summary.stdout
    counts = json.loads(summary.stdout)
    assert (counts["uploads_checked"], counts["uploads_done"], counts["uploads_refused"]) == (1, 1, 0)
    (s,) = shipments_of(no)
    assert s.upload_state == "uploaded" and s.attempts == 2 and s.uploaded_at is not None
    assert [u["verdict"] for u in sandbox_uploads(client, no)] == [-1, "ok"]
    quiet = json.loads(runner.invoke(args=["orders", "reconcile", "--older-than", "0", "--json"]).stdout)
    assert quiet["uploads_checked"] == 0  # uploaded: never sent again
    assert upload_calls(client) == 2


@pytest.mark.parametrize("failure", ["down", "slow", "token"])
def test_wechat_down_slow_or_refusing_the_token_keeps_it_pending(app, client, user, monkeypatch, failure):
    no = paid_order(client, user)["out_trade_no"]
    session = wechat.miniapp.http
    real = session.request
    calls = []

    def broken(method, url, **kwargs):
        if url.endswith(UPLOAD):
            calls.append(kwargs.get("params", {}).get("access_token"))
            if failure == "down":
                raise requests.ConnectionError("connection refused")
            if failure == "slow":
                raise requests.ReadTimeout("read timed out")
            resp = requests.Response()
            resp.status_code, resp._content = 200, b'{"errcode": 40001, "errmsg": "invalid credential"}'
            return resp
        return real(method, url, **kwargs)

    monkeypatch.setattr(session, "request", broken)
    outcome = shipping.ship_order(fresh(no), "virtual")
    assert outcome.upload_state == "pending"
    expected_error = InvalidCredential if failure == "token" else WeChatUnavailable
    assert isinstance(outcome.error, expected_error)
    if failure == "token":
        assert len(calls) == 2 and calls[0] != calls[1]  # the one refetch, then it stays pending
    (s,) = shipments_of(no)
    assert s.upload_state == "pending" and s.last_error
    monkeypatch.setattr(session, "request", real)
    assert shipping.try_upload(s.order_id, s.upload_no) is None
    assert shipments_of(no)[0].upload_state == "uploaded"


def test_a_revoked_token_is_refetched_once_and_the_upload_goes_through(app, client, user):
    no = paid_order(client, user)["out_trade_no"]
    wechat.access_token.get()  # a token in the cache...
    client.post("/sandbox/control/revoke-token", json={"reason": "expired"})  # ...that WeChat no longer takes
    outcome = shipping.ship_order(fresh(no), "virtual")
    assert outcome.upload_state == "uploaded" and outcome.error is None


def test_an_answer_lost_on_the_way_is_not_uploaded_twice(app, client, user, runner):
    no = paid_order(client, user)["out_trade_no"]
    behave(client, lose_next_answer=True)  # WeChat applies it, but we hear -1
    assert run(runner, "ship", no, "--express", "STO", "--tracking", "ST1").exit_code == 3
    assert shipments_of(no)[0].upload_state == "pending"
    summary = json.loads(runner.invoke(args=["orders", "reconcile", "--older-than", "0", "--json"]).stdout)
    assert summary["uploads_done"] == 1
    # reconcile asked WeChat (get_order) and found it there: no second upload, the one change is intact
    assert upload_calls(client) == 1
    assert client.get("/sandbox/control/calls").get_json()["get_order"] == 1
    assert run(runner, "ship", no, "--express", "STO", "--tracking", "ST9", "--change").exit_code == 0


def test_a_permanent_refusal_is_recorded_shown_and_never_retried(app, client, user, runner):
    no = paid_order(client, user)["out_trade_no"]
    behave(client, fail_next=10060003)
    result = run(runner, "ship", no, "--express", "JTSD", "--tracking", "JT1")
    assert result.exit_code == 3 and "WeChat refused" in result.stderr
    (s,) = shipments_of(no)
    assert s.upload_state == "failed" and s.errcode == 10060003 and "重新发货" in s.errmsg
    assert "failed (10060003" in run(runner, "show", no).stdout
    from miniapp_server.shell import pending_shipments

    assert [p.id for p in pending_shipments()] == [s.id]  # the shell lists it for the operator
    for _ in range(2):
        summary = json.loads(runner.invoke(args=["orders", "reconcile", "--older-than", "0", "--json"]).stdout)
        assert summary["uploads_checked"] == 0
    assert upload_calls(client) == 1
    # The operator corrects it: shipping again replaces the refused upload (it never reached WeChat).
    assert run(runner, "ship", no, "--express", "JTSD", "--tracking", "JT2").exit_code == 0
    rows = shipments_of(no)
    assert [(r.tracking_no, r.upload_state, r.superseded, r.is_change) for r in rows] == [
        ("JT1", "failed", True, False), ("JT2", "uploaded", False, False)]
    assert [x["tracking_no"] for x in view(client, user, no)["shipments"]] == ["JT2"]


def test_wechat_not_knowing_the_order_is_transient_just_after_payment_then_permanent(make_app):
    app = make_app(SHIPPING_NOT_FOUND_GRACE="600")
    with app.app_context():
        from .conftest import bearer, login

        client = app.test_client()
        user = {"headers": bearer(login(client)["token"])}
        no = paid_order(client, user)["out_trade_no"]
        behave(client, fail_next=10060001)
        assert shipping.ship_order(fresh(no), "virtual").upload_state == "pending"  # "wait a minute": WeChat
        db.session.execute(update(Order).where(Order.out_trade_no == no)
                           .values(paid_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
        behave(client, fail_next=10060001)
        s = shipments_of(no)[0]
        err = shipping.try_upload(s.order_id, s.upload_no)
        assert isinstance(err, WeChatError) and err.code == 10060001
        assert shipments_of(no)[0].upload_state == "failed"


def test_a_change_of_shipping_information_once_and_only_before_receipt(app, client, user, runner):
    no = paid_order(client, user)["out_trade_no"]
    assert run(runner, "ship", no, "--express", "ZTO", "--tracking", "Z1").exit_code == 0
    again = run(runner, "ship", no, "--express", "ZTO", "--tracking", "Z2")
    assert again.exit_code == 1 and "already shipped" in again.stderr and "--change" in again.stderr
    changed = run(runner, "ship", no, "--express", "YTO", "--tracking", "Y1", "--change", "--json")
    assert changed.exit_code == 0, changed.stderr
    assert [x["tracking_no"] for x in view(client, user, no)["shipments"]] == ["Y1"]
    rows = shipments_of(no)
    assert [(r.tracking_no, r.superseded, r.is_change) for r in rows] == [("Z1", True, False), ("Y1", False, True)]
    calls = upload_calls(client)
    twice = run(runner, "ship", no, "--express", "YTO", "--tracking", "Y2", "--change")
    assert twice.exit_code == 1 and "changed once" in twice.stderr
    assert upload_calls(client) == calls  # refused before WeChat is called

    other = paid_order(client, user)["out_trade_no"]
    assert run(runner, "ship", other, "--virtual").exit_code == 0
    db.session.execute(update(Order).where(Order.out_trade_no == other)
                       .values(status="completed", received_at=utcnow()))
    db.session.commit()
    late = run(runner, "ship", other, "--virtual", "--change")
    assert late.exit_code == 1 and "confirmed receipt" in late.stderr
    assert json.loads(run(runner, "list", "--status", "completed", "--json").stdout)[0]["out_trade_no"] == other


def test_split_shipping_is_shipped_when_everything_is(app, client, user, runner):
    no = paid_order(client, user)["out_trade_no"]
    first = run(runner, "ship", no, "--express", "YD", "--split", "--tracking", "D1", "--tracking", "D2", "--json")
    assert first.exit_code == 0, first.stderr
    assert fresh(no).status == "paid" and fresh(no).shipped_at is None  # not everything yet
    assert len(view(client, user, no)["shipments"]) == 2
    unified = run(runner, "ship", no, "--express", "YD", "--tracking", "D3")
    assert unified.exit_code == 1 and "--split" in unified.stderr
    dup = run(runner, "ship", no, "--express", "YD", "--split", "--tracking", "D2")
    assert dup.exit_code == 1 and "already shipped D2" in dup.stderr
    many = run(runner, "ship", no, "--express", "YD", "--split", *[a for i in range(14) for a in ("--tracking", f"E{i}")])
    assert many.exit_code == 1 and "at most 15" in many.stderr
    last = run(runner, "ship", no, "--express", "YD", "--split", "--tracking", "D3", "--all-delivered")
    assert last.exit_code == 0, last.stderr
    o = fresh(no)
    assert o.status == "shipped" and o.shipped_at is not None
    bodies = [u["body"] for u in sandbox_uploads(client, no)]
    assert [(b["delivery_mode"], b["is_all_delivered"], len(b["shipping_list"])) for b in bodies] == [
        (2, False, 2), (2, True, 1)]
    state = client.get("/sandbox/control/shipping", query_string={"out_trade_no": no}).get_json()["order_state"]
    assert state == 2


def test_concurrent_ship_of_one_order_gives_one_shipment(app, client, user):
    no = paid_order(client, user)["out_trade_no"]
    db.session.commit()
    results: list[str] = []

    def ship_it(tracking: str):
        with app.app_context():
            try:
                outcome = shipping.ship_order(fresh(no), "express", [shipping.PackageIn(tracking, "EMS")])
                results.append(f"shipped:{outcome.upload_state}")
            except shipping.ApiError as err:
                results.append(err.code)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=ship_it, args=(f"E{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4 and results.count("shipped:uploaded") == 1
    assert set(results) - {"shipped:uploaded"} <= {"order_shipped", "upload_pending"}
    assert len(shipments_of(no)) == 1 and upload_calls(client) == 1


def test_two_processes_shipping_one_order_give_one_shipment(app, client, user, env):
    no = paid_order(client, user)["out_trade_no"]
    db.session.commit()
    full_env = {**os.environ, **env, "FLASK_APP": "wsgi:app"}
    flask = str(Path(sys.executable).parent / "flask")
    procs = [subprocess.Popen([flask, "orders", "ship", no, "--express", "JD", "--tracking", f"JD{i}"], env=full_env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    codes = sorted(p.wait(60) for p in procs)
    assert codes == [0, 1], [p.stderr.read() for p in procs]
    assert len(shipments_of(no)) == 1 and shipments_of(no)[0].upload_state == "uploaded"


# -- refunds of shipped orders ---------------------------------------------------------------------------

def test_refunding_a_shipped_order_follows_the_refund_rules(app, client, user, runner):
    no = paid_order(client, user)["out_trade_no"]
    assert run(runner, "ship", no, "--virtual").exit_code == 0
    part = refunds.refund_order(fresh(no), fee=600)
    assert part.refund.status == "success"
    assert fresh(no).status == "shipped" and fresh(no).refunded_fee == 600  # a partial refund: still shipped
    client.post("/sandbox/control/refund-behaviour", json={"fail_next": "NOTENOUGH"})
    refused = refunds.refund_order(fresh(no), fee=100)
    assert refused.refund.status == "failed" and fresh(no).status == "shipped"
    client.post("/sandbox/control/refund-behaviour", json={"hold_notifications": True})
    held = refunds.refund_order(fresh(no))
    assert held.refund.status == "processing" and fresh(no).status == "refunding"
    blocked = run(runner, "ship", no, "--virtual", "--change")
    assert blocked.exit_code == 1 and "refunding and cannot be shipped" in blocked.stderr
    client.post("/sandbox/control/refund-notify", json={"out_refund_no": held.refund.out_refund_no})
    assert fresh(no).status == "refunded" and fresh(no).refunded_fee == 3600
    assert run(runner, "ship", no, "--virtual", "--change").exit_code == 1
    client.post("/sandbox/control/refund-behaviour", json={"hold_notifications": False})

    completed = paid_order(client, user)["out_trade_no"]
    assert run(runner, "ship", completed, "--virtual").exit_code == 0
    db.session.execute(update(Order).where(Order.out_trade_no == completed)
                       .values(status="completed", received_at=utcnow()))
    db.session.commit()
    refunds.refund_order(fresh(completed), fee=100)
    assert fresh(completed).status == "completed" and fresh(completed).refunded_fee == 100
    refunds.refund_order(fresh(completed))
    assert fresh(completed).status == "refunded"


def test_a_refunded_order_cannot_be_shipped(app, client, user, runner):
    no = paid_order(client, user)["out_trade_no"]
    refunds.refund_order(fresh(no))
    result = run(runner, "ship", no, "--virtual")
    assert result.exit_code == 1 and "refunded and cannot be shipped" in result.stderr
    assert shipments_of(no) == []


# -- virtual goods shipped on payment --------------------------------------------------------------------

def test_auto_ship_virtual_ships_on_payment_after_the_commit(make_app):
    app = make_app(AUTO_SHIP_VIRTUAL="1")
    with app.app_context():
        from .conftest import bearer, login

        client = app.test_client()
        user = {"headers": bearer(login(client)["token"])}
        order = new_order(client, user)
        no = order["out_trade_no"]
        client.post("/sandbox/control/pay", json=prepay(client, user, order))
        o = fresh(no)
        assert o.status == "shipped" and [(s.logistics_type, s.upload_state) for s in o.shipments] == [
            ("virtual", "uploaded")]
        assert o.payments[0].created_at <= o.shipments[0].created_at
        assert sandbox_uploads(client, no)[0]["body"]["logistics_type"] == 3


def test_auto_ship_virtual_is_caught_up_by_reconcile(make_app, monkeypatch):
    app = make_app(AUTO_SHIP_VIRTUAL="1")
    with app.app_context():
        from .conftest import bearer, login

        client, runner = app.test_client(), app.test_cli_runner()
        user = {"headers": bearer(login(client)["token"])}
        real = shipping.auto_ship_virtual
        monkeypatch.setattr(shipping, "auto_ship_virtual", lambda no: None)  # the process died right after paying
        order = new_order(client, user)
        client.post("/sandbox/control/pay", json=prepay(client, user, order))
        no = order["out_trade_no"]
        assert fresh(no).status == "paid" and shipments_of(no) == []
        monkeypatch.setattr(shipping, "auto_ship_virtual", real)
        summary = json.loads(runner.invoke(args=["orders", "reconcile", "--older-than", "0", "--json"]).stdout)
        assert summary["auto_shipped"] == 1
        assert fresh(no).status == "shipped" and shipments_of(no)[0].upload_state == "uploaded"


# -- a batch from a CSV file -----------------------------------------------------------------------------

def test_ship_batch_reports_bad_lines_and_ships_the_rest(app, client, user, runner, tmp_path):
    good = [paid_order(client, user)["out_trade_no"] for _ in range(3)]
    unpaid = new_order(client, user)["out_trade_no"]
    csv_file = tmp_path / "today.csv"
    csv_file.write_text("\ufeffout_trade_no,logistics,express_company,tracking_no,item_desc,receiver_phone\n"
                        f"{good[0]},express,ZTO,Z100,,\n"
                        f"nosuchorder,express,ZTO,Z101,,\n"
                        f"{good[1]},,BOGUS,B1,,\n"
                        f"{unpaid},virtual,,,,\n"
                        "\n"
                        f"{good[2]},virtual,,,会员卡*1,\n", encoding="utf-8")
    result = run(runner, "ship-batch", str(csv_file))
    assert result.exit_code == 1
    assert "line 3: refused: no order nosuchorder" in result.stderr
    assert "line 4: refused: unknown express company code 'BOGUS'" in result.stderr
    assert "line 5: refused:" in result.stderr and "only paid orders" in result.stderr
    assert "2 shipped (2 uploaded to WeChat), 3 refused" in result.stdout
    assert fresh(good[0]).status == "shipped" and fresh(good[2]).status == "shipped"
    assert fresh(good[1]).status == "paid" and shipments_of(good[1]) == []
    data = json.loads(run(runner, "ship-batch", str(csv_file), "--json").stdout)
    assert [(e["line"], e["ok"]) for e in data["lines"]] == [(2, False), (3, False), (4, False), (5, False),
                                                            (7, False)]  # shipped ones are refused as shipped now
    ok = tmp_path / "ok.csv"
    ok.write_text(f"out_trade_no,express_company,tracking_no\n{good[1]},YTO,Y55\n", encoding="utf-8")
    assert run(runner, "ship-batch", str(ok)).exit_code == 0 and fresh(good[1]).status == "shipped"
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("order,carrier\nx,y\n", encoding="utf-8")
    assert run(runner, "ship-batch", str(bad_header)).exit_code == 2


# -- trade management and the jump path ------------------------------------------------------------------

def test_trade_managed_says_it_plainly(app, client, runner, monkeypatch):
    result = run(runner, "trade-managed")
    assert result.exit_code == 0 and "IS trade-managed" in result.stdout
    behave(client, trade_managed=False)
    data = json.loads(run(runner, "trade-managed", "--json").stdout)
    assert data["trade_managed"] is False and "NOT trade-managed" in data["message"]

    def down(*_, **__):
        raise WeChatUnavailable("no answer from WeChat (ConnectionError)")

    monkeypatch.setattr(wechat.miniapp, "is_trade_managed", down)
    assert run(runner, "trade-managed").exit_code == 3


def test_the_start_check_logs_once_and_never_fails(app, client, caplog, monkeypatch):
    from miniapp_server.services.trade_management import check_at_start

    with caplog.at_level("WARNING"):
        check_at_start(app).join(10)
        assert check_at_start(app).join(10) is None  # a second worker of the same start does not ask again
    assert sum("IS trade-managed" in r.getMessage() for r in caplog.records) == 1
    assert client.get("/sandbox/control/calls").get_json()["is_trade_managed"] == 1
    app.config["WECHAT_TRADE_MANAGED_CHECK"] = False
    assert check_at_start(app) is None


def test_set_jump_path_points_wechats_messages_at_the_order_page(app, client, runner):
    result = run(runner, "set-jump-path")
    assert result.exit_code == 0 and "pages/order-detail/order-detail" in result.stdout
    assert client.get("/sandbox/control/shipping").get_json()["jump_path"] == "pages/order-detail/order-detail"
    assert run(runner, "set-jump-path", "/absolute").exit_code == 2
    app_json = json.loads((ROOT / "miniprogram" / "app.json").read_text())
    assert "pages/order-detail/order-detail" in app_json["pages"]  # the default is a page the mini-program has


# -- the sandbox's side of it ------------------------------------------------------------------------------

def _sandbox_upload(client, token: str, body) -> dict:
    return client.post(f"/sandbox{UPLOAD}", query_string={"access_token": token}, json=body).get_json()


def test_the_sandbox_validates_as_wechat_does(app, client, user):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    o = fresh(no)
    token = wechat.access_token.get()
    good = protocol.upload_body(key=protocol.order_key(mchid=app.config["WECHAT_MCH_ID"], out_trade_no=no),
                                logistics_type="express", openid=o.user.openid, upload_time=utcnow(),
                                packages=[protocol.Package("x*1", "Z1", "ZTO")])
    assert _sandbox_upload(client, "", good)["errcode"] == 41001
    assert _sandbox_upload(client, "not-a-token", good)["errcode"] == 40001
    cases = [
        ({**good, "shipping_list": good["shipping_list"][0]}, 47001),  # an object, not an array
        ({**good, "logistics_type": 5}, 47001),
        ({**good, "shipping_list": [{"item_desc": "x", "tracking_no": "1", "express_company": "SF"}]}, 47001),
        ({**good, "shipping_list": [{"item_desc": "y" * 121, "tracking_no": "1", "express_company": "ZTO"}]}, 47001),
        ({**good, "delivery_mode": 2}, 47001),  # split without is_all_delivered
        ({**good, "upload_time": "2022-12-15 13:29:35"}, 268485216),
        ({**good, "order_key": protocol.order_key(mchid=app.config["WECHAT_MCH_ID"], out_trade_no="nope")}, 10060001),
        ({**good, "order_key": protocol.order_key(transaction_id="4200000000000000")}, 10060001),
        ({**good, "payer": {"openid": "someone-else"}}, 10060031),
    ]
    for body, errcode in cases:
        assert _sandbox_upload(client, token, body)["errcode"] == errcode, body
    unpaid = new_order(client, user)["out_trade_no"]
    prepay(client, user, {"out_trade_no": unpaid})
    not_paid = {**good, "order_key": protocol.order_key(mchid=app.config["WECHAT_MCH_ID"], out_trade_no=unpaid)}
    assert _sandbox_upload(client, token, not_paid)["errcode"] == 10060001
    by_txn = {**good, "order_key": protocol.order_key(transaction_id=o.transaction_id)}
    assert _sandbox_upload(client, token, by_txn) == {"errcode": 0, "errmsg": "ok"}
    later = {**by_txn, "upload_time": protocol.rfc3339(utcnow() + timedelta(seconds=5))}
    assert _sandbox_upload(client, token, later)["errcode"] == 0  # the one re-shipping
    last = {**by_txn, "upload_time": protocol.rfc3339(utcnow() + timedelta(seconds=10))}
    assert _sandbox_upload(client, token, last)["errcode"] == 10060003
    verdicts = [u["verdict"] for u in sandbox_uploads(client) if u["out_trade_no"] == no]
    assert verdicts[-3:] == ["ok", "ok", 10060003]

    got = client.post("/sandbox/wxa/sec/order/get_order", query_string={"access_token": token},
                      json={"transaction_id": o.transaction_id}).get_json()
    assert got["errcode"] == 0 and got["order"]["order_state"] == 2 and got["order"]["merchant_trade_no"] == no
    assert got["order"]["shipping"]["shipping_list"][0]["tracking_no"] == "Z1"
    managed = client.post("/sandbox/wxa/sec/order/is_trade_managed", query_string={"access_token": token},
                          json={"appid": "wx-someone-else"}).get_json()
    assert managed["errcode"] == 40013


def test_the_sandbox_tells_an_orders_state_and_takes_a_receipt(app, client, user):
    from miniapp_server.sandbox.routes import shipping_desk

    order = paid_order(client, user)
    no = order["out_trade_no"]
    desk = shipping_desk()
    txn = fresh(no).transaction_id
    assert desk.order_state(out_trade_no=no) == 1 and desk.order_state(transaction_id=txn) == 1
    assert desk.mark_receipt_confirmed(out_trade_no=no) is None  # not shipped: nothing to confirm
    shipping.ship_order(fresh(no), "virtual")
    assert desk.order_state(transaction_id=txn) == 2
    confirmed = desk.mark_receipt_confirmed(transaction_id=txn)
    assert confirmed["order_state"] == 3 and confirmed["confirm_receive_time"] > 0
    assert desk.order_state(out_trade_no=no) == 3
    assert desk.order_state(out_trade_no="nope") is None
    token = wechat.access_token.get()
    late = protocol.upload_body(key=protocol.order_key(transaction_id=txn), logistics_type="virtual",
                                openid=fresh(no).user.openid, upload_time=utcnow() + timedelta(seconds=1),
                                packages=[protocol.Package("x")])
    assert _sandbox_upload(client, token, late)["errcode"] == 10060004  # receipt confirmed: no more changes
    refunded = paid_order(client, user)["out_trade_no"]
    refunds.refund_order(fresh(refunded))
    assert desk.order_state(out_trade_no=refunded) == 5


def test_the_standalone_sandbox_serves_the_shipping_calls(tmp_path, env):
    from miniapp_server.sandbox.standalone import create_sandbox_app

    sandbox = create_sandbox_app(env={**env, "EMBEDDED_STORE_PATH": str(tmp_path / "alone.sqlite3"),
                                      "REDIS_URL": ""})
    c = sandbox.test_client()
    cfg = sandbox.config
    token = c.post("/sandbox/cgi-bin/stable_token", json={"grant_type": "client_credential", "appid": cfg["WECHAT_APPID"],
                                                          "secret": cfg["WECHAT_APPSECRET"]}).get_json()["access_token"]
    assert c.post("/sandbox/wxa/sec/order/is_trade_managed", query_string={"access_token": token},
                  json={"appid": cfg["WECHAT_APPID"]}).get_json() == {"errcode": 0, "errmsg": "ok",
                                                                     "is_trade_managed": True}
    body = {"order_key": {"order_number_type": 1, "mchid": cfg["WECHAT_MCH_ID"], "out_trade_no": "unknown1"},
            "logistics_type": 3, "delivery_mode": 1, "shipping_list": [{"item_desc": "x"}],
            "upload_time": protocol.rfc3339(utcnow()), "payer": {"openid": "o1"}}
    answer = c.post(f"/sandbox{UPLOAD}", query_string={"access_token": token}, json=body)
    assert answer.headers["X-WeChat-Sandbox"] == "1" and answer.get_json()["errcode"] == 10060001
    assert c.get("/sandbox/control/shipping").get_json()["items"][0]["verdict"] == 10060001



def test_reading_a_shipped_order_is_still_one_query(app, client, user):
    from .test_hot_paths import statements

    no = paid_order(client, user)["out_trade_no"]
    shipping.ship_order(fresh(no), "express", [shipping.PackageIn("Z1", "ZTO")])
    db.session.remove()
    with statements() as seen:
        shown = view(client, user, no)
    assert shown["shipments"][0]["tracking_no"] == "Z1" and seen.count("SELECT") == 1


def test_a_real_server_asks_whether_it_is_trade_managed_once_at_start(gunicorn):
    import time

    server = gunicorn("--workers", "2", "--threads", "2")
    deadline = time.monotonic() + 20
    calls = {}
    while time.monotonic() < deadline:
        calls = requests.get(server.url + "/sandbox/control/calls", timeout=10).json()
        if calls["is_trade_managed"]:
            break
        time.sleep(0.1)
    time.sleep(0.5)  # the second worker had its chance too
    assert requests.get(server.url + "/sandbox/control/calls", timeout=10).json()["is_trade_managed"] == 1


def test_a_native_payment_is_uploaded_with_the_openid_of_whoever_paid(app, client, user):
    from miniapp_server.sandbox.routes import emulator

    order = new_order(client, user)
    no = order["out_trade_no"]
    code_url = client.post(f"/api/orders/{no}/native", headers=user["headers"]).get_json()["code_url"]
    assert client.post("/sandbox/control/scan", json={"code_url": code_url, "payer": "a-passer-by"}).status_code == 200
    scanner = emulator().openid_for("a-passer-by")
    o = fresh(no)
    assert o.status == "paid" and o.payments[0].payer_openid == scanner != o.user.openid
    outcome = shipping.ship_order(o, "pickup")
    assert outcome.upload_state == "uploaded", outcome.error
    (upload,) = sandbox_uploads(client, no)
    assert upload["body"]["payer"] == {"openid": scanner}  # WeChat: 10060031 for anyone but the payer
