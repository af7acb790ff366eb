"""The user's data from WeChat: encryptedData (WeChat's own known answer), phone numbers, session health."""

from __future__ import annotations

import base64
import json

import pytest
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from miniapp_server.auth import sessions
from miniapp_server.extensions import db, store
from miniapp_server.models import User
from miniapp_server.services.user_data import mask_phone
from miniapp_server.wechat import crypto

from .conftest import bearer, login, vector

DEMO = vector("miniprogram_encryptedData_official_demo")
DEMO_IN = DEMO["inputs"]
DEMO_APPID = DEMO_IN["appid"]  # wx4f4bc4dec97d474b


def encrypt(session_key: str, iv: str, plain: bytes) -> str:
    cipher = AES.new(base64.b64decode(session_key), AES.MODE_CBC, base64.b64decode(iv))
    return base64.b64encode(cipher.encrypt(pad(plain, 16))).decode()


def with_session_key(token: str, session_key: str | None) -> None:
    """Give a logged-in token the session_key of WeChat's sample, as code2session would have."""
    key = sessions._key(token)
    entry = json.loads(store.get(key))
    entry["session_key"] = session_key
    store.set(key, json.dumps(entry), ttl=600)


# -- crypto: pure functions -----------------------------------------------------------------------

def test_known_answer_decrypts_to_the_documented_user():
    data = crypto.decrypt_user_data(DEMO_IN["session_key"], DEMO_IN["encryptedData"], DEMO_IN["iv"])
    assert data == json.loads(DEMO["expected"])
    assert data["openId"] == "oGZUI0egBJY1zhBYw2KhdUfwVJJE" and data["nickName"] == "Band"
    crypto.check_watermark(data, DEMO_APPID)  # ours: no error
    with pytest.raises(crypto.DecryptError) as err:
        crypto.check_watermark(data, "wxsandbox0000000001")
    assert err.value.code == "watermark_mismatch"


