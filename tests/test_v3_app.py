"""WeChat Pay v3 through the app, whatever WECHAT_PAY_API the suite runs on: the pay calls answer RSA-signed
parameters, /api/pay/notify and /refund-notify take v3 notifications (204 once recorded; forged headers, stale
timestamps, an unknown serial, a tampered body or another APIv3 key are refused with {"code": "FAIL"} and change
nothing), the settings and their production checks, and a migration from platform certificates to the public key."""

from __future__ import annotations

import json
import time

import pytest
from Crypto.PublicKey import RSA

from miniapp_server import ConfigError, create_app
from miniapp_server.extensions import db
from miniapp_server.models import Order, Payment, PaymentNotification
from miniapp_server.services import refunds
from miniapp_server.wechat.pay.v3 import crypto, signing
from miniapp_server.wechat.times import CHINA

from .conftest import bearer, login
from .ops_helpers import fresh, new_order, pay_in_sandbox, prepay

pytestmark = pytest.mark.pay_api("v3")

OTHER = RSA.generate(2048)


def desk(app):
    return app.extensions["sandbox"].v3


def merchant_public_key(app):
    return app.extensions["wechat"].pay_v3.creds.private_key.public_key()


def order_row(no: str) -> Order:
    return fresh(no)


def verdicts(no: str) -> list[str]:
    db.session.rollback()
    return list(db.session.execute(db.select(PaymentNotification.verdict).filter_by(out_trade_no=no)
                                   .order_by(PaymentNotification.id)).scalars())


