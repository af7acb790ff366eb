"""wx.login sessions: code2session through the sandbox, tokens in the store, and every bad input."""

import http.server
import json
import logging
import threading
import time

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import User

from .conftest import bearer, login


def test_login_gives_a_token_and_a_user(client):
    resp = client.post("/api/auth/login", json={"code": "abc"})
    assert resp.status_code == 200
    data = resp.get_json()
    assert len(data["token"]) >= 32 and data["expires_in"] == 7200
    assert data["user"]["id"] == 1 and data["user"]["openid"].startswith("o")
    assert resp.headers["X-WeChat-Sandbox"] == "1"


def test_two_codes_give_two_tokens_and_one_person_keeps_one_user(client):
    a, b = login(client, "alice#1"), login(client, "alice#2")
    c = login(client, "bob")
    assert len({a["token"], b["token"], c["token"]}) == 3
    assert a["user"]["id"] == b["user"]["id"] != c["user"]["id"]
    assert db.session.execute(db.select(db.func.count(User.id))).scalar_one() == 2


def test_session_key_never_leaves_the_server(client, caplog):
    caplog.set_level(logging.DEBUG)
    resp = client.post("/api/auth/login", json={"code": "secretive"})
    token = resp.get_json()["token"]
    assert "session_key" not in resp.get_data(as_text=True)
    check = client.post("/api/auth/check", headers=bearer(token))
    assert "session_key" not in check.get_data(as_text=True)
    from miniapp_server.auth import sessions
    key = sessions.lookup(token).session_key
    assert key and key not in resp.get_data(as_text=True) and key not in check.get_data(as_text=True)
    assert "login: user" in caplog.text  # the login was logged...
    assert key not in caplog.text and "session_key" not in caplog.text  # ...without the session_key
    assert key not in repr(sessions.lookup(token))


def test_token_guards_and_logout_revokes_at_once(client, user):
    assert client.get("/api/orders", headers=user["headers"]).status_code == 200
    assert client.post("/api/auth/logout", headers=user["headers"]).status_code == 204
    resp = client.get("/api/orders", headers=user["headers"])
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"


def test_token_expires_with_its_ttl(make_app):
    app = make_app(SESSION_TTL=1)
    client = app.test_client()
    token = login(client)["token"]
    assert client.post("/api/auth/check", headers=bearer(token)).status_code == 200
    time.sleep(1.3)
    resp = client.post("/api/auth/check", headers=bearer(token))
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_token"),
    ({"Authorization": "Basic abc"}, "missing_token"),
    ({"Authorization": "Bearer "}, "missing_token"),
    ({"Authorization": "Bearer garbage"}, "invalid_token"),
    ({"Authorization": "Bearer " + "x" * 5000}, "invalid_token"),
    ({"Authorization": "Bearer \u00e9\u00e9"}, "invalid_token"),
])
def test_bad_tokens_get_401(client, headers, code):
    resp = client.get("/api/orders", headers=headers)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == code


@pytest.mark.parametrize("kwargs, status, code", [
    ({}, 400, "missing_body"),
    ({"data": "code=abc", "content_type": "application/x-www-form-urlencoded"}, 400, "invalid_json"),
    ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
    ({"json": ["abc"]}, 400, "invalid_json"),
    ({"json": {}}, 400, "missing_code"),
    ({"json": {"code": ""}}, 400, "missing_code"),
    ({"json": {"code": "   "}}, 400, "missing_code"),
    ({"json": {"code": 123}}, 400, "missing_code"),
    ({"json": {"code": "x" * 2048}}, 400, "invalid_code"),
    ({"json": {"code": "bad\ncode"}}, 400, "invalid_code"),
    ({"json": {"code": "bad-code"}}, 400, "invalid_code"),
    ({"json": {"code": "frequent"}}, 429, "wechat_rate_limited"),
    ({"json": {"code": "busy"}}, 503, "wechat_unavailable"),
])
def test_bad_logins_are_clear_errors_and_write_nothing(client, kwargs, status, code):
    resp = client.post("/api/auth/login", **kwargs)
    assert resp.status_code == status
    assert resp.get_json()["error"]["code"] == code
    assert db.session.execute(db.select(db.func.count(User.id))).scalar_one() == 0


def test_login_is_rate_limited_per_client(make_app):
    app = make_app(LOGIN_RATE_LIMIT=3)
    client = app.test_client()
    for i in range(3):
        assert client.post("/api/auth/login", json={"code": f"c{i}"}).status_code == 200
    resp = client.post("/api/auth/login", json={"code": "c4"})
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "too_many_logins"
    other = client.post("/api/auth/login", json={"code": "c5"}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200


class _FakeWeChat(http.server.BaseHTTPRequestHandler):
    mode = "html"

    def do_GET(self):  # noqa: N802
        if self.mode == "slow":
            time.sleep(3)
        body = {"html": b"<html>502 Bad Gateway</html>", "errcode": json.dumps({"errcode": 40163, "errmsg": "code been used"}).encode(),
                "other": json.dumps({"errcode": 40013, "errmsg": "invalid appid"}).encode(), "slow": b"{}",
                "noopenid": b"{}"}[self.mode]
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if self.mode == "html" else "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_wechat():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeWeChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.mark.parametrize("mode, status, code", [
    ("html", 503, "wechat_unavailable"),
    ("errcode", 400, "invalid_code"),
    ("other", 502, "wechat_error"),
    ("noopenid", 503, "wechat_unavailable"),
    ("slow", 503, "wechat_unavailable"),
])
def test_wechat_answers_map_to_the_contracts_errors(make_app, fake_wechat, mode, status, code):
    _FakeWeChat.mode = mode
    app = make_app(WECHAT_API_BASE=f"http://127.0.0.1:{fake_wechat.server_port}")
    app.config["WECHAT_READ_TIMEOUT"] = 0.5
    app.extensions["wechat"].miniapp.http.timeout = (1.0, 0.5)
    started = time.monotonic()
    resp = app.test_client().post("/api/auth/login", json={"code": "abc"})
    assert resp.status_code == status
    assert resp.get_json()["error"]["code"] == code
    assert time.monotonic() - started < 2.5  # a slow WeChat costs at most the read timeout
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(User.id))).scalar_one() == 0


def test_sandbox_rejects_wrong_secret(make_app):
    app = make_app()
    resp = app.test_client().get("/sandbox/sns/jscode2session", query_string={
        "appid": app.config["WECHAT_APPID"], "secret": "wrong", "js_code": "abc", "grant_type": "authorization_code"})
    assert resp.get_json()["errcode"] == 40125


def test_sandbox_openid_is_stable_per_code(client, app):
    args = {"appid": app.config["WECHAT_APPID"], "secret": app.config["WECHAT_APPSECRET"], "js_code": "same",
            "grant_type": "authorization_code"}
    first = client.get("/sandbox/sns/jscode2session", query_string=args).get_json()
    second = client.get("/sandbox/sns/jscode2session", query_string=args).get_json()
    assert first["openid"] == second["openid"] and first["session_key"] != second["session_key"]
    token = client.get("/sandbox/cgi-bin/token", query_string={
        "grant_type": "client_credential", "appid": args["appid"], "secret": args["secret"]}).get_json()
    assert token["expires_in"] == 7200 and len(token["access_token"]) > 20
