"""WeChat Pay API v3's protocol layer and the sandbox's v3 half: WeChat's known answers (request signature,
wx.requestPayment's RSA paySign, AEAD_AES_256_GCM), and everything forged refused: headers, stale timestamps,
an unknown serial, a tampered body, a wrong APIv3 key; public key and platform certificates side by side."""

from __future__ import annotations

import json
import time

import pytest
import requests
from Crypto.PublicKey import RSA

from miniapp_server.sandbox.transport import WSGIAdapter
from miniapp_server.sandbox.v3 import SANDBOX_V3_KEY
from miniapp_server.sandbox.v3_routes import key_dir
from miniapp_server.sandbox.v3_keys import ensure_keys
from miniapp_server.store import make_store
from miniapp_server.wechat.errors import NotificationRejected, PayError, SignatureError, WeChatUnavailable
from miniapp_server.wechat.http import make_session
from miniapp_server.wechat.pay.v3 import crypto, keys, signing
from miniapp_server.wechat.pay.v3.client import PayClientV3, V3Credentials

from .conftest import vector

# -- known answers ----------------------------------------------------------------------------------------


def official_key():
    return keys.load_private_key(vector("v3_request_signature_official_test_key")["inputs"]["private_key_pem"])


def test_request_signature_is_wechats_known_answer():
    v = vector("v3_request_signature_official_test_key")
    i = v["inputs"]
    header = signing.authorization(mchid=i["mchid"], serial_no=i["serial_no"], private_key=official_key(),
                                   method=i["method"], url=i["url"], body=i["body"], timestamp=int(i["timestamp"]),
                                   nonce_str=i["nonce"])
    assert header == (f'WECHATPAY2-SHA256-RSA2048 mchid="{i["mchid"]}",nonce_str="{i["nonce"]}",'
                      f'timestamp="{i["timestamp"]}",serial_no="{i["serial_no"]}",signature="{v["expected"]}"')
    parsed = signing.parse_authorization(header)
    assert parsed is not None and parsed.signature == v["expected"] and parsed.serial_no == i["serial_no"]
    message = signing.request_message(i["method"], i["url"], i["timestamp"], i["nonce"], i["body"])
    assert signing.verify(message, v["expected"], official_key().public_key())
    assert not signing.verify(message + b"x", v["expected"], official_key().public_key())


def test_request_payment_pay_sign_is_wechats_known_answer():
    v = vector("v3_requestPayment_paySign_official_test_key")
    i = v["inputs"]
    assert signing.jsapi_pay_sign(i["appId"], i["timeStamp"], i["nonceStr"], i["package"], official_key()) \
        == v["expected"]


def test_aes_256_gcm_is_wechatpay_javas_known_answer():
    v = vector("v3_aes256gcm_wechatpay_java")
    i = v["inputs"]
    assert crypto.decrypt(i["apiv3_key"], i["nonce"], i["associated_data"], i["ciphertext"]) \
        == v["expected"].encode()
    resource = {"algorithm": "AEAD_AES_256_GCM", "nonce": i["nonce"], "associated_data": i["associated_data"],
                "ciphertext": i["ciphertext"]}
    assert crypto.decrypt_resource(resource, i["apiv3_key"]) == b"message"
    assert crypto.encrypt(i["apiv3_key"], i["nonce"], i["associated_data"], b"message") == i["ciphertext"]


@pytest.mark.parametrize("change", ["key", "nonce", "associated_data", "ciphertext", "algorithm", "short_key"])
def test_aes_256_gcm_refuses_anything_else(change):
    i = dict(vector("v3_aes256gcm_wechatpay_java")["inputs"])
    resource = {"algorithm": "AEAD_AES_256_GCM", "nonce": i["nonce"], "associated_data": i["associated_data"],
                "ciphertext": i["ciphertext"]}
    key = i["apiv3_key"]
    if change == "key":
        key = "b" + key[1:]
    elif change == "short_key":
        key = key[:31]
    elif change == "algorithm":
        resource["algorithm"] = "AEAD_AES_128_GCM"
    elif change == "ciphertext":  # flip one bit of the encrypted bytes
        raw = bytearray(__import__("base64").b64decode(resource["ciphertext"]))
        raw[0] ^= 1
        resource["ciphertext"] = __import__("base64").b64encode(bytes(raw)).decode()
    else:
        resource[change] = resource[change][:-1] + ("X" if resource[change][-1] != "X" else "Y")
    with pytest.raises(crypto.DecryptError):
        crypto.decrypt_resource(resource, key)