def test_pay_answers_rsa_signed_request_payment_params(app, client, user):
    order = new_order(client, user)
    params = prepay(client, user, order)
    assert set(params) == {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["signType"] == "RSA" and params["appId"] == app.config["WECHAT_APPID"]
    message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    assert signing.verify(message, params["paySign"], merchant_public_key(app))
    assert params["package"] == f"prepay_id={order_row(order['out_trade_no']).prepay_id}"


def test_the_jsapi_prepay_carries_what_wechat_needs(app, client, user, monkeypatch):
    sent = {}
    session = app.extensions["wechat"].pay_v3.http
    real = session.request

    def spy(method, url, data=None, headers=None, **kw):
        if url.endswith("/v3/pay/transactions/jsapi"):
            sent.update(json.loads(data), authorization=headers["Authorization"])
        return real(method, url, data=data, headers=headers, **kw)

    monkeypatch.setattr(session, "request", spy)
    order = new_order(client, user)
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers={**user["headers"], "X-Request-Id": "v3-1"},
                       environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert resp.status_code == 200
    stored = order_row(order["out_trade_no"])
    assert sent["amount"] == {"total": 3600, "currency": "CNY"} and sent["payer"] == {"openid": user["user"]["openid"]}
    assert sent["mchid"] == app.config["WECHAT_MCH_ID"] and sent["appid"] == app.config["WECHAT_APPID"]
    assert sent["out_trade_no"] == order["out_trade_no"] and sent["description"] == "拿铁咖啡 Latte"
    assert sent["notify_url"] == "http://localhost/api/pay/notify" and sent["attach"] == "rid=v3-1"
    assert sent["scene_info"] == {"payer_client_ip": "203.0.113.7"}
    assert sent["time_expire"] == stored.expires_at.astimezone(CHINA).isoformat(timespec="seconds")
    assert sent["authorization"].startswith('WECHATPAY2-SHA256-RSA2048 mchid="')


def test_the_whole_journey_on_v3(app, client, user):
    order = new_order(client, user)
    no = order["out_trade_no"]
    paid = pay_in_sandbox(client, prepay(client, user, order))
    assert paid["notification"]["acknowledged"] and paid["notification"]["status"] == 204
    assert paid["notification"]["api"] == "v3"
    stored = order_row(no)
    assert stored.status == "paid" and stored.transaction_id == paid["transaction_id"]
    assert [p.source for p in stored.payments] == ["notify"]
    # sync asks WeChat (v3 query) and changes nothing more
    assert client.post(f"/api/orders/{no}/sync", headers=user["headers"]).get_json()["status"] == "paid"
    outcome = refunds.refund_order(fresh(no), fee=600)
    assert outcome.error is None and fresh(no).refunded_fee == 600
    assert {r.status for r in fresh(no).refunds} == {"success"}
    assert verdicts(no) == ["paid", "refunded"]


def test_native_and_app_on_v3(app, client, user):
    native = new_order(client, user)
    code = client.post(f"/api/orders/{native['out_trade_no']}/native", headers=user["headers"]).get_json()
    stored = order_row(native["out_trade_no"])
    assert code["code_url"].startswith("weixin://") and stored.prepay_id.startswith("native-")
    again = client.post(f"/api/orders/{native['out_trade_no']}/native", headers=user["headers"]).get_json()
    assert again["code_url"] == code["code_url"]  # still valid: the same code
    assert client.post("/sandbox/control/scan", json={"code_url": code["code_url"]}).status_code == 200
    assert order_row(native["out_trade_no"]).status == "paid"

    app_order = new_order(client, user)
    params = client.post(f"/api/orders/{app_order['out_trade_no']}/app-pay", headers=user["headers"]).get_json()
    message = f"{params['appid']}\n{params['timestamp']}\n{params['noncestr']}\n{params['prepayid']}\n".encode()
    assert params["package"] == "Sign=WXPay" and signing.verify(message, params["sign"], merchant_public_key(app))
    tampered = {**params, "timestamp": str(int(params["timestamp"]) + 1)}
    assert client.post("/sandbox/control/pay", json=tampered).get_json()["error"]["code"] == "bad_pay_sign"
    foreign = {**params, "partnerid": "1234567890"}  # signed right (partnerid is not signed in v3), not ours
    assert client.post("/sandbox/control/pay", json=foreign).get_json()["error"]["code"] == "invalid_params"
    jsapi = app.extensions["wechat"].gateway.jsapi_params(params["prepayid"])
    assert client.post("/sandbox/control/pay", json=jsapi).get_json()["error"]["code"] == "trade_type_mismatch"
    assert order_row(app_order["out_trade_no"]).status == "unpaid"
    assert client.post("/sandbox/control/pay", json=params).status_code == 200
    assert order_row(app_order["out_trade_no"]).status == "paid"


# -- the notify endpoint --------------------------------------------------------------------------------

def unpaid_with_notification(app, client, user):
    """An order paid at 'WeChat' whose notification was kept, not delivered: (order, body, headers)."""
    order = new_order(client, user)
    kept = []
    # Answered as "delivered" so that no retry thread outlives the test.
    desk(app).send = lambda url, body, headers: kept.append((body, dict(headers))) or (204, b"")
    pay_in_sandbox(client, prepay(client, user, order))
    body, headers = kept[0]
    return order, body, headers


def notify(client, body, headers, path="/api/pay/notify"):
    return client.post(path, data=body, headers=headers, content_type="application/json")


def test_a_v3_notification_is_recorded_once_and_answered_204(app, client, user):
    order, body, headers = unpaid_with_notification(app, client, user)
    assert order_row(order["out_trade_no"]).status == "unpaid"
    for _ in range(3):
        resp = notify(client, body, headers)
        assert resp.status_code == 204 and resp.data == b""
    stored = order_row(order["out_trade_no"])
    assert stored.status == "paid" and len(stored.payments) == 1
    assert verdicts(order["out_trade_no"]) == ["paid", "duplicate", "duplicate"]


def test_forged_v3_notifications_are_refused_and_change_nothing(app, client, user):
    order, body, headers = unpaid_with_notification(app, client, user)
    keys = desk(app).keys
    envelope = json.loads(body)
    transaction = desk(app).transaction(app.extensions["sandbox"].load_order(order["out_trade_no"]))
    other_key_body = json.dumps({**envelope, "resource": crypto.encrypt_resource(
        json.dumps(transaction).encode(), "f" * 32, "transaction", "transaction")}).encode()
    cases = {
        "forged signature": (body, signing.answer_headers(body, OTHER, headers["Wechatpay-Serial"])),
        "stale timestamp": (body, signing.answer_headers(body, keys.public_key_private, keys.public_key_id,
                                                         timestamp=int(time.time()) - 301)),
        "unknown serial": (body, {**headers, "Wechatpay-Serial": "PUB_KEY_ID_0000000000000000000000000000"}),
        "tampered body": (body.replace(b'"TRANSACTION.SUCCESS"', b'"TRANSACTION.SUCCESS" '), headers),
        "another APIv3 key": (other_key_body, signing.answer_headers(other_key_body, keys.public_key_private,
                                                                     keys.public_key_id)),
        "no signature": (body, {"Wechatpay-Signature": "", "Content-Type": "application/json"}),
    }
    for name, (b, h) in cases.items():
        resp = notify(client, b, h)
        assert resp.status_code == 400, name  # refused: WeChat retries on any 4xx/5xx
        answer = resp.get_json()
        assert answer["code"] == "FAIL" and answer["message"], name
    stored = order_row(order["out_trade_no"])
    assert stored.status == "unpaid" and stored.payments == []
    db.session.rollback()
    recorded = list(db.session.execute(db.select(PaymentNotification.verdict).order_by(PaymentNotification.id))
                    .scalars())
    assert recorded == ["bad_signature", "stale_timestamp", "unknown_serial", "bad_signature", "bad_resource",
                        "missing_headers"]
    assert notify(client, body, headers).status_code == 204  # the real one still works
    assert order_row(order["out_trade_no"]).status == "paid"


def test_a_v3_refund_notification_settles_once_and_forgeries_are_refused(app, client, user):
    order = new_order(client, user)
    no = order["out_trade_no"]
    pay_in_sandbox(client, prepay(client, user, order))
    kept = []
    desk(app).send = lambda url, body, headers: kept.append((url, body, dict(headers))) or (204, b"")
    outcome = refunds.refund_order(fresh(no), fee=1000)
    assert outcome.refund.status == "processing"
    url, body, headers = kept[0]
    assert url.endswith("/api/pay/refund-notify")
    forged = signing.answer_headers(body, OTHER, headers["Wechatpay-Serial"])
    resp = notify(client, body, forged, "/api/pay/refund-notify")
    assert resp.status_code == 400 and resp.get_json()["code"] == "FAIL"
    assert fresh(no).refunds[0].status == "processing"
    for _ in range(2):
        assert notify(client, body, headers, "/api/pay/refund-notify").status_code == 204
    assert fresh(no).refunds[0].status == "success" and fresh(no).refunded_fee == 1000


def test_v2_notifications_are_still_taken_after_switching_to_v3(app, client, user):
    from miniapp_server.wechat.pay import signing as v2signing
    from miniapp_server.wechat.pay import xmlcodec

    order = new_order(client, user)
    fields = {"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": app.config["WECHAT_APPID"],
              "mch_id": app.config["WECHAT_MCH_ID"], "nonce_str": v2signing.nonce(), "total_fee": "3600",
              "transaction_id": "4200000001202611240000000077", "out_trade_no": order["out_trade_no"],
              "time_end": "20261124120000", "trade_type": "JSAPI"}
    fields["sign"] = v2signing.sign(fields, app.config["WECHAT_PAY_KEY"])
    resp = client.post("/api/pay/notify", data=xmlcodec.dumps(fields), content_type="text/xml")
    assert resp.status_code == 200 and xmlcodec.loads(resp.data)["return_code"] == "SUCCESS"
    assert order_row(order["out_trade_no"]).status == "paid"


@pytest.mark.pay_api("v2")
def test_a_v2_app_refuses_v3_notifications(app, client, user):
    order = new_order(client, user)
    body = b'{"id":"x","event_type":"TRANSACTION.SUCCESS","resource":{}}'
    resp = notify(client, body, {"Wechatpay-Signature": "AAAA", "Wechatpay-Serial": "x", "Wechatpay-Nonce": "n",
                                 "Wechatpay-Timestamp": str(int(time.time()))})
    assert resp.status_code == 400 and resp.get_json()["code"] == "FAIL"
    assert order_row(order["out_trade_no"]).status == "unpaid" and verdicts(None) == ["wrong_api"]


# -- WeChat's answers, believed only when signed --------------------------------------------------------------

def test_a_forged_v3_answer_is_not_believed(app, client, user, monkeypatch):
    from miniapp_server.sandbox.v3 import V3Desk

    real = V3Desk._signed

    def forged(self, status, payload, signer=None):
        answer = real(self, status, payload, signer)
        answer.body = answer.body.replace(b'"prepay_id":"wx', b'"prepay_id":"wX')
        return answer

    monkeypatch.setattr(V3Desk, "_signed", forged)
    order = new_order(client, user)
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=user["headers"])
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "wechat_bad_signature"
    assert order_row(order["out_trade_no"]).prepay_id is None


