"""Behind a proxy and in front of the world (issue 14, findings 6, 7, 12): links on PUBLIC_BASE_URL and never a
forwarded host, client addresses validated, a login limit no client can use against others or walk around,
and a sandbox that refuses real credentials and keeps its control calls to loopback."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest

from miniapp_server import ConfigError, create_app
from miniapp_server.config import SANDBOX_PAY_KEY
from miniapp_server.extensions import db
from miniapp_server.models import Order
from miniapp_server.public_urls import notify_url
from miniapp_server.sandbox.standalone import create_sandbox_app

from .conftest import bearer

EVIL = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443", "X-Forwarded-Prefix": "/evil"}


def login_from(client, address: str | None, code: str = "someone", peer: str = "127.0.0.1"):
    headers = {"X-Forwarded-For": address} if address else {}
    return client.post("/api/auth/login", json={"code": code}, headers=headers,
                       environ_base={"REMOTE_ADDR": peer})


def native_links(app, extra_headers: dict) -> dict:
    client = app.test_client()
    token = login_from(client, "198.51.100.20").get_json()["token"]
    order = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]},
                        headers=bearer(token)).get_json()
    resp = client.post(f"/api/orders/{order['out_trade_no']}/native", headers={**bearer(token), **extra_headers})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


# -- 6. links and addresses ---------------------------------------------------------------------------------

def test_links_are_made_on_public_base_url_whatever_the_request_says(make_app):
    app = make_app(PROXY_FIX_HOPS="1", PUBLIC_BASE_URL="https://shop.example/")
    links = native_links(app, {**EVIL, "X-Forwarded-For": "198.51.100.20"})
    assert links["checkout_url"].startswith("https://shop.example/pay/native/")
    assert links["qrcode_url"].startswith("https://shop.example/pay/native/")
    with app.test_request_context("/", headers=EVIL):
        assert notify_url() == "https://shop.example/api/pay/notify"
        from miniapp_server.services.refunds import refund_notify_url
        assert refund_notify_url() == "https://shop.example/api/pay/refund-notify"


def test_without_public_base_url_a_forwarded_host_is_never_believed(make_app):
    app = make_app(PROXY_FIX_HOPS="1")
    headers = {k: v for k, v in EVIL.items() if k != "Host"}
    links = native_links(app, {**headers, "X-Forwarded-For": "198.51.100.20"})
    for link in (links["checkout_url"], links["qrcode_url"]):  # the proxy's Proto may be believed, never a host
        parts = urlsplit(link)
        assert parts.hostname == "localhost" and parts.port is None and parts.path.startswith("/pay/native/"), link


def test_no_notify_url_is_made_from_the_host_header_outside_the_sandbox(make_app):
    app = make_app()
    app.config["WECHAT_SANDBOX"] = False  # as a development app talking to real WeChat
    with app.test_request_context("/", headers={"Host": "evil.example"}):
        with pytest.raises(Exception) as err:
            notify_url()
        assert getattr(err.value, "code", None) == "not_configured" and err.value.status == 503


@pytest.mark.parametrize("value", ["https://shop.example/path", "ftp://shop.example", "shop.example",
                                   "https://shop.example/?a=1", "https://u:p@shop.example"])
def test_public_base_url_must_be_an_origin(env, value):
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        create_app(env={**env, "PUBLIC_BASE_URL": value})


def test_a_forwarded_address_that_is_no_ip_is_neither_stored_nor_sent(make_app, monkeypatch):
    app = make_app(PROXY_FIX_HOPS="1")
    client = app.test_client()
    token = login_from(client, "198.51.100.20").get_json()["token"]
    order = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]},
                        headers=bearer(token)).get_json()
    gateway = app.extensions["wechat"].gateway
    sent = {}
    real = gateway.prepay
    monkeypatch.setattr(gateway, "prepay", lambda **kw: sent.update(kw) or real(**kw))
    resp = client.post(f"/api/orders/{order['out_trade_no']}/pay",
                       headers={**bearer(token), "X-Forwarded-For": "<svg/onload=1>"})
    assert resp.status_code == 200
    assert sent["client_ip"] == "127.0.0.1"
    with app.app_context():
        assert db.session.execute(db.select(Order.client_ip)).scalar_one() == "127.0.0.1"


# -- 7. the login limit ---------------------------------------------------------------------------------------

def test_one_clients_junk_codes_lock_out_only_that_client(make_app):
    app = make_app(PROXY_FIX_HOPS="1", LOGIN_RATE_LIMIT="3")
    client = app.test_client()
    for _ in range(3):
        assert login_from(client, "198.51.100.1", code="bad-code").status_code == 400
    assert login_from(client, "198.51.100.1", code="bad-code").status_code == 429
    assert login_from(client, "198.51.100.1", code="good").status_code == 429  # its own address only
    for n in range(3):  # another client behind the same proxy is untouched, and its refusals are apart too
        assert login_from(client, "198.51.100.2", code=f"user-{n}").status_code == 200
    assert login_from(client, "198.51.100.2", code="user-x").status_code == 429
    assert login_from(client, "198.51.100.3", code="user-y").status_code == 200


def test_rotating_x_forwarded_for_does_not_walk_around_the_limit(make_app):
    app = make_app(PROXY_FIX_HOPS="1", LOGIN_RATE_LIMIT="3")
    client = app.test_client()
    answers = [login_from(client, f"198.51.100.{n}", code=f"u{n}", peer="203.0.113.9").status_code for n in range(5)]
    assert answers == [200, 200, 200, 429, 429]  # not a trusted proxy: its X-Forwarded-For is ignored


def test_x_forwarded_for_without_declared_hops_is_a_warning(make_app, caplog):
    app = make_app()
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="miniapp_server.proxy"):
        for _ in range(3):
            login_from(client, "198.51.100.7")
    warnings = [r for r in caplog.records if "PROXY_FIX_HOPS=0" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per request


# -- 12. the sandbox ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("app_env", ["development", "production"])
@pytest.mark.parametrize("name, value", [("WECHAT_APPID", "wx0123456789abcdef"),
                                         ("WECHAT_PAY_KEY", "0123456789abcdef0123456789abcdef"),
                                         ("WECHAT_PAY_V3_KEY", "0123456789abcdef0123456789abcdef"),
                                         ("WECHAT_APPSECRET", "0123456789abcdef0123456789abcdef")])
def test_the_sandbox_refuses_to_start_beside_a_real_credential(env, app_env, name, value):
    with pytest.raises(ConfigError, match=name) as err:
        create_app(env={**env, "APP_ENV": app_env, "SECRET_KEY": "x" * 32, "WECHAT_SANDBOX": "1", name: value})
    assert value not in str(err.value)
    with pytest.raises(ConfigError, match=name):
        create_sandbox_app(env={**env, name: value})
    create_app(env={**env, "WECHAT_SANDBOX": "1", "WECHAT_PAY_KEY": SANDBOX_PAY_KEY})  # its own is fine


def test_control_calls_answer_loopback_only_unless_opened(make_app):
    app = make_app()
    client = app.test_client()
    outside = {"REMOTE_ADDR": "192.0.2.10"}
    for method, path in (("get", "/sandbox/control/notifications"), ("post", "/sandbox/control/pay"),
                         ("get", "/sandbox/control/calls"), ("post", "/sandbox/control/refund-notify")):
        resp = getattr(client, method)(path, json={}, environ_base=outside)
        assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden", path
    assert client.get("/sandbox/control/calls").status_code == 200  # loopback
    # WeChat's own paths stay open (a backend elsewhere calls them)
    resp = client.get("/sandbox/sns/jscode2session", environ_base=outside,
                      query_string={"appid": app.config["WECHAT_APPID"], "secret": app.config["WECHAT_APPSECRET"],
                                    "js_code": "abc", "grant_type": "authorization_code"})
    assert resp.status_code == 200 and "openid" in resp.get_json()
    opened = make_app(SANDBOX_CONTROL_ALLOW="192.0.2.0/24").test_client()
    assert opened.get("/sandbox/control/calls", environ_base=outside).status_code == 200
    anyone = make_app(SANDBOX_CONTROL_ALLOW="*").test_client()
    assert anyone.get("/sandbox/control/calls", environ_base={"REMOTE_ADDR": "203.0.113.1"}).status_code == 200


def test_the_in_app_sandbox_delivers_to_public_base_url_in_process(make_app):
    """Links (notify URL included) are on PUBLIC_BASE_URL; the in-app sandbox knows that name as the app's own."""
    from .ops_helpers import new_order, pay_in_sandbox, prepay

    app = make_app(PUBLIC_BASE_URL="https://shop.example.com")
    client = app.test_client()
    with app.app_context():
        token = login_from(client, None).get_json()["token"]
        user = {"token": token, "headers": bearer(token)}
        order = new_order(client, user)
        pay_in_sandbox(client, prepay(client, user, order))
        db.session.rollback()
        assert db.session.execute(db.select(Order.status)).scalar_one() == "paid"
