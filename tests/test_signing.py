"""WeChat Pay v2 signatures against the known answers from WeChat's own documentation."""

import pytest

from miniapp_server.wechat.http import make_session
from miniapp_server.wechat.pay import signing
from miniapp_server.wechat.pay.client import PayClient, PayCredentials

from .conftest import vector


@pytest.mark.parametrize("name", ["v2_sign_official_md5", "v2_sign_official_hmac_sha256"])
def test_official_signature_example(name):
    v = vector(name)
    assert signing.sign(v["inputs"]["params"], v["inputs"]["api_key"], v["inputs"]["sign_type"]) == v["expected"]


def test_request_payment_pay_sign_known_answer():
    v = vector("v2_requestPayment_paySign_official_md5")
    params = v["inputs"]["params"]
    client = PayClient(PayCredentials(params["appId"], "10000100", v["inputs"]["api_key"], "MD5"),
                       "http://unused", make_session())
    prepay_id = params["package"].removeprefix("prepay_id=")
    answer = client.jsapi_params(prepay_id, timestamp=int(params["timeStamp"]), nonce_str=params["nonceStr"])
    assert answer["paySign"] == v["expected"] == "22D9B4E54AB1950F51E0649E8810ACD6"
    assert {k: answer[k] for k in params} == params


def test_empty_values_and_sign_are_left_out():
    v = vector("v2_sign_official_md5")
    params = {**v["inputs"]["params"], "attach": "", "sign": "WHATEVER", "detail": None}
    assert signing.sign(params, v["inputs"]["api_key"]) == v["expected"]


def test_keys_sort_by_name_even_when_one_is_a_prefix_of_another():
    # WeChat sorts parameter names in ASCII order: "a" before "a0" before "a_b", though the joined "a0=..."
    # would sort before "a=..." as a string ('0' < '=').
    params = {"a_b": "3", "a0": "2", "a": "1", "a-": "4", "sign": "x", "empty": ""}
    assert signing._string_to_sign(params, "K") == "a=1&a-=4&a0=2&a_b=3&key=K"


@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
def test_verify_accepts_the_right_signature_and_nothing_else(sign_type):
    v = vector("v2_sign_official_md5")
    params = dict(v["inputs"]["params"])
    params["sign"] = signing.sign(params, v["inputs"]["api_key"], sign_type)
    assert signing.verify(params, v["inputs"]["api_key"], sign_type)
    assert signing.verify({**params, "sign": params["sign"].lower()}, v["inputs"]["api_key"], sign_type)
    assert not signing.verify({**params, "body": "tampered"}, v["inputs"]["api_key"], sign_type)
    assert not signing.verify(params, "another-key", sign_type)
    assert not signing.verify({**params, "sign": ""}, v["inputs"]["api_key"], sign_type)
    assert not signing.verify({k: val for k, val in params.items() if k != "sign"}, v["inputs"]["api_key"], sign_type)
    other = "HMAC-SHA256" if sign_type == "MD5" else "MD5"
    assert not signing.verify(params, v["inputs"]["api_key"], other)


def test_verify_uses_constant_time_comparison(monkeypatch):
    calls = []
    real = signing.hmac.compare_digest
    monkeypatch.setattr(signing.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    v = vector("v2_sign_official_md5")
    assert signing.verify({**v["inputs"]["params"], "sign": v["expected"]}, v["inputs"]["api_key"])
    assert calls, "verify must compare with hmac.compare_digest"


def test_unknown_sign_type_is_refused():
    with pytest.raises(ValueError):
        signing.sign({"a": "1"}, "k", "SHA1")
    assert not signing.verify({"a": "1", "sign": "X"}, "k", "SHA1")


def test_nonce_is_random_and_alphanumeric():
    nonces = {signing.nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 32 and n.isalnum() for n in nonces)
