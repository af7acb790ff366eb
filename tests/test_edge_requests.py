"""What an outside audit found at the request level (issue 14, findings 1-5): bodies bounded however they
are encoded, JSON nested too deep, integers out of range, numbers that are not ASCII digits, and a
notification that picks its own sign type. Each bad input is refused in the right format and changes nothing."""

from __future__ import annotations

import io
import json

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import Order, PaymentNotification
from miniapp_server.wechat import jsonlimits
from miniapp_server.wechat.errors import SignatureError
from miniapp_server.wechat.numbers import ascii_uint
from miniapp_server.wechat.pay import signing, xmlcodec
from miniapp_server.wechat.pay.client import PayClient, PayCredentials
from miniapp_server.wechat.pay.gateway import V2Gateway, V3Gateway
from miniapp_server.wechat.pay.v3 import signing as v3_signing

from .test_notify import notification, signed
from .test_refunds import vector_app  # noqa: F401 (a fixture)

OTHER_DIGITS = ["１８００", "²", "①", "١٨٠٠", "+1800", "18_00", "-1"]  # survive XML as they are
NOT_ASCII = OTHER_DIGITS + ["1800\n", " 1800"]


def chunked(client, path: str, size: int, **kwargs):
    """POST `size` bytes with no Content-Length, as a chunked body arrives from gunicorn."""
    return client.post(path, input_stream=io.BytesIO(b"{" + b" " * (size - 1)),
                       environ_overrides={"wsgi.input_terminated": True},
                       headers={"Transfer-Encoding": "chunked", **kwargs.pop("headers", {})}, **kwargs)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def unpaid(no: str) -> bool:
    db.session.rollback()
    return db.session.execute(db.select(Order).filter_by(out_trade_no=no)).scalar_one().status == "unpaid"


def recorded_verdicts() -> list[str]:
    db.session.rollback()
    return list(db.session.execute(db.select(PaymentNotification.verdict).order_by(PaymentNotification.id)).scalars())


# -- 1. one body limit, however the body is encoded ----------------------------------------------------

def test_a_chunked_json_body_past_the_limit_is_a_413_in_the_contracts_shape(client, user):
    for path in ("/api/auth/login", "/api/orders"):
        resp = chunked(client, path, 200 * 1024, headers=user["headers"])
        assert resp.status_code == 413, path
        assert resp.get_json()["error"]["code"] == "body_too_large"
        assert resp.headers["Connection"] == "close"  # the rest is never read
    resp = client.post("/api/auth/login", data=b" " * (65 * 1024), content_type="application/json")
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "body_too_large"


def test_the_app_wide_limit_holds_for_any_route(make_app):
    app = make_app(MAX_CONTENT_LENGTH="4096")
    resp = chunked(app.test_client(), "/sandbox/control/pay", 8192)
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "body_too_large"


@pytest.mark.pay_api("v2")
def test_a_notification_past_the_limit_is_refused_in_wechats_format_and_recorded(make_app):
    app = make_app(MAX_CONTENT_LENGTH="4096")
    client = app.test_client()
    for resp in (chunked(client, "/api/pay/notify", 8192, content_type="text/xml"),
                 client.post("/api/pay/notify", data=b"<xml>" + b" " * 8192, content_type="text/xml")):
        assert resp.status_code == 413
        assert xmlcodec.loads(resp.data)["return_code"] == "FAIL"
    with app.app_context():
        assert recorded_verdicts() == ["bad_xml", "bad_xml"]


# -- 2. JSON nested too deep ----------------------------------------------------------------------------

def test_jsonlimits_counts_depth_not_brackets_in_strings():
    assert not jsonlimits.too_deep(nested(32)) and jsonlimits.too_deep(nested(33))
    assert not jsonlimits.too_deep(json.dumps({"items": [{"product_id": i} for i in range(500)]}))
    assert not jsonlimits.too_deep(json.dumps({"s": "[" * 5000}))
    with pytest.raises(jsonlimits.JSONTooDeep):
        jsonlimits.loads(nested(990))
    assert jsonlimits.loads('{"a": [[1]]}') == {"a": [[1]]}


def test_json_nested_990_levels_is_a_400_on_every_json_endpoint(client, user):
    body = b'{"code": ' + nested(990) + b"}"
    for path in ("/api/auth/login", "/api/orders", "/api/user/decrypt", "/api/user/phone"):
        resp = client.post(path, data=body, content_type="application/json", headers=user["headers"])
        assert resp.status_code == 400, path
        assert resp.get_json()["error"]["code"] == "json_too_deep"
    # get_json() anywhere in the app (here the sandbox's control call) treats it as bad JSON, not a 500
    resp = client.post("/sandbox/control/pay", data=nested(990), content_type="application/json")
    assert resp.status_code == 400


# -- 3. integers bounded where they enter -------------------------------------------------------------------

@pytest.mark.parametrize("product_id", [2**63, 2**64 + 1, 2**31, 10**30])
def test_a_huge_product_id_is_a_400_not_an_overflow(client, user, product_id):
    resp = client.post("/api/orders", json={"items": [{"product_id": product_id, "quantity": 1}]},
                       headers=user["headers"])
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_items"
    resp = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": product_id}]},
                       headers=user["headers"])
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_quantity"
    assert db.session.execute(db.select(Order)).first() is None


@pytest.mark.parametrize("page", ["１", "²", "1_0", " 1", "99999999999999999999"])
def test_paging_takes_ascii_digits_only(client, user, page):
    resp = client.get("/api/orders", query_string={"page": page}, headers=user["headers"])
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_argument"


# -- 4. ASCII digits wherever WeChat sends a number ------------------------------------------------------------