# -- answers and notifications: WeChat's signature, or nothing -------------------------------------------------

WECHAT = RSA.generate(2048)
OTHER = RSA.generate(2048)
SERIAL = "PUB_KEY_ID_0119000001092025000000000001"


def lookup(serial):
    return WECHAT.public_key() if serial == SERIAL else None


def signed(body: bytes, key=WECHAT, serial=SERIAL, **kw):
    return signing.answer_headers(body, key, serial, **kw)


def test_an_answer_signed_by_wechat_verifies():
    body = b'{"prepay_id":"wx1"}'
    assert signing.verify_answer(signed(body), body, lookup) == SERIAL
    # header names are case-insensitive, as HTTP says
    lowered = {k.lower(): v for k, v in signed(body).items()}
    assert signing.verify_answer(lowered, body, lookup) == SERIAL


@pytest.mark.parametrize("forgery, code", [
    ("tampered_body", "bad_signature"),
    ("other_key", "bad_signature"),
    ("stale_timestamp", "stale_timestamp"),
    ("future_timestamp", "stale_timestamp"),
    ("unknown_serial", "unknown_serial"),
    ("missing_signature", "missing_headers"),
    ("garbage_signature", "bad_signature"),
    ("probe_signature", "bad_signature"),
    ("wrong_nonce", "bad_signature"),
    ("signature_type", "bad_signature_type"),
])
def test_forged_answers_are_refused(forgery, code):
    body = b'{"trade_state":"SUCCESS"}'
    headers = signed(body)
    if forgery == "tampered_body":
        body = b'{"trade_state":"CLOSED"}'
    elif forgery == "other_key":
        headers = signed(body, key=OTHER)
    elif forgery == "stale_timestamp":
        headers = signed(body, timestamp=int(time.time()) - 301)
    elif forgery == "future_timestamp":
        headers = signed(body, timestamp=int(time.time()) + 301)
    elif forgery == "unknown_serial":
        headers = signed(body, key=OTHER, serial="5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
    elif forgery == "missing_signature":
        del headers["Wechatpay-Signature"]
    elif forgery == "garbage_signature":
        headers["Wechatpay-Signature"] = "not base64 at all!"
    elif forgery == "probe_signature":  # WeChat's own probes start so; they must never verify
        headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + headers["Wechatpay-Signature"]
    elif forgery == "wrong_nonce":
        headers["Wechatpay-Nonce"] = headers["Wechatpay-Nonce"][::-1]
    elif forgery == "signature_type":
        headers["Wechatpay-Signature-Type"] = "WECHATPAY2-SHA256-RSA1024"
    with pytest.raises(SignatureError) as caught:
        signing.verify_answer(headers, body, lookup)
    assert caught.value.code == code


def test_timestamps_within_five_minutes_pass():
    body = b"{}"
    for skew in (-299, 0, 299):
        assert signing.verify_answer(signed(body, timestamp=int(time.time()) + skew), body, lookup)


@pytest.mark.parametrize("header", [
    None, "", "Bearer x", 'WECHATPAY2-SHA256-RSA2048 mchid="1"',
    'WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="2",nonce_str="n",timestamp="1",serial_no="s",signature="x"',
    'WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str="n",timestamp="1",serial_no="s",signature="x"',
])
def test_malformed_authorization_headers_do_not_parse(header):
    assert signing.parse_authorization(header) is None


# -- keys: public key, platform certificates, both ---------------------------------------------------------

APIV3 = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def platform():
    """A platform certificate made as the sandbox makes its own, and the /v3/certificates answer carrying it."""
    from datetime import datetime, timedelta, timezone

    from miniapp_server.sandbox.v3_keys import self_signed_certificate

    key = RSA.generate(2048)
    now = datetime.now(timezone.utc)
    pem = self_signed_certificate(key, 0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1, "test", now - timedelta(days=1),
                                  now + timedelta(days=30))
    return key, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", pem


def certificates_answer(key, serial, pem, apiv3=APIV3, signer=None, expire="2099-01-01T00:00:00+08:00"):
    body = json.dumps({"data": [{"serial_no": serial, "effective_time": "2020-01-01T00:00:00+08:00",
                                 "expire_time": expire,
                                 "encrypt_certificate": crypto.encrypt_resource(pem.encode(), apiv3, "certificate")}]}
                      ).encode()
    skey, sserial = signer or (key, serial)
    return signing.answer_headers(body, skey, sserial), body


def test_a_platform_certificate_gives_its_public_key(platform):
    key, serial, pem = platform
    assert keys.load_public_key(pem).n == key.n
    assert keys.load_public_key(key.public_key().export_key("PEM")).n == key.n
    with pytest.raises(keys.KeyFileError):
        keys.load_private_key(key.public_key().export_key("PEM"))  # a public key cannot sign for the merchant
    with pytest.raises(keys.KeyFileError):
        keys.load_public_key("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_platform_certificates_are_downloaded_once_cached_and_shared(platform, tmp_path):
    key, serial, pem = platform
    store = make_store("", str(tmp_path / "store.sqlite3"), "t:")
    downloads = []

    def fetch():
        downloads.append(1)
        return certificates_answer(key, serial, pem)

    first = keys.WeChatPayKeys(mchid="1900000109", apiv3_key=APIV3, fetch_certificates=fetch, store=store)
    assert first.key_for(serial).n == key.n
    assert first.key_for(serial).n == key.n
    # another worker: the store already holds them
    second = keys.WeChatPayKeys(mchid="1900000109", apiv3_key=APIV3, fetch_certificates=fetch, store=store)
    assert second.key_for(serial).n == key.n
    assert len(downloads) == 1
    # an unknown serial (rotation?) may download again, but at most once a minute however many ask
    assert second.key_for("0" * 40) is None
    assert first.key_for("1" * 40) is None
    assert len(downloads) == 2


def test_a_certificates_answer_not_signed_by_its_certificates_or_not_ours_is_refused(platform, tmp_path):
    key, serial, pem = platform
    for kind in ("forged_signature", "wrong_apiv3_key"):
        def fetch(kind=kind):
            if kind == "forged_signature":
                return certificates_answer(key, serial, pem, signer=(OTHER, serial))
            return certificates_answer(key, serial, pem, apiv3="f" * 32)

        ring = keys.WeChatPayKeys(mchid="1", apiv3_key=APIV3, fetch_certificates=fetch,
                                  store=make_store("", str(tmp_path / f"{kind}.sqlite3"), "t:"))
        with pytest.raises(SignatureError):
            ring.key_for(serial)
        assert ring.certificates() == []


def test_an_expired_platform_certificate_is_not_used(platform):
    key, serial, pem = platform
    ring = keys.WeChatPayKeys(mchid="1", apiv3_key=APIV3,
                              fetch_certificates=lambda: certificates_answer(key, serial, pem,
                                                                             expire="2001-01-01T00:00:00+08:00"))
    assert ring.key_for(serial) is None


def test_while_migrating_both_the_public_key_and_certificates_are_accepted(platform, tmp_path):
    key, serial, pem = platform
    ring = keys.WeChatPayKeys(mchid="1", apiv3_key=APIV3, public_key=WECHAT.public_key(), public_key_id=SERIAL,
                              fetch_certificates=lambda: certificates_answer(key, serial, pem),
                              store=make_store("", str(tmp_path / "s.sqlite3"), "t:"))
    body = b"{}"
    assert signing.verify_answer(signed(body), body, ring.key_for) == SERIAL
    assert signing.verify_answer(signing.answer_headers(body, key, serial), body, ring.key_for) == serial
    # public-key mode alone knows nothing of certificates
    only = keys.WeChatPayKeys(mchid="1", public_key=WECHAT.public_key(), public_key_id=SERIAL)
    with pytest.raises(SignatureError) as caught:
        signing.verify_answer(signing.answer_headers(body, key, serial), body, only.key_for)
    assert caught.value.code == "unknown_serial"


# -- the client against the sandbox's v3 half ---------------------------------------------------------------

ORIGIN = "http://wechat-sandbox.internal"


class Sandbox:
    """A v3 client wired to the app's sandbox; notifications it sends are kept, not delivered."""

    def __init__(self, app, certificates=False, public_key=True):
        self.app = app
        with app.app_context():
            self.keys = ensure_keys(key_dir(app), app.config["WECHAT_MCH_ID"])
        session = make_session()
        session.mount(ORIGIN + "/", WSGIAdapter(app))
        self.session = session
        creds = V3Credentials(app.config["WECHAT_APPID"], app.config["WECHAT_MCH_ID"], self.keys.merchant_serial,
                              self.keys.merchant_private_key, SANDBOX_V3_KEY)
        self.client = PayClientV3.build(
            creds, ORIGIN + "/sandbox", session,
            public_key=self.keys.public_key_private.public_key() if public_key else None,
            public_key_id=self.keys.public_key_id if public_key else "", platform_certificates=certificates,
            store=make_store("", app.config["EMBEDDED_STORE_PATH"] + ".client", "c:"))
        self.sent: list[tuple[str, bytes, dict]] = []
        with app.test_request_context():
            from miniapp_server.sandbox.v3_routes import desk

            desk().send = self._capture

    def _capture(self, url, body, headers):
        self.sent.append((url, body, dict(headers)))
        return 204, b""

    def delivered(self, path_end: str) -> tuple[str, bytes, dict]:
        """The last notification sent to a URL ending in `path_end`; to another host than the app's (as
        shop.example is) they leave from a background thread, so wait for it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            hits = [sent for sent in self.sent if sent[0].endswith(path_end)]
            if hits:
                return hits[-1]
            time.sleep(0.01)
        raise AssertionError(f"no notification to *{path_end} was sent")

    def control(self, path, body):
        return self.app.test_client().post(path, json=body)


@pytest.fixture
def sandbox(app):
    return Sandbox(app)


def prepay(sandbox, no, kind="JSAPI", total=1800, **kw):
    return sandbox.client.prepay(trade_type=kind, description="拿铁咖啡 Latte", out_trade_no=no, total=total,
                                 notify_url="https://shop.example/api/pay/notify",
                                 openid="o-test" if kind == "JSAPI" else None, **kw)


def test_jsapi_journey_prepay_pay_notify_query(sandbox):
    answer = prepay(sandbox, "V3JOURNEY0001", attach="rid=abc")
    params = sandbox.client.jsapi_params(answer["prepay_id"])
    assert params["signType"] == "RSA" and params["package"] == f"prepay_id={answer['prepay_id']}"
    assert prepay(sandbox, "V3JOURNEY0001") == answer  # the same order again: the same prepay
    assert sandbox.client.query(out_trade_no="V3JOURNEY0001")["trade_state"] == "NOTPAY"

    resp = sandbox.control("/sandbox/control/pay", params)
    assert resp.status_code == 200, resp.get_json()
    url, body, headers = sandbox.delivered("/notify")
    assert url == "https://shop.example/api/pay/notify" and headers["Wechatpay-Serial"] == sandbox.keys.public_key_id
    data = sandbox.client.parse_notification(headers, body)
    assert data["event_type"] == "TRANSACTION.SUCCESS" and data["trade_state"] == "SUCCESS"
    assert data["out_trade_no"] == "V3JOURNEY0001" and data["amount"]["total"] == 1800
    assert data["attach"] == "rid=abc" and data["transaction_id"] == resp.get_json()["transaction_id"]

    queried = sandbox.client.query(out_trade_no="V3JOURNEY0001")
    assert queried["trade_state"] == "SUCCESS" and queried["transaction_id"] == data["transaction_id"]
    assert queried["success_time"].endswith("+08:00")
    assert sandbox.client.query(transaction_id=data["transaction_id"])["out_trade_no"] == "V3JOURNEY0001"
    # paid: no second prepay, no closing
    for call in (lambda: prepay(sandbox, "V3JOURNEY0001"), lambda: sandbox.client.close("V3JOURNEY0001")):
        with pytest.raises(PayError) as caught:
            call()
        assert caught.value.code == "ORDERPAID"


def test_native_and_app(sandbox):
    native = prepay(sandbox, "V3NATIVE00001", kind="NATIVE")
    assert set(native) == {"code_url"} and native["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    assert sandbox.control("/sandbox/control/scan", native).status_code == 200
    assert sandbox.client.query(out_trade_no="V3NATIVE00001")["trade_state"] == "SUCCESS"

    app_pay = prepay(sandbox, "V3APP00000001", kind="APP")
    params = sandbox.client.app_params(app_pay["prepay_id"])
    message = f"{params['appid']}\n{params['timestamp']}\n{params['noncestr']}\n{params['prepayid']}\n".encode()
    assert signing.verify(message, params["sign"], sandbox.keys.merchant_private_key.public_key())
    forged = {**params, "noncestr": params["noncestr"][::-1]}
    assert sandbox.control("/sandbox/control/pay", forged).get_json()["error"]["code"] == "bad_pay_sign"
    assert sandbox.control("/sandbox/control/pay", params).status_code == 200
    assert sandbox.client.query(out_trade_no="V3APP00000001")["trade_type"] == "APP"


def test_a_forged_pay_sign_is_refused_by_the_sandbox(sandbox):
    params = sandbox.client.jsapi_params(prepay(sandbox, "V3FORGED00001")["prepay_id"])
    for forged in ({**params, "timeStamp": str(int(params["timeStamp"]) + 1)}, {**params, "paySign": "AAAA"}):
        resp = sandbox.control("/sandbox/control/pay", forged)
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_pay_sign"
    assert sandbox.client.query(out_trade_no="V3FORGED00001")["trade_state"] == "NOTPAY"
    assert sandbox.sent == []


def test_close_and_errors(sandbox):
    prepay(sandbox, "V3CLOSE000001")
    assert sandbox.client.close("V3CLOSE000001") is None
    assert sandbox.client.query(out_trade_no="V3CLOSE000001")["trade_state"] == "CLOSED"
    with pytest.raises(PayError) as caught:
        prepay(sandbox, "V3CLOSE000001")
    assert caught.value.code == "ORDER_CLOSED"
    with pytest.raises(PayError) as caught:
        sandbox.client.query(out_trade_no="V3NOSUCHORDER")
    assert caught.value.code == "ORDER_NOT_EXIST" and not caught.value.should_retry
    prepay(sandbox, "V3DUPLICATE01")
    with pytest.raises(PayError) as caught:
        prepay(sandbox, "V3DUPLICATE01", total=1)
    assert caught.value.code == "OUT_TRADE_NO_USED"


def test_refund_and_its_notification(sandbox):
    params = sandbox.client.jsapi_params(prepay(sandbox, "V3REFUND00001")["prepay_id"])
    txn = sandbox.control("/sandbox/control/pay", params).get_json()["transaction_id"]
    answer = sandbox.client.refund(out_trade_no="V3REFUND00001", out_refund_no="V3REFUND00001R1", total=1800,
                                   refund=800, reason="缺货", notify_url="https://shop.example/api/pay/refund-notify")
    assert answer["status"] == "PROCESSING" and answer["amount"]["refund"] == 800
    url, body, headers = sandbox.delivered("/refund-notify")
    data = sandbox.client.parse_refund_notification(headers, body)
    assert url.endswith("/refund-notify") and data["event_type"] == "REFUND.SUCCESS"
    assert data["refund_status"] == "SUCCESS" and data["out_refund_no"] == "V3REFUND00001R1"
    assert data["amount"] == {"total": 1800, "refund": 800, "payer_total": 1800, "payer_refund": 800}
    assert sandbox.client.refund_query("V3REFUND00001R1")["status"] == "SUCCESS"
    again = sandbox.client.refund(transaction_id=txn, out_refund_no="V3REFUND00001R1", total=1800, refund=800)
    assert again["refund_id"] == answer["refund_id"]  # the same out_refund_no: the same refund
    with pytest.raises(PayError) as caught:
        sandbox.client.refund(out_trade_no="V3REFUND00001", out_refund_no="V3REFUND00001R2", total=1800, refund=1001)
    assert caught.value.code == "INVALID_REQUEST"
    with pytest.raises(NotificationRejected) as rejected:
        sandbox.client.parse_notification(headers, body)  # a refund is not a payment
    assert rejected.value.code == "wrong_event"
    assert sandbox.control("/sandbox/control/refund-behaviour", {"fail_next": "NOTENOUGH"}).status_code == 200
    with pytest.raises(PayError) as caught:
        sandbox.client.refund(out_trade_no="V3REFUND00001", out_refund_no="V3REFUND00001R3", total=1800, refund=1)
    assert caught.value.code == "NOT_ENOUGH"


def test_notifications_forged_stale_unknown_tampered_or_under_another_key_are_refused(sandbox):
    params = sandbox.client.jsapi_params(prepay(sandbox, "V3NOTIFY00001")["prepay_id"])
    sandbox.control("/sandbox/control/pay", params)
    _, body, headers = sandbox.delivered("/notify")
    assert sandbox.client.parse_notification(headers, body)["trade_state"] == "SUCCESS"
    envelope = json.loads(body)
    tampered = json.dumps({**envelope, "event_type": "TRANSACTION.SUCCESS", "id": "x"}).encode()
    cases = {
        "bad_signature": ({**headers, "Wechatpay-Signature": signed(body, key=OTHER)["Wechatpay-Signature"]}, body),
        "stale_timestamp": (signing.answer_headers(body, sandbox.keys.public_key_private, sandbox.keys.public_key_id,
                                                   timestamp=int(time.time()) - 600), body),
        "unknown_serial": ({**headers, "Wechatpay-Serial": "PUB_KEY_ID_0000000000000000000000000000"}, body),
        "missing_headers": ({"Content-Type": "application/json"}, body),
        "tampered": (headers, tampered),
    }
    for name, (h, b) in cases.items():
        with pytest.raises(NotificationRejected) as caught:
            sandbox.client.parse_notification(h, b)
        assert caught.value.code == ("bad_signature" if name == "tampered" else name), name
    # signed by WeChat but encrypted under another APIv3 key: not ours
    other = json.dumps({**envelope, "resource": crypto.encrypt_resource(b"{}", "f" * 32, "transaction")}).encode()
    with pytest.raises(NotificationRejected) as caught:
        sandbox.client.parse_notification(signing.answer_headers(other, sandbox.keys.public_key_private,
                                                                 sandbox.keys.public_key_id), other)
    assert caught.value.code == "bad_resource"


def test_the_sandbox_checks_every_request_signature(app, sandbox):
    url = ORIGIN + "/sandbox/v3/pay/transactions/out-trade-no/V3NOSUCHORDER?mchid=" + app.config["WECHAT_MCH_ID"]
    good = signing.authorization(mchid=app.config["WECHAT_MCH_ID"], serial_no=sandbox.keys.merchant_serial,
                                 private_key=sandbox.keys.merchant_private_key, method="GET",
                                 url=url[len(ORIGIN + "/sandbox"):])
    assert sandbox.session.get(url, headers={"Authorization": good}).status_code == 404  # signed right: no such order
    forged = {
        "none": "",
        "other_key": signing.authorization(mchid=app.config["WECHAT_MCH_ID"], serial_no=sandbox.keys.merchant_serial,
                                           private_key=OTHER, method="GET", url=url[len(ORIGIN + "/sandbox"):]),
        "other_url": signing.authorization(mchid=app.config["WECHAT_MCH_ID"], serial_no=sandbox.keys.merchant_serial,
                                           private_key=sandbox.keys.merchant_private_key, method="GET",
                                           url="/v3/pay/transactions/out-trade-no/OTHER"),
        "stale": signing.authorization(mchid=app.config["WECHAT_MCH_ID"], serial_no=sandbox.keys.merchant_serial,
                                       private_key=sandbox.keys.merchant_private_key, method="GET",
                                       url=url[len(ORIGIN + "/sandbox"):], timestamp=int(time.time()) - 400),
        "serial": signing.authorization(mchid=app.config["WECHAT_MCH_ID"], serial_no="0" * 40,
                                        private_key=sandbox.keys.merchant_private_key, method="GET",
                                        url=url[len(ORIGIN + "/sandbox"):]),
        "mchid": signing.authorization(mchid="1230000109", serial_no=sandbox.keys.merchant_serial,
                                       private_key=sandbox.keys.merchant_private_key, method="GET",
                                       url=url[len(ORIGIN + "/sandbox"):]),
    }
    for name, header in forged.items():
        resp = sandbox.session.get(url, headers={"Authorization": header})
        assert resp.status_code == 401 and resp.json()["code"] == "SIGN_ERROR", name
        # even the refusal is signed by WeChat
        assert signing.verify_answer(resp.headers, resp.content, sandbox.client.keys.key_for)


def test_a_tampered_sandbox_answer_is_not_believed(app, sandbox, monkeypatch):
    prepay(sandbox, "V3TAMPER00001")
    real_send = WSGIAdapter.send

    def tamper(self, request, **kw):
        resp = real_send(self, request, **kw)
        resp._content = resp._content.replace(b"NOTPAY", b"CLOSED")
        return resp

    monkeypatch.setattr(WSGIAdapter, "send", tamper)
    with pytest.raises(SignatureError) as caught:
        sandbox.client.query(out_trade_no="V3TAMPER00001")
    assert caught.value.code == "bad_signature"


def test_unsigned_gateway_errors_are_unavailable_not_believed(sandbox, monkeypatch):
    def gateway(self, request, **kw):
        resp = requests.Response()
        resp.status_code, resp._content, resp.url = 502, b"<html>bad gateway</html>", request.url
        return resp

    monkeypatch.setattr(WSGIAdapter, "send", gateway)
    with pytest.raises(WeChatUnavailable):
        sandbox.client.query(out_trade_no="V3GATEWAY0001")


def test_platform_certificate_mode_and_a_migration_to_the_public_key(app):
    # Before: the merchant knows only platform certificates; WeChat signs with the certificate.
    old = Sandbox(app, certificates=True, public_key=False)
    assert old.control("/sandbox/control/v3-signer", {"signer": "platform_certificate"}).status_code == 200
    prepay(old, "V3MIGRATE0001")
    assert [c.serial_no for c in old.client.keys.certificates()] == [old.keys.platform_serial]
    # During: the merchant configures the public key too; WeChat switches to it; both verify.
    both = Sandbox(app, certificates=True, public_key=True)
    assert both.client.query(out_trade_no="V3MIGRATE0001")["trade_state"] == "NOTPAY"
    old.control("/sandbox/control/v3-signer", {"signer": "public_key"})
    assert both.client.query(out_trade_no="V3MIGRATE0001")["trade_state"] == "NOTPAY"
    with pytest.raises(SignatureError) as caught:  # the certificate-only merchant cannot check the public key
        old.client.query(out_trade_no="V3MIGRATE0001")
    assert caught.value.code == "unknown_serial"
    # After: the public key alone.
    new = Sandbox(app)
    assert new.client.query(out_trade_no="V3MIGRATE0001")["trade_state"] == "NOTPAY"
    described = new.app.test_client().get("/sandbox/control/v3-signer").get_json()
    assert described["public_key_id"] == new.keys.public_key_id and "PRIVATE" not in json.dumps(described)