def test_wechat_down_is_503_and_a_refusal_502(make_app):
    app = make_app()
    client = app.test_client()
    headers = bearer(login(client)["token"])
    order = client.post("/api/orders", headers=headers, json={"items": [{"product_id": 1, "quantity": 1}]}).get_json()
    v3 = app.extensions["wechat"].pay_v3
    good_serial = v3.creds
    v3.creds = type(good_serial)(good_serial.appid, good_serial.mchid, "0" * 40, good_serial.private_key,
                                 good_serial.apiv3_key)  # a serial WeChat does not know: 401 SIGN_ERROR
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=headers)
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "wechat_pay_error"
    v3.creds = good_serial
    v3.base = "http://127.0.0.1:9"  # nothing listens
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=headers)
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "wechat_unavailable"
    with app.app_context():
        assert db.session.execute(db.select(Order)).scalar_one().prepay_id is None


def test_platform_certificates_then_the_public_key(make_app):
    # Migrating: the public key and platform certificates both configured; WeChat signs with either.
    app = make_app(WECHAT_PAY_PLATFORM_CERTS="1")
    client = app.test_client()
    user = {"headers": bearer(login(client)["token"])}
    client.post("/sandbox/control/v3-signer", json={"signer": "platform_certificate"})
    first = new_order(client, user)
    with app.app_context():
        pay_in_sandbox(client, prepay(client, user, first))
        assert fresh(first["out_trade_no"]).status == "paid"
        ring = app.extensions["wechat"].pay_v3.keys
        assert [c.serial_no for c in ring.certificates()] == [desk(app).keys.platform_serial]
    client.post("/sandbox/control/v3-signer", json={"signer": "public_key"})
    second = new_order(client, user)
    with app.app_context():
        pay_in_sandbox(client, prepay(client, user, second))
        assert fresh(second["out_trade_no"]).status == "paid"


