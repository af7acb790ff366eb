"""APP pay: unified order with trade_type=APP, and the app SDK's PayReq parameters signed a second time."""

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import Order
from miniapp_server.wechat.pay import signing, xmlcodec

from .conftest import bearer, login

APP_FIELDS = ("appid", "partnerid", "prepayid", "package", "noncestr", "timestamp")


def app_pay(client, headers, order):
    return client.post(f"/api/orders/{order['out_trade_no']}/app-pay", headers=headers)


def new_order(client, headers):
    resp = client.post("/api/orders", headers=headers, json={"items": [{"product_id": 1, "quantity": 2}]})
    assert resp.status_code == 201
    return resp.get_json()


@pytest.mark.pay_api("v2")  # v2's XML and keys by nature; v3's counterpart is in test_v3_app.py
@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
def test_app_pay_answers_the_sdk_params_signed_over_exactly_six_fields(make_app, sign_type):
    app = make_app(WECHAT_SIGN_TYPE=sign_type)
    client = app.test_client()
    headers = bearer(login(client)["token"])
    order = new_order(client, headers)
    resp = app_pay(client, headers, order)
    assert resp.status_code == 200
    params = resp.get_json()
    assert set(params) == {*APP_FIELDS, "sign"}
    assert params["appid"] == app.config["WECHAT_APPID"] and params["partnerid"] == app.config["WECHAT_MCH_ID"]
    assert params["package"] == "Sign=WXPay" and params["timestamp"].isdigit() and len(params["noncestr"]) == 32
    key = app.config["WECHAT_PAY_KEY"]
    # The rule: sign exactly these six fields with the merchant key and the unified order's sign type.
    expected = signing.sign({k: params[k] for k in APP_FIELDS}, key, sign_type)
    assert params["sign"] == expected
    # Any other field set gives another signature: the six are all in, and nothing else is.
    assert signing.sign({k: params[k] for k in APP_FIELDS[:-1]}, key, sign_type) != expected
    assert signing.sign({**{k: params[k] for k in APP_FIELDS}, "signType": sign_type}, key, sign_type) != expected
    with app.app_context():
        stored = db.session.execute(db.select(Order)).scalar_one()
        assert stored.trade_type == "APP" and params["prepayid"] == stored.prepay_id


def test_app_sign_rule_against_a_fixed_input(app):
    # Fixed prepay, time and nonce: the answer is the MD5 of the sorted k=v string plus the key.
    params = app.extensions["wechat"].pay.app_params("wx201410272009395522657a690389285100", timestamp=1414488825,
                                                     nonce_str="1add1a30ac87aa2db72f57a2375d8fec")
    import hashlib
    key = app.config["WECHAT_PAY_KEY"]
    plain = (f"appid={app.config['WECHAT_APPID']}&noncestr=1add1a30ac87aa2db72f57a2375d8fec&package=Sign=WXPay"
             f"&partnerid={app.config['WECHAT_MCH_ID']}&prepayid=wx201410272009395522657a690389285100"
             f"&timestamp=1414488825&key={key}")
    assert params["sign"] == hashlib.md5(plain.encode()).hexdigest().upper()


@pytest.mark.pay_api("v2")  # v2's XML and keys by nature; v3's counterpart is in test_v3_app.py
def test_unified_order_for_app(app, client, user, order, monkeypatch):
    sent = {}
    real = app.extensions["wechat"].pay.http.post
    monkeypatch.setattr(app.extensions["wechat"].pay.http, "post",
                        lambda url, data=None, **kw: (sent.update(xmlcodec.loads(data)) if url.endswith("/unifiedorder")
                                                      else None) or real(url, data=data, **kw))
    assert app_pay(client, user["headers"], order).status_code == 200
    assert sent["trade_type"] == "APP" and "openid" not in sent and sent["total_fee"] == "3600"


def test_app_prepay_is_reused_and_signed_afresh(client, user, order):
    first = app_pay(client, user["headers"], order).get_json()
    second = app_pay(client, user["headers"], order).get_json()
    assert first["prepayid"] == second["prepayid"] and first["noncestr"] != second["noncestr"]
    assert client.get("/sandbox/control/calls").get_json()["unifiedorder"] == 1


def test_app_params_pay_through_the_sandbox(client, user, order):
    params = app_pay(client, user["headers"], order).get_json()
    resp = client.post("/sandbox/control/pay", json=params)
    assert resp.status_code == 200 and resp.get_json()["notification"]["acknowledged"] is True
    paid = client.get(f"/api/orders/{order['out_trade_no']}", headers=user["headers"]).get_json()
    assert paid["status"] == "paid" and paid["trade_type"] == "APP"
    again = client.post("/sandbox/control/pay", json=params)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "order_paid"


@pytest.mark.pay_api("v2")  # v2's XML and keys by nature; v3's counterpart is in test_v3_app.py
def test_sandbox_refuses_tampered_or_foreign_app_params(app, client, user, order):
    params = app_pay(client, user["headers"], order).get_json()
    tampered = {**params, "sign": params["sign"][:-1] + ("0" if params["sign"][-1] != "0" else "1")}
    resp = client.post("/sandbox/control/pay", json=tampered)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_pay_sign"
    # Correctly signed, but not this merchant's partnerid: WeChat would not take it either.
    foreign = {**{k: params[k] for k in APP_FIELDS}, "partnerid": "1234567890"}
    foreign["sign"] = signing.sign(foreign, app.config["WECHAT_PAY_KEY"])
    resp = client.post("/sandbox/control/pay", json=foreign)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_params"
    # The APP prepay cannot be paid as if it were a mini-program (JSAPI) one.
    jsapi = app.extensions["wechat"].pay.jsapi_params(params["prepayid"])
    resp = client.post("/sandbox/control/pay", json=jsapi)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "trade_type_mismatch"
    assert client.get(f"/api/orders/{order['out_trade_no']}", headers=user["headers"]).get_json()["status"] == "unpaid"


def test_another_users_order_is_404_and_no_login_is_401(client, user, order):
    stranger = bearer(login(client)["token"])
    resp = app_pay(client, stranger, order)
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    assert client.post(f"/api/orders/{order['out_trade_no']}/app-pay").status_code == 401
    assert client.get("/sandbox/control/calls").get_json()["unifiedorder"] == 0


def test_an_order_being_paid_by_app_cannot_switch(client, user, order):
    assert app_pay(client, user["headers"], order).status_code == 200
    for path in ("native", "pay"):
        resp = client.post(f"/api/orders/{order['out_trade_no']}/{path}", headers=user["headers"])
        assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "trade_type_conflict"
