"""The sandbox speaks WeChat's protocol: signatures checked, WeChat's codes, notifications retried on schedule."""

import time

import pytest
from flask import current_app

from miniapp_server.extensions import db
from miniapp_server.models import Order
from miniapp_server.sandbox import emulator as emulator_module
from miniapp_server.wechat.pay import signing, xmlcodec

from .conftest import lose_notifications
from .test_pay import pay


def pay_api(app, client, path, **fields):
    pay_client = app.extensions["wechat"].pay
    body = xmlcodec.dumps(pay_client.signed(fields))
    return xmlcodec.loads(client.post("/sandbox" + path, data=body, content_type="text/xml").data)


def test_unifiedorder_checks_the_signature_like_wechat(app, client):
    fields = {"appid": app.config["WECHAT_APPID"], "mch_id": app.config["WECHAT_MCH_ID"], "nonce_str": "n",
              "body": "x", "out_trade_no": "T1", "total_fee": "1", "spbill_create_ip": "127.0.0.1",
              "notify_url": "http://x/n", "trade_type": "NATIVE"}
    fields["sign"] = signing.sign(fields, "not-the-key")
    answer = xmlcodec.loads(client.post("/sandbox/pay/unifiedorder", data=xmlcodec.dumps(fields)).data)
    assert answer["return_code"] == "FAIL" and answer["return_msg"] == "签名错误"
    assert "sign" not in answer  # WeChat signs nothing it refuses at the door
    bad_xml = xmlcodec.loads(client.post("/sandbox/pay/unifiedorder", data=b"<xml><a>").data)
    assert bad_xml["return_code"] == "FAIL"


def test_unifiedorder_param_errors_are_signed_result_fails(app, client):
    answer = pay_api(app, client, "/pay/unifiedorder", body="x", out_trade_no="T2", total_fee=1,
                     spbill_create_ip="127.0.0.1", notify_url="http://x/n", trade_type="JSAPI")  # no openid
    assert answer["return_code"] == "SUCCESS" and answer["result_code"] == "FAIL"
    assert answer["err_code"] == "PARAM_ERROR"
    assert signing.verify(answer, app.config["WECHAT_PAY_KEY"])