# -- settings -------------------------------------------------------------------------------------------------

def test_settings_are_checked(env, tmp_path):
    with pytest.raises(ConfigError, match="WECHAT_PAY_API"):
        create_app(env={**env, "WECHAT_PAY_API": "v4"})
    with pytest.raises(ConfigError, match="32-byte"):
        create_app(env={**env, "WECHAT_PAY_V3_KEY": "short"})
    key = RSA.generate(2048)
    (tmp_path / "apiclient_key.pem").write_bytes(key.export_key(pkcs=8))
    (tmp_path / "pub_key.pem").write_bytes(OTHER.public_key().export_key())
    production = {**env, "APP_ENV": "production", "WECHAT_SANDBOX": "0", "WECHAT_APPID": "wx0123456789abcdef",
                  "WECHAT_APPSECRET": "s" * 32, "WECHAT_MCH_ID": "1900000109",
                  "WECHAT_NOTIFY_URL": "https://shop.example/api/pay/notify", "WECHAT_PAY_API": "v3"}
    with pytest.raises(ConfigError) as missing:
        create_app(env=production)
    for name in ("WECHAT_PAY_V3_KEY", "WECHAT_MCH_PRIVATE_KEY_PATH", "WECHAT_MCH_CERT_SERIAL"):
        assert name in str(missing.value)
    assert "WECHAT_PAY_KEY" not in str(missing.value)  # v3 needs no v2 key
    complete = {**production, "WECHAT_PAY_V3_KEY": "k" * 32,
                "WECHAT_MCH_PRIVATE_KEY_PATH": str(tmp_path / "apiclient_key.pem"),
                "WECHAT_MCH_CERT_SERIAL": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"}
    with pytest.raises(ConfigError, match="go together"):
        create_app(env={**complete, "WECHAT_PAY_PUBLIC_KEY_PATH": str(tmp_path / "pub_key.pem")})
    with pytest.raises(ConfigError, match="or platform certificates"):
        create_app(env={**complete, "WECHAT_PAY_PLATFORM_CERTS": "0"})
    app = create_app(env={**complete, "WECHAT_PAY_PUBLIC_KEY_PATH": str(tmp_path / "pub_key.pem"),
                          "WECHAT_PAY_PUBLIC_KEY_ID": "PUB_KEY_ID_0119000001092025000000000001"})
    state = app.extensions["wechat"]
    assert state.gateway.api == "v3" and state.pay_v3.keys.public_key_id.startswith("PUB_KEY_ID_")
    assert not state.pay_v3.keys.uses_certificates and "v2" not in state.gateways  # no v2 key: no v2 notifications
    certs_only = create_app(env=complete)  # no public key: platform certificates
    assert certs_only.extensions["wechat"].pay_v3.keys.uses_certificates
    with pytest.raises(ConfigError, match="WECHAT_MCH_PRIVATE_KEY_PATH"):
        create_app(env={**complete, "WECHAT_MCH_PRIVATE_KEY_PATH": str(tmp_path / "pub_key.pem")})
    assert "k" * 32 not in repr(state.pay_v3.creds)
