"""JSAPI pay: unified order through the sandbox, the second signature, and the wrong states."""

from datetime import timedelta

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import Order, utcnow
from miniapp_server.wechat.pay import signing, xmlcodec

from .conftest import bearer, login


def pay(client, user, order):
    return client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=user["headers"])


@pytest.mark.pay_api("v2")  # v2's XML and keys by nature; v3's counterpart is in test_v3_app.py
@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
def test_pay_answers_what_wx_request_payment_takes(make_app, sign_type):
    app = make_app(WECHAT_SIGN_TYPE=sign_type)
    client = app.test_client()
    headers = bearer(login(client)["token"])
    order = client.post("/api/orders", headers=headers, json={"items": [{"product_id": 1, "quantity": 1}]}).get_json()
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=headers)
    assert resp.status_code == 200
    params = resp.get_json()
    assert set(params) == {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["signType"] == sign_type and params["package"].startswith("prepay_id=wx")
    assert params["appId"] == app.config["WECHAT_APPID"]
    key = app.config["WECHAT_PAY_KEY"]
    assert signing.verify({**{k: v for k, v in params.items() if k != "paySign"}, "sign": params["paySign"]}, key, sign_type)
    with app.app_context():
        stored = db.session.execute(db.select(Order)).scalar_one()
        assert stored.trade_type == "JSAPI" and params["package"] == f"prepay_id={stored.prepay_id}"
        assert stored.prepay_expires_at <= stored.expires_at


@pytest.mark.pay_api("v2")  # v2's XML and keys by nature; v3's counterpart is in test_v3_app.py
def test_unified_order_carries_what_wechat_needs(app, client, user, order, monkeypatch):
    sent = {}
    real = app.extensions["wechat"].pay.http.post

    def spy(url, data=None, **kw):
        if url.endswith("/pay/unifiedorder"):
            sent.update(xmlcodec.loads(data))
        return real(url, data=data, **kw)

    monkeypatch.setattr(app.extensions["wechat"].pay.http, "post", spy)
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=user["headers"],
                       environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert resp.status_code == 200
    assert sent["trade_type"] == "JSAPI" and sent["openid"] == user["user"]["openid"]
    assert sent["total_fee"] == "3600" and sent["out_trade_no"] == order["out_trade_no"]
    assert sent["spbill_create_ip"] == "203.0.113.7"
    assert sent["notify_url"] == "http://localhost/api/pay/notify"
    assert len(sent["time_expire"]) == 14 and sent["body"] == "拿铁咖啡 Latte"
    assert signing.verify(sent, app.config["WECHAT_PAY_KEY"], "MD5")


def test_client_ip_behind_a_proxy(make_app, monkeypatch):
    app = make_app(PROXY_FIX_HOPS=1)
    client = app.test_client()
    headers = bearer(login(client)["token"])
    order = client.post("/api/orders", headers=headers, json={"items": [{"product_id": 1, "quantity": 1}]}).get_json()
    seen = {}
    real = app.extensions["wechat"].gateway.prepay
    monkeypatch.setattr(app.extensions["wechat"].gateway, "prepay", lambda **kw: seen.update(kw) or real(**kw))
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers={**headers, "X-Forwarded-For": "198.51.100.4"})
    assert resp.status_code == 200 and seen["client_ip"] == "198.51.100.4"


def test_prepay_is_reused_while_valid(app, client, user, order):
    calls = lambda: client.get("/sandbox/control/calls").get_json()["unifiedorder"]  # noqa: E731
    first = pay(client, user, order).get_json()
    second = pay(client, user, order).get_json()
    assert first["package"] == second["package"] and calls() == 1
    assert first["nonceStr"] != second["nonceStr"]  # signed afresh each time
    stored = db.session.execute(db.select(Order)).scalar_one()
    stored.prepay_expires_at = utcnow() + timedelta(seconds=30)  # about to expire: ask again
    db.session.commit()
    pay(client, user, order)
    assert calls() == 2