def test_query_close_and_their_codes(app, client):
    assert pay_api(app, client, "/pay/orderquery", out_trade_no="nope")["err_code"] == "ORDERNOTEXIST"
    made = pay_api(app, client, "/pay/unifiedorder", body="x", out_trade_no="T3", total_fee=5,
                   spbill_create_ip="127.0.0.1", notify_url="http://x/n", trade_type="NATIVE", product_id="p1")
    assert made["result_code"] == "SUCCESS" and made["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    assert pay_api(app, client, "/pay/orderquery", out_trade_no="T3")["trade_state"] == "NOTPAY"
    assert pay_api(app, client, "/pay/closeorder", out_trade_no="T3")["result_code"] == "SUCCESS"
    assert pay_api(app, client, "/pay/orderquery", out_trade_no="T3")["trade_state"] == "CLOSED"
    again = pay_api(app, client, "/pay/unifiedorder", body="x", out_trade_no="T3", total_fee=5,
                    spbill_create_ip="127.0.0.1", notify_url="http://x/n", trade_type="NATIVE", product_id="p1")
    assert again["err_code"] == "ORDERCLOSED"


def test_control_pay_checks_pay_sign_and_pays_once(client, user, order):
    params = pay(client, user, order).get_json()
    forged = {**params, "paySign": "0" * 32}
    resp = client.post("/sandbox/control/pay", json=forged)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_pay_sign"
    tampered = {**params, "package": "prepay_id=wx_other"}
    assert client.post("/sandbox/control/pay", json=tampered).status_code == 400
    for bad in (None, [], {"x": 1}):
        assert client.post("/sandbox/control/pay", json=bad).status_code == 400
    resp = client.post("/sandbox/control/pay", json=params)
    assert resp.status_code == 200 and resp.get_json()["notification"]["acknowledged"]
    again = client.post("/sandbox/control/pay", json=params)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "order_paid"


def test_unacknowledged_notifications_are_retried_on_wechats_schedule(app, client, user, order, monkeypatch):
    from miniapp_server.pay import routes as pay_routes
    real = pay_routes.handle_payment_notification
    refusals = {"left": 3}

    def flaky(body, remote_addr, headers=None, **kwargs):
        # Only this test's app refuses: retry threads left by other tests deliver to their own apps through
        # the same (patched) view function, and must not use up the refusals.
        if refusals["left"] and current_app._get_current_object() is app:
            refusals["left"] -= 1
            return False, "busy, try later", {}
        return real(body, remote_addr, headers=headers, **kwargs)

    monkeypatch.setattr(pay_routes, "handle_payment_notification", flaky)
    slept = []
    real_sleep = time.sleep
    params = pay(client, user, order).get_json()
    # This emulator's own pauses only: retry threads left by other tests sleep through their own.
    monkeypatch.setattr(app.extensions["sandbox"], "sleep", lambda s: slept.append(s) or real_sleep(s))
    first = client.post("/sandbox/control/pay", json=params).get_json()["notification"]
    assert first["attempt"] == 1 and not first["acknowledged"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        items = client.get("/sandbox/control/notifications", query_string={"out_trade_no": order["out_trade_no"]}).get_json()["items"]
        if items and items[-1]["acknowledged"]:
            break
        real_sleep(0.05)
    assert [(i["attempt"], i["acknowledged"]) for i in items] == [(1, False), (2, False), (3, False), (4, True)]
    scale = app.config["SANDBOX_TIME_SCALE"]
    assert slept[:3] == pytest.approx([15 * scale, 15 * scale, 30 * scale])
    assert emulator_module.RETRY_SCHEDULE == (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800,
                                              10800, 21600, 21600)
    db.session.rollback()
    assert db.session.execute(db.select(Order.status)).scalar_one() == "paid"


def test_closing_the_sandbox_stops_its_retries_at_once(app, client, user, order):
    # A refused notification is retried on WeChat's schedule from a thread; close() (a test's teardown, a
    # stopping process) wakes it from its pause and it gives up instead of writing into the next database.
    emu = app.extensions["sandbox"]
    emu.time_scale = 1.0  # the second attempt is 15 s away
    lose_notifications(app)
    params = pay(client, user, order).get_json()
    assert not client.post("/sandbox/control/pay", json=params).get_json()["notification"]["acknowledged"]
    started = time.monotonic()
    assert emu.close(timeout=5) == []
    assert time.monotonic() - started < 2
    items = client.get("/sandbox/control/notifications", query_string={"out_trade_no": order["out_trade_no"]}).get_json()["items"]
    assert [i["attempt"] for i in items] == [1]


def test_control_calls_count_what_the_backend_asked(client, user, order):
    before = client.get("/sandbox/control/calls").get_json()
    pay(client, user, order)
    after = client.get("/sandbox/control/calls").get_json()
    assert after["unifiedorder"] == before["unifiedorder"] + 1
    assert after["jscode2session"] >= 1


def test_standalone_sandbox_app_serves_only_wechat(tmp_path):
    from miniapp_server.sandbox.standalone import create_sandbox_app
    app = create_sandbox_app(env={"EMBEDDED_STORE_PATH": str(tmp_path / "store.sqlite3")})
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert "/sandbox/pay/unifiedorder" in rules and "/api/orders" not in rules
    resp = app.test_client().get("/sandbox/sns/jscode2session", query_string={
        "appid": app.config["WECHAT_APPID"], "secret": app.config["WECHAT_APPSECRET"], "js_code": "x",
        "grant_type": "authorization_code"})
    assert resp.get_json()["openid"] and resp.headers["X-WeChat-Sandbox"] == "1"