def test_ascii_uint():
    assert ascii_uint("1800") == 1800 and ascii_uint(1800) == 1800 and ascii_uint("0") == 0
    for bad in NOT_ASCII + ["", None, True, 1.0, "1e3", 10**9, "1234567890", -5]:
        assert ascii_uint(bad) is None, bad
    assert ascii_uint("1234567890", max_digits=10) == 1234567890


@pytest.mark.pay_api("v2")
@pytest.mark.parametrize("fee", OTHER_DIGITS)
def test_a_signed_notification_with_a_fee_in_other_digits_is_refused_and_recorded(app, client, order, fee):
    body = signed(app, notification(app, order, total_fee=fee, cash_fee=fee))
    resp = client.post("/api/pay/notify", data=body, content_type="text/xml")
    assert resp.status_code == 200 and xmlcodec.loads(resp.data)["return_code"] == "FAIL"
    assert unpaid(order["out_trade_no"])
    assert recorded_verdicts() == ["bad_fields"]


def test_the_gateways_read_only_ascii_digits_from_answers_and_notifications():
    v2 = V2Gateway.__new__(V2Gateway)
    v2.client = type("C", (), {"order_query": lambda self, **kw: {"trade_state": "SUCCESS", "transaction_id": "42",
                                                                  "total_fee": "１８００"},
                               "refund_query": lambda self, no: {"refund_count": "①", "out_refund_no_0": no}})()
    assert v2.query("x").total_fee is None
    assert v2.refund_query("r1") is None  # a count of '①' is no count
    v3 = V3Gateway.__new__(V3Gateway)
    v3.client = type("C", (), {"parse_notification": lambda self, h, b: {"trade_state": "SUCCESS",
                                                                        "amount": {"total": "１８００"}},
                               "parse_refund_notification": lambda self, h, b: {
                                   "refund_status": "SUCCESS", "amount": {"refund": "²", "total": True}}})()
    assert v3.parse_payment_notification({}, b"")["total_fee"] == ""
    refund = v3.parse_refund_notification({}, b"")
    assert refund["refund_fee"] == "" and refund["total_fee"] == ""


def test_a_v3_timestamp_in_other_digits_is_not_fresh():
    assert v3_signing.fresh("1700000000", now=1700000000)
    assert not v3_signing.fresh("１７００００００００", now=1700000000)
    assert not v3_signing.fresh("1700000000\n", now=1700000000)


# -- 5. the configured sign type only ----------------------------------------------------------------------

@pytest.mark.pay_api("v2")
def test_an_md5_notification_is_refused_where_hmac_is_configured(make_app):
    app = make_app(WECHAT_SIGN_TYPE="HMAC-SHA256")
    client = app.test_client()
    with app.app_context():
        from .conftest import login
        headers = {"Authorization": "Bearer " + login(client)["token"]}
        order = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]}, headers=headers).get_json()
        md5 = signed(app, notification(app, order), sign_type="MD5")
        claims_md5 = signed(app, {**notification(app, order), "sign_type": "MD5"}, sign_type="MD5")
        for body in (md5, claims_md5):
            resp = client.post("/api/pay/notify", data=body, content_type="text/xml")
            assert xmlcodec.loads(resp.data)["return_code"] == "FAIL"
        assert unpaid(order["out_trade_no"])
        assert recorded_verdicts() == ["bad_signature", "bad_signature"]
        good = signed(app, notification(app, order), sign_type="HMAC-SHA256")
        resp = client.post("/api/pay/notify", data=good, content_type="text/xml")
        assert xmlcodec.loads(resp.data)["return_code"] == "SUCCESS" and not unpaid(order["out_trade_no"])


def test_an_answer_in_another_sign_type_is_not_believed():
    key = "k" * 32
    for configured, other in (("HMAC-SHA256", "MD5"), ("MD5", "HMAC-SHA256")):
        client = PayClient(PayCredentials("wxappid", "1900000109", key, configured), "http://x", session=None)
        answer = {"return_code": "SUCCESS", "result_code": "SUCCESS", "prepay_id": "wx1", "sign_type": other}
        answer["sign"] = signing.sign(answer, key, other)
        with pytest.raises(SignatureError):
            client._check(answer)
        answer = {k: v for k, v in answer.items() if k != "sign"}
        answer["sign_type"] = configured
        answer["sign"] = signing.sign(answer, key, configured)
        client._check(answer)  # the same answer in our own type is believed


@pytest.mark.pay_api("v2")
@pytest.mark.parametrize("fee", ["１", "²", "①"])
def test_a_refund_notification_with_a_fee_in_other_digits_is_refused_and_changes_nothing(vector_app, fee):
    from miniapp_server.wechat.pay import crypto

    from .conftest import vector
    from .ops_helpers import fresh

    v = vector("v2_refund_notify_req_info_decrypt")
    outer = xmlcodec.loads(v["inputs"]["notify_xml"])
    plain = crypto.decrypt_req_info(outer["req_info"], v["inputs"]["api_key"])
    odd = plain.replace(b"<refund_fee><![CDATA[1]]>", f"<refund_fee><![CDATA[{fee}]]>".encode())
    assert odd != plain
    body = xmlcodec.dumps({**outer, "req_info": crypto.encrypt_req_info(odd, v["inputs"]["api_key"])})
    resp = vector_app.test_client().post("/api/pay/refund-notify", data=body, content_type="text/xml")
    assert xmlcodec.loads(resp.data)["return_code"] == "FAIL"
    order = fresh(v["expected"]["out_trade_no"])
    assert order.status == "refunding" and order.refunds[0].status == "processing"
    assert recorded_verdicts() == ["bad_fields"]