def flip_last_byte(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


OTHER_KEY = base64.b64encode(b"0123456789abcdef").decode()


@pytest.mark.parametrize("session_key, data, iv, code", [
    (DEMO_IN["session_key"], "not base64 at all!", DEMO_IN["iv"], "invalid_base64"),
    (DEMO_IN["session_key"], DEMO_IN["encryptedData"], "%%%", "invalid_base64"),
    ("", DEMO_IN["encryptedData"], DEMO_IN["iv"], "invalid_base64"),
    (DEMO_IN["session_key"], DEMO_IN["encryptedData"], base64.b64encode(b"short").decode(), "invalid_iv"),
    (base64.b64encode(b"k" * 24).decode(), DEMO_IN["encryptedData"], DEMO_IN["iv"], "invalid_session_key"),
    (DEMO_IN["session_key"], base64.b64encode(b"x" * 17).decode(), DEMO_IN["iv"], "invalid_encrypted_data"),
    (OTHER_KEY, DEMO_IN["encryptedData"], DEMO_IN["iv"], "decrypt_failed"),  # a wrong key
    (DEMO_IN["session_key"], flip_last_byte(DEMO_IN["encryptedData"]), DEMO_IN["iv"], "decrypt_failed"),  # padding
    (DEMO_IN["session_key"], encrypt(DEMO_IN["session_key"], DEMO_IN["iv"], b"hello"), DEMO_IN["iv"],
     "decrypt_failed"),  # good padding, not JSON
    (DEMO_IN["session_key"], encrypt(DEMO_IN["session_key"], DEMO_IN["iv"], b"[1, 2]"), DEMO_IN["iv"],
     "decrypt_failed"),  # JSON, not an object
    (DEMO_IN["session_key"], encrypt(DEMO_IN["session_key"], DEMO_IN["iv"], b"\xff\xfe{}"), DEMO_IN["iv"],
     "decrypt_failed"),  # not UTF-8
])
def test_bad_inputs_are_named(session_key, data, iv, code):
    with pytest.raises(crypto.DecryptError) as err:
        crypto.decrypt_user_data(session_key, data, iv)
    assert err.value.code == code and err.value.message


@pytest.mark.parametrize("data", [{}, {"watermark": "wx4f4bc4dec97d474b"}, {"watermark": {"appid": 1}},
                                  {"watermark": {"timestamp": 1}}])
def test_missing_or_odd_watermarks_are_refused(data):
    with pytest.raises(crypto.DecryptError) as err:
        crypto.check_watermark(data, DEMO_APPID)
    assert err.value.code == "watermark_mismatch"


# -- POST /api/user/decrypt ------------------------------------------------------------------------

@pytest.fixture
def demo_app(make_app):
    """An app whose decrypt checks the sample's appid, so its watermark is ours.

    The sandbox refuses to start beside another appid (Config.check_sandbox), so the app runs on the
    sandbox's own and logins go through it (the first one builds the emulator with the sandbox's appid);
    only then does the watermark check look for the sample's appid.
    """
    app = make_app()
    login(app.test_client())
    app.config["WECHAT_APPID"] = DEMO_APPID
    with app.app_context():
        yield app


def demo_body() -> dict:
    return {"encryptedData": DEMO_IN["encryptedData"], "iv": DEMO_IN["iv"]}


def test_decrypt_endpoint_answers_the_known_answer(demo_app):
    client = demo_app.test_client()
    token = login(client)["token"]
    with_session_key(token, DEMO_IN["session_key"])
    resp = client.post("/api/user/decrypt", json=demo_body(), headers=bearer(token))
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["openId"] == "oGZUI0egBJY1zhBYw2KhdUfwVJJE" and data["nickName"] == "Band"
    assert data["watermark"] == {"timestamp": 1477314187, "appid": DEMO_APPID}
    assert DEMO_IN["session_key"] not in resp.get_data(as_text=True)


def test_the_same_data_under_another_appid_is_refused(client, user):
    with_session_key(user["token"], DEMO_IN["session_key"])  # the app here is wxsandbox0000000001
    resp = client.post("/api/user/decrypt", json=demo_body(), headers=user["headers"])
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "decrypt_failed"  # one error for all


def test_data_for_another_session_key_is_refused(demo_app):
    client = demo_app.test_client()
    token = login(client)["token"]  # the sandbox's own random session_key, not the sample's
    resp = client.post("/api/user/decrypt", json=demo_body(), headers=bearer(token))
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "decrypt_failed"


@pytest.mark.parametrize("body, code", [
    ({"iv": DEMO_IN["iv"]}, "missing_encrypted_data"),
    ({"encryptedData": DEMO_IN["encryptedData"]}, "missing_iv"),
    ({"encryptedData": 5, "iv": DEMO_IN["iv"]}, "missing_encrypted_data"),
    ({"encryptedData": DEMO_IN["encryptedData"], "iv": ["x"]}, "missing_iv"),
    ({"encryptedData": "@@@@", "iv": DEMO_IN["iv"]}, "invalid_base64"),
    ({"encryptedData": DEMO_IN["encryptedData"], "iv": "AAAA"}, "invalid_iv"),
    ({"encryptedData": DEMO_IN["encryptedData"][:-8] + "AAAAAA==", "iv": DEMO_IN["iv"]}, "decrypt_failed"),
    ({"encryptedData": "A" * 40000, "iv": DEMO_IN["iv"]}, "invalid_encrypted_data"),
])
def test_decrypt_bad_inputs_get_400_with_a_code(demo_app, body, code):
    client = demo_app.test_client()
    token = login(client)["token"]
    with_session_key(token, DEMO_IN["session_key"])
    resp = client.post("/api/user/decrypt", json=body, headers=bearer(token))
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["code"] == code


@pytest.mark.parametrize("raw, code", [(b"", "missing_body"), (b"{not json", "invalid_json"), (b"[]", "invalid_json")])
def test_decrypt_bad_bodies(client, user, raw, code):
    resp = client.post("/api/user/decrypt", data=raw, headers={**user["headers"], "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == code


@pytest.mark.parametrize("session_key", ["", None])
def test_a_session_without_a_session_key_gets_400(client, user, session_key):
    with_session_key(user["token"], session_key)
    resp = client.post("/api/user/decrypt", json=demo_body(), headers=user["headers"])
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "no_session_key"


@pytest.mark.parametrize("path", ["/api/user/decrypt", "/api/user/phone"])
def test_no_login_no_user_data(client, path):
    resp = client.post(path, json=demo_body())
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "missing_token"
    resp = client.post(path, json=demo_body(), headers=bearer("expired-or-made-up"))
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"


# -- POST /api/user/phone ---------------------------------------------------------------------------

def stored_phone(user_id: int) -> str | None:
    db.session.expire_all()
    return db.session.get(User, user_id).phone


def test_phone_number_is_stored_and_answered_masked(client, user):
    resp = client.post("/api/user/phone", json={"code": "tel:13912345678"}, headers=user["headers"])
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["phone"] == "139****5678" and data["country_code"] == "86"
    assert data["user"]["id"] == user["user"]["id"] and data["user"]["has_phone"] is True
    assert "13912345678" not in resp.get_data(as_text=True)
    assert stored_phone(user["user"]["id"]) == "13912345678"


def test_a_new_number_replaces_the_old_one(client, user):
    for number in ("13900000001", "13900000002"):
        assert client.post("/api/user/phone", json={"code": f"tel:{number}"}, headers=user["headers"]).status_code == 200
    assert stored_phone(user["user"]["id"]) == "13900000002"


def test_a_foreign_number_is_stored_with_its_country_code(client, user):
    resp = client.post("/api/user/phone", json={"code": "tel:+1-2025550123"}, headers=user["headers"])
    assert resp.status_code == 200 and resp.get_json()["country_code"] == "1"
    assert stored_phone(user["user"]["id"]) == "+12025550123"
    assert resp.get_json()["phone"] == "+12*****0123"


@pytest.mark.parametrize("body, status, code", [
    ({}, 400, "missing_code"),
    ({"code": ""}, 400, "missing_code"),
    ({"code": 12345}, 400, "missing_code"),
    ({"code": "x" * 200}, 400, "invalid_code"),
    ({"code": "line\nbreak"}, 400, "invalid_code"),
    ({"code": "bad-code"}, 400, "invalid_phone_code"),
    ({"code": "busy"}, 503, "wechat_unavailable"),
    ({"code": "frequent"}, 429, "wechat_rate_limited"),
])
def test_phone_bad_inputs_and_wechat_refusals(client, user, body, status, code):
    resp = client.post("/api/user/phone", json=body, headers=user["headers"])
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["error"]["code"] == code
    assert stored_phone(user["user"]["id"]) is None  # nothing written


def test_a_phone_code_works_once(client, user):
    assert client.post("/api/user/phone", json={"code": "one-tap"}, headers=user["headers"]).status_code == 200
    again = client.post("/api/user/phone", json={"code": "one-tap"}, headers=user["headers"])
    assert again.status_code == 400 and again.get_json()["error"]["code"] == "invalid_phone_code"


def test_a_login_whose_user_is_gone_gets_401(client, user):
    db.session.delete(db.session.get(User, user["user"]["id"]))
    db.session.commit()
    resp = client.post("/api/user/phone", json={"code": "tel:13900000003"}, headers=user["headers"])
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("number, masked", [("13800138000", "138****8000"), ("+12025550123", "+12*****0123"),
                                            ("12345", "***45")])
def test_masking(number, masked):
    assert mask_phone(number) == masked


# -- POST /api/auth/check: session health -----------------------------------------------------------

def test_check_answers_valid_and_the_time_left(app, client, user):
    resp = client.post("/api/auth/check", headers=user["headers"])
    assert resp.status_code == 200
    data = resp.get_json()
    assert data["valid"] is True and isinstance(data["expires_in"], int)
    assert app.config["SESSION_TTL"] - 60 < data["expires_in"] <= app.config["SESSION_TTL"]


def test_check_does_not_extend_the_session(client, user):
    key = sessions._key(user["token"])
    store.set(key, store.get(key), ttl=100)  # the session is nearly over
    data = client.post("/api/auth/check", headers=user["headers"]).get_json()
    assert data["valid"] is True and data["expires_in"] <= 100  # asking is not renewing: log in again to renew


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_token"),
    ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
])
def test_check_without_a_good_token_is_401(client, headers, code):
    resp = client.post("/api/auth/check", headers=headers)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == code


def test_check_after_logout_is_401(client, user):
    assert client.post("/api/auth/logout", headers=user["headers"]).status_code == 204
    resp = client.post("/api/auth/check", headers=user["headers"])
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"


def test_every_decryption_failure_gets_one_answer_word_for_word(demo_app):
    """No padding oracle: bad padding, not UTF-8, not JSON, not an object, another appid all answer alike."""
    from Crypto.Cipher import AES
    from Crypto.Util.Padding import pad

    client = demo_app.test_client()
    token = login(client)["token"]
    with_session_key(token, DEMO_IN["session_key"])
    key, iv = base64.b64decode(DEMO_IN["session_key"]), base64.b64decode(DEMO_IN["iv"])

    def encrypt(plain: bytes, padded: bool = True) -> str:
        return base64.b64encode(AES.new(key, AES.MODE_CBC, iv).encrypt(pad(plain, 16) if padded else plain)).decode()

    bodies = {
        "bad padding": flip_last_byte(DEMO_IN["encryptedData"]),
        "no padding at all": encrypt(b"x" * 32, padded=False),
        "not utf-8": encrypt(b"\xff\xfe not text"),
        "not json": encrypt(b"hello, not json"),
        "not an object": encrypt(b"[1, 2, 3]"),
        "nested too deep": encrypt(b"[" * 500 + b"]" * 500),
        "another appid": encrypt(json.dumps({"openId": "o", "watermark": {"appid": "wx0000000000000000"}}).encode()),
    }
    answers = set()
    for name, data in bodies.items():
        resp = client.post("/api/user/decrypt", json={"encryptedData": data, "iv": DEMO_IN["iv"]},
                           headers=bearer(token))
        assert resp.status_code == 400, name
        answers.add(resp.get_data())
    assert len(answers) == 1, answers
    assert json.loads(answers.pop())["error"]["code"] == "decrypt_failed"