def test_paying_a_paid_or_closed_order_is_409(client, user, order):
    params = pay(client, user, order).get_json()
    assert client.post("/sandbox/control/pay", json=params).status_code == 200
    resp = pay(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_paid"
    db.session.execute(db.update(Order).values(status="closed"))
    db.session.commit()
    resp = pay(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_closed"


def test_an_expired_order_cannot_be_paid(client, user, order):
    db.session.execute(db.update(Order).values(expires_at=utcnow() + timedelta(minutes=2)))
    db.session.commit()
    resp = pay(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_expired"


def _forget_prepay():
    db.session.execute(db.update(Order).values(prepay_id=None, prepay_expires_at=None, trade_type=None))
    db.session.commit()


def test_wechat_orderpaid_is_learnt_not_crashed_on(client, user, order):
    params = pay(client, user, order).get_json()
    # Paid at WeChat, but the notification never arrived and our prepay was lost.
    client.application.extensions["sandbox"].pay_order(order["out_trade_no"])
    db.session.execute(db.update(Order).values(status="unpaid", transaction_id=None, paid_at=None))
    db.session.execute(db.text("DELETE FROM payments"))
    db.session.commit()
    _forget_prepay()
    resp = pay(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_paid"
    assert db.session.execute(db.select(Order)).scalar_one().status == "paid"
    assert params["package"]


def test_wechat_orderclosed_closes_here_too(client, user, order):
    pay(client, user, order)
    emu = client.application.extensions["sandbox"]
    stored = emu.load_order(order["out_trade_no"])
    stored["state"] = "CLOSED"
    emu.save_order(stored)
    _forget_prepay()
    resp = pay(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_closed"
    assert db.session.execute(db.select(Order)).scalar_one().status == "closed"


def test_wechat_out_trade_no_used_is_a_conflict(client, user, order):
    pay(client, user, order)
    emu = client.application.extensions["sandbox"]
    stored = emu.load_order(order["out_trade_no"])
    stored["total_fee"] = "1"  # WeChat holds this number with other details
    emu.save_order(stored)
    _forget_prepay()
    resp = pay(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "out_trade_no_used"
    assert db.session.execute(db.select(Order)).scalar_one().status == "unpaid"


@pytest.mark.pay_api("v2")  # v2's XML and keys by nature; v3's counterpart is in test_v3_app.py
def test_wechat_signature_errors_and_outages_are_502_or_503(make_app):
    app = make_app()
    client = app.test_client()
    headers = bearer(login(client)["token"])
    order = client.post("/api/orders", headers=headers, json={"items": [{"product_id": 1, "quantity": 1}]}).get_json()
    pay_client = app.extensions["wechat"].pay
    from miniapp_server.wechat.pay.client import PayCredentials
    good = pay_client.creds
    pay_client.creds = PayCredentials(good.appid, good.mch_id, "wrong-key-wrong-key-wrong-key-00", good.sign_type)
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=headers)
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "wechat_pay_error"
    assert "wrong-key" not in resp.get_data(as_text=True)
    pay_client.creds = good
    pay_client.base = "http://127.0.0.1:9"  # nothing listens
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=headers)
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "wechat_unavailable"
    with app.app_context():
        assert db.session.execute(db.select(Order)).scalar_one().prepay_id is None


@pytest.mark.pay_api("v2")  # v2's XML and keys by nature; v3's counterpart is in test_v3_app.py
def test_a_forged_wechat_answer_is_not_believed(app, client, user, order, monkeypatch):
    from miniapp_server.sandbox.emulator import Emulator
    real = Emulator._answer

    def tampered(self, fields, sign_type):
        body = xmlcodec.loads(real(self, fields, sign_type))
        body["prepay_id"] = "wx_attacker_prepay"
        return xmlcodec.dumps(body)

    monkeypatch.setattr(Emulator, "_answer", tampered)
    resp = pay(client, user, order)
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "wechat_bad_signature"
    assert db.session.execute(db.select(Order)).scalar_one().prepay_id is None


def test_api_key_and_signed_string_never_logged(app, client, user, order, caplog):
    caplog.set_level("DEBUG")
    params = pay(client, user, order).get_json()
    client.post("/sandbox/control/pay", json=params)
    key = app.config["WECHAT_PAY_KEY"]
    assert "unifiedorder" in caplog.text or "transactions" in caplog.text  # the calls were logged...
    assert key not in caplog.text and "&key=" not in caplog.text  # ...without the key or the signed string
