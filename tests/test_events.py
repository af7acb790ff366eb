"""GET/POST /api/wechat/events: the URL check, plain and safe mode in JSON and XML, the order-shipping
events (completion exactly once, estimated settlement recorded only, shipping reminders), replays and
every kind of bad push refused without a change, and the audit trail's redaction."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from miniapp_server.extensions import db
from miniapp_server.models import Order, PushEvent, WeChatExchange
from miniapp_server.services import events
from miniapp_server.services.shipping import ship_order
from miniapp_server.wechat import push
from miniapp_server.wechat.push import PushCipher

from .ops_helpers import fresh, paid_order

VECTORS = {v["name"]: v for v in json.loads(
    (Path(__file__).parent / "fixtures" / "message-push-vectors.json").read_text())["vectors"]}


# -- helpers -------------------------------------------------------------------------------------------

def cipher_of(app) -> PushCipher | None:
    key = app.config["WECHAT_PUSH_AES_KEY"]
    return PushCipher(key, app.config["WECHAT_APPID"]) if key else None


def sealed(app, message: dict, data_format: str = "json", timestamp: int | None = None, nonce: str | None = None,
           cipher: PushCipher | None | str = "app") -> tuple[dict, bytes]:
    cipher = cipher_of(app) if cipher == "app" else cipher
    return push.seal_push(message, data_format, app.config["WECHAT_PUSH_TOKEN"], cipher,
                          timestamp if timestamp is not None else int(time.time()), nonce or secrets.token_hex(6))


def post(client, query: dict, body: bytes):
    return client.post("/api/wechat/events", query_string=query, data=body,
                       content_type="application/json" if body.lstrip()[:1] == b"{" else "text/xml")


def send(app, client, message: dict, data_format: str = "json", **kw):
    return post(client, *sealed(app, message, data_format, **kw))


def settlement(app, order: dict, **times) -> dict:
    return {"ToUserName": "gh_sandbox", "FromUserName": "o-buyer", "CreateTime": int(time.time()),
            "MsgType": "event", "Event": "trade_manage_order_settlement",
            "transaction_id": fresh(order["out_trade_no"]).transaction_id,
            "merchant_id": app.config["WECHAT_MCH_ID"], "merchant_trade_no": order["out_trade_no"],
            "pay_time": int(time.time()) - 3600, "shipped_time": int(time.time()) - 1800, **times}


def ship(no: str) -> None:
    """Shipped through the fulfilment service (virtual goods: no tracking number), uploaded to the sandbox."""
    outcome = ship_order(fresh(no), "virtual")
    assert outcome.error is None and fresh(no).status == "shipped"


def push_events(no: str | None = None) -> list[PushEvent]:
    db.session.rollback()
    query = db.select(PushEvent).order_by(PushEvent.id)
    if no:
        query = query.filter_by(out_trade_no=no)
    return list(db.session.execute(query).scalars())


def audit_rows() -> list[WeChatExchange]:
    db.session.rollback()
    return list(db.session.execute(db.select(WeChatExchange).filter_by(path="/api/wechat/events")
                                   .order_by(WeChatExchange.id)).scalars())


@pytest.fixture
def shipped(client, user) -> dict:
    order = paid_order(client, user)
    ship(order["out_trade_no"])
    return order


# -- the URL check ---------------------------------------------------------------------------------------

def test_the_url_check_echoes_only_when_signed_with_our_token(app, client):
    token = app.config["WECHAT_PUSH_TOKEN"]
    query = {"timestamp": "1714036504", "nonce": "1514711492", "echostr": "4375120948345356249"}
    good = client.get("/api/wechat/events", query_string={**query, "signature": push.signature(
        token, "1714036504", "1514711492")})
    assert good.status_code == 200 and good.data == b"4375120948345356249"
    assert good.mimetype == "text/plain"
    forged = client.get("/api/wechat/events", query_string={**query, "signature": push.signature(
        "another", "1714036504", "1514711492")})
    assert forged.status_code == 403 and forged.get_json()["error"]["code"] == "bad_signature"
    assert b"4375120948345356249" not in forged.data
    assert client.get("/api/wechat/events").status_code == 400  # nothing to check
    # The audit keeps the exchange, not the signature.
    rows = audit_rows()
    assert [r.outcome for r in rows] == ["200:url_checked", "403:bad_signature", "400:bad_query"]
    assert push.signature(token, "1714036504", "1514711492") not in rows[0].request


@pytest.mark.pay_api("v2")  # a deployment outside the sandbox (which refuses real credentials); Pay is not used
def test_the_documented_url_check_and_safe_push_through_the_endpoint(make_app, monkeypatch):
    """WeChat's own example (message-push doc): its Token, EncodingAESKey, appid, query and body."""
    doc = VECTORS["miniprogram_message_push_doc"]
    app = make_app(WECHAT_PUSH_TOKEN=doc["token"], WECHAT_PUSH_AES_KEY=doc["encoding_aes_key"],
                   WECHAT_APPID=doc["appid"], WECHAT_SANDBOX="0", WECHAT_APPSECRET="s", WECHAT_PAY_KEY="k" * 32,
                   WECHAT_MCH_ID="1900000109")
    client = app.test_client()
    check = client.get("/api/wechat/events", query_string=doc["url_check"]["query"])
    assert check.status_code == 200 and check.data == b"4375120948345356249"
    safe = doc["safe_post"]
    monkeypatch.setattr(events, "_now", lambda: 1714112445 + 3)  # the example's moment
    with app.app_context():
        resp = post(client, safe["query"], json.dumps(safe["body"]).encode())
        assert resp.status_code == 200 and resp.data == b"success"
        [row] = push_events()
        assert row.event == "debug_demo" and row.verdict == "acknowledged" and row.encrypted
        assert json.loads(row.message)["debug_str"] == "hello world"
        # The same example an hour later is stale: refused, nothing recorded.
        monkeypatch.setattr(events, "_now", lambda: 1714112445 + 3600)
        late = post(client, {**safe["query"], "nonce": "415670741"}, json.dumps(safe["body"]).encode())
        assert late.status_code == 403 and late.get_json()["error"]["code"] == "stale"
        assert len(push_events()) == 1


@pytest.mark.pay_api("v2")  # a deployment outside the sandbox; which Pay API does not matter here
def test_push_refused_when_not_configured(make_app):
    app = make_app(WECHAT_PUSH_TOKEN="", WECHAT_SANDBOX="0", WECHAT_APPID="wx0000000000000001",
                   WECHAT_APPSECRET="s", WECHAT_PAY_KEY="k" * 32, WECHAT_MCH_ID="1900000109")
    client = app.test_client()
    assert app.config["WECHAT_PUSH_TOKEN"] == ""
    resp = client.get("/api/wechat/events", query_string={"signature": "0" * 40, "timestamp": "1", "nonce": "1",
                                                          "echostr": "x"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "push_disabled"
    resp = client.post("/api/wechat/events", data=b"{}", query_string={"timestamp": "1", "nonce": "1"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "push_disabled"


# -- the settlement event ---------------------------------------------------------------------------------

@pytest.mark.parametrize("data_format", ["json", "xml"])
@pytest.mark.parametrize("mode", ["safe", "plain"])
def test_confirmed_receipt_completes_a_shipped_order_once(make_app, data_format, mode):
    from .conftest import bearer, login

    app = make_app(**({"WECHAT_PUSH_AES_KEY": ""} if mode == "plain" else {}))
    assert bool(app.config["WECHAT_PUSH_AES_KEY"]) is (mode == "safe")
    client = app.test_client()
    with app.app_context():
        user = {"headers": bearer(login(client)["token"])}
        order = paid_order(client, user)
        no = order["out_trade_no"]
        ship(no)
        confirmed = int(time.time()) - 60
        message = settlement(app, order, confirm_receive_method=2, confirm_receive_time=confirmed,
                             settlement_time=confirmed + 5)
        query, body = sealed(app, message, data_format)
        if mode == "safe":
            assert no.encode() not in body  # only ciphertext on the wire
        resp = post(client, query, body)
        assert resp.status_code == 200 and resp.data == b"success"
        done = fresh(no)
        assert done.status == "completed" and int(done.received_at.timestamp()) == confirmed
        api = client.get(f"/api/orders/{no}", headers=user["headers"]).get_json()
        assert api["status"] == "completed" and api["received_at"] == done.received_at.isoformat()
        # WeChat pushing it again (a new nonce) and replaying the very same push: nothing changes.
        assert send(app, client, message, data_format).status_code == 200
        assert post(client, query, body).status_code == 200
        assert fresh(no).received_at == done.received_at
        assert [e.verdict for e in push_events(no)] == ["completed", "duplicate", "duplicate"]
        assert all(e.data_format == data_format and e.encrypted is (mode == "safe") for e in push_events(no))


def test_the_estimated_settlement_variant_is_recorded_and_changes_nothing(app, client, shipped):
    no = shipped["out_trade_no"]
    before = fresh(no)
    estimated = int(time.time()) + 10 * 86400
    resp = send(app, client, settlement(app, shipped, estimated_settlement_time=estimated))
    assert resp.status_code == 200 and resp.data == b"success"
    after = fresh(no)
    assert after.status == "shipped" and after.received_at is None and after.updated_at == before.updated_at
    [row] = push_events(no)
    assert row.verdict == "settlement_estimated" and "estimated settlement at" in row.detail
    # WeChat sends the empty fields as zeros, too (seen by developers): still nothing but a record.
    resp = send(app, client, settlement(app, shipped, estimated_settlement_time=estimated, confirm_receive_time=0,
                                        settlement_time=0), "xml")
    assert resp.status_code == 200 and fresh(no).status == "shipped"
    assert [e.verdict for e in push_events(no)] == ["settlement_estimated"] * 2


def test_a_settlement_by_itself_completes_with_the_settlement_time(app, client, shipped):
    settled = int(time.time()) - 5
    assert send(app, client, settlement(app, shipped, settlement_time=settled,
                                        confirm_receive_method=1)).status_code == 200
    order = fresh(shipped["out_trade_no"])
    assert order.status == "completed" and int(order.received_at.timestamp()) == settled


def test_concurrent_duplicates_make_one_completion(app, shipped):
    no = shipped["out_trade_no"]
    message = settlement(app, shipped, confirm_receive_time=int(time.time()) - 1)
    copies = [sealed(app, message) for _ in range(8)]  # WeChat's copies: each its own nonce
    copies += [copies[0]] * 4  # and the very same request several times
    answers: list[int] = []

    def deliver(query, body):
        with app.app_context():
            answers.append(post(app.test_client(), query, body).status_code)

    threads = [threading.Thread(target=deliver, args=c) for c in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    # Every copy was answered without a 500: success, or (a copy still being handled) 503 to come back.
    assert set(answers) <= {200, 503} and answers.count(200) >= 8
    verdicts = [e.verdict for e in push_events(no)]
    assert verdicts.count("completed") == 1 and set(verdicts) == {"completed", "duplicate"}
    assert fresh(no).status == "completed"


def test_a_paid_order_completed_by_wechat_is_flagged_as_shipped_elsewhere(app, client, user):
    order = paid_order(client, user)
    assert send(app, client, settlement(app, order, confirm_receive_time=int(time.time()))).status_code == 200
    assert fresh(order["out_trade_no"]).status == "completed"
    assert push_events(order["out_trade_no"])[0].verdict == "completed_unshipped"


@pytest.mark.parametrize("status", ["refunding", "refunded", "unpaid", "closed"])
def test_orders_that_cannot_complete_keep_their_state(app, client, user, status):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    db.session.execute(update(Order).where(Order.out_trade_no == no).values(status=status))
    db.session.commit()
    assert send(app, client, settlement(app, order, confirm_receive_time=int(time.time()))).status_code == 200
    assert fresh(no).status == status and fresh(no).received_at is None
    assert push_events(no)[0].verdict == "not_completable"


def test_pushes_about_orders_not_ours_change_nothing(app, client, shipped):
    no = shipped["out_trade_no"]
    now = int(time.time())
    cases = [
        ({"merchant_trade_no": "unknown" + no[7:], "transaction_id": "4200000000000000000000000001"},
         "unknown_order"),
        ({"merchant_id": "1230000109"}, "other_merchant"),
        ({"transaction_id": "4200000000000000000000000002"}, "transaction_mismatch"),
    ]
    for change, verdict in cases:
        resp = send(app, client, {**settlement(app, shipped, confirm_receive_time=now), **change})
        assert resp.status_code == 200, verdict
        assert push_events()[-1].verdict == verdict
    assert fresh(no).status == "shipped"
    # Found by transaction_id alone, as WeChat may name it.
    message = settlement(app, shipped, confirm_receive_time=now)
    del message["merchant_trade_no"]
    assert send(app, client, message).status_code == 200 and fresh(no).status == "completed"


# -- the other events ----------------------------------------------------------------------------------

def test_remind_shipping_flags_a_paid_order_for_the_operator(app, client, user, runner):
    order, other = paid_order(client, user), paid_order(client, user)
    no = order["out_trade_no"]
    remind = {"ToUserName": "gh_sandbox", "FromUserName": "o-buyer", "CreateTime": int(time.time()),
              "MsgType": "event", "Event": "trade_manage_remind_shipping", "merchant_id": app.config["WECHAT_MCH_ID"],
              "merchant_trade_no": no, "transaction_id": fresh(no).transaction_id,
              "pay_time": int(time.time()) - 49 * 3600, "msg": "你的订单已超过48小时未发货，请尽快发货"}
    assert send(app, client, remind, "xml").status_code == 200
    assert fresh(no).shipping_reminded_at is not None and fresh(no).status == "paid"
    assert push_events(no)[0].verdict == "shipping_reminded"
    listed = runner.invoke(args=["orders", "list", "--needs-shipping", "--json"])
    assert listed.exit_code == 0
    assert [o["out_trade_no"] for o in json.loads(listed.output)] == [no]  # not the other, unreminded one
    assert other["out_trade_no"] not in listed.output
    shown = runner.invoke(args=["orders", "show", no])
    assert "trade_manage_remind_shipping" in shown.output and "shipping_reminded" in shown.output
    # Once shipped it no longer needs shipping; a late reminder is recorded only.
    ship(no)
    assert json.loads(runner.invoke(args=["orders", "list", "--needs-shipping", "--json"]).output) == []
    assert send(app, client, remind).status_code == 200
    assert push_events(no)[-1].verdict == "already_shipped"


def test_remind_access_api_and_unknown_events_are_acknowledged_and_recorded(app, client, caplog):
    caplog.set_level("WARNING", logger="miniapp_server.services.events")
    base = {"ToUserName": "gh_sandbox", "FromUserName": "o-wechat", "CreateTime": int(time.time()),
            "MsgType": "event"}
    assert send(app, client, {**base, "Event": "trade_manage_remind_access_api",
                              "msg": "请尽快接入发货信息管理服务API"}).status_code == 200
    assert send(app, client, {**base, "Event": "wxa_category_audit", "nested": {"a": [1, 2]}}).status_code == 200
    nested_xml = (b"<xml><ToUserName>gh</ToUserName><MsgType>event</MsgType><Event>some_new_event</Event>"
                  b"<List><Item><a>1</a></Item><Item><a>2</a></Item></List></xml>")
    assert send(app, client, push.parse_document(nested_xml)[1], "xml").status_code == 200
    assert send(app, client, {**base, "MsgType": "text", "Content": "hi"}).status_code == 200
    rows = push_events()
    assert [(r.event, r.verdict) for r in rows] == [
        ("trade_manage_remind_access_api", "access_api_reminder"), ("wxa_category_audit", "acknowledged"),
        ("some_new_event", "acknowledged"), ("text", "acknowledged")]
    assert "发货信息管理服务API" in caplog.text


# -- bad pushes: refused, nothing changes, never a 500 --------------------------------------------------

def test_forged_tampered_replayed_wrong_appid_garbage_and_oversized_pushes_change_nothing(app, client, shipped):
    no = shipped["out_trade_no"]
    message = settlement(app, shipped, confirm_receive_time=int(time.time()))
    token = app.config["WECHAT_PUSH_TOKEN"]
    query, body = sealed(app, message)
    other_app = PushCipher(app.config["WECHAT_PUSH_AES_KEY"], "wx0000000000000bad")
    cases = {
        "forged signature": (dict(query, msg_signature=push.signature("guess", query["timestamp"], query["nonce"],
                                                                      json.loads(body)["Encrypt"])), body, 403),
        "no signature": ({k: v for k, v in query.items() if k != "msg_signature"}, body, 403),
        "tampered ciphertext": (query, body.replace(b'"Encrypt":"', b'"Encrypt":"Zm9v'), 403),
        "plain body in safe mode": (dict(query, signature=push.signature(token, query["timestamp"], query["nonce"])),
                                    json.dumps(message).encode(), 403),
        "wrong appid": (*sealed(app, message, cipher=other_app), 403),
        "another key": (*sealed(app, message, cipher=PushCipher("B" * 43, app.config["WECHAT_APPID"])), 400),
        "stale": (*sealed(app, message, timestamp=int(time.time()) - 3600), 403),
        "from the future": (*sealed(app, message, timestamp=int(time.time()) + 3600), 403),
        "garbage": (query, b"\x00\xffgarbage", 400),
        "not an object": (query, b"[1,2,3]", 400),
        "billion laughs": (query, b'<!DOCTYPE x [<!ENTITY a "a">]><xml><Encrypt>&a;</Encrypt></xml>', 400),
        "bad timestamp": (dict(query, timestamp="yesterday"), body, 400),
        "oversized": (query, b"{" + b" " * (push.MAX_PUSH_BODY + 10) + b"}", 413),
        "empty": (query, b"", 400),
    }
    for name, (q, b, status) in cases.items():
        resp = post(client, q, b)
        assert resp.status_code == status, (name, resp.status_code, resp.data[:200])
        assert resp.data != b"success" and resp.get_json()["error"]["code"], name
    assert fresh(no).status == "shipped" and push_events() == []
    # The genuine push still works afterwards, once; replaying it changes nothing; its nonce with
    # another body (plain mode's weakness, here refused even in safe mode) is refused.
    assert post(client, query, body).data == b"success" and fresh(no).status == "completed"
    assert post(client, query, body).data == b"success"
    _, other_body = sealed(app, {**message, "confirm_receive_time": int(time.time()) - 99})
    again = post(client, query, other_body)
    assert again.status_code == 403  # msg_signature covers the body: a changed body does not verify
    assert [e.verdict for e in push_events(no)] == ["completed", "duplicate"]
    assert int(fresh(no).received_at.timestamp()) == message["confirm_receive_time"]


def test_plain_mode_nonce_reuse_with_another_body_is_refused_as_a_replay(make_app):
    from .conftest import bearer, login

    app = make_app(WECHAT_PUSH_AES_KEY="")
    client = app.test_client()
    with app.app_context():
        order = paid_order(client, {"headers": bearer(login(client)["token"])})
        ship(order["out_trade_no"])
        estimated = settlement(app, order, estimated_settlement_time=int(time.time()) + 86400)
        query, body = sealed(app, estimated)
        assert post(client, query, body).data == b"success"
        # The plain signature covers only timestamp and nonce: a captured one with a forged body.
        forged = json.dumps(settlement(app, order, confirm_receive_time=int(time.time()))).encode()
        resp = post(client, query, forged)
        assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "replayed"
        assert fresh(order["out_trade_no"]).status == "shipped"


def test_a_verified_push_with_unreadable_fields_is_refused_and_recorded(app, client, shipped):
    no = shipped["out_trade_no"]
    for change in ({"confirm_receive_time": "tomorrow"}, {"confirm_receive_time": 12}, {"merchant_trade_no": ["x"]},
                   {"merchant_trade_no": None, "transaction_id": None}):
        resp = send(app, client, {**settlement(app, shipped), **change})
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_fields", change
    assert fresh(no).status == "shipped"
    assert {e.verdict for e in push_events()} == {"bad_fields"}


def test_a_database_failure_answers_503_and_the_retry_of_the_same_push_is_handled(app, client, shipped, monkeypatch):
    no = shipped["out_trade_no"]
    query, body = sealed(app, settlement(app, shipped, confirm_receive_time=int(time.time())))
    real = events._complete_once

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(events, "_complete_once", broken)
    resp = post(client, query, body)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert fresh(no).status == "shipped"
    monkeypatch.setattr(events, "_complete_once", real)
    assert post(client, query, body).data == b"success"  # WeChat's retry: same timestamp, nonce and body
    assert fresh(no).status == "completed"


def test_a_store_outage_answers_503_quickly(app, client, shipped, monkeypatch):
    from miniapp_server.extensions import store

    def down(*args, **kwargs):
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(type(store.backend), "add", down)
    resp = send(app, client, settlement(app, shipped, confirm_receive_time=int(time.time())))
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "store_unavailable"
    assert fresh(shipped["out_trade_no"]).status == "shipped"


# -- the audit trail ------------------------------------------------------------------------------------

def test_every_push_is_audited_with_signatures_and_ciphertext_redacted(app, client, shipped):
    no = shipped["out_trade_no"]
    query, body = sealed(app, settlement(app, shipped, confirm_receive_time=int(time.time())))
    encrypted = json.loads(body)["Encrypt"]
    forged = dict(query, msg_signature="0" * 40)
    assert post(client, forged, body).status_code == 403
    assert post(client, query, body).status_code == 200
    rows = audit_rows()
    assert [r.outcome for r in rows] == ["403:bad_signature", "200:completed"]
    assert rows[1].out_trade_no == no and rows[1].direction == "in"
    for row in rows:
        text = row.request + (row.response or "")
        assert encrypted not in text and query["msg_signature"] not in text and query["signature"] not in text
        assert app.config["WECHAT_PUSH_AES_KEY"] not in text and app.config["WECHAT_PUSH_TOKEN"] not in text
        assert "[redacted]" in text and "[encrypted, " in text
    # The verified push's decrypted fields are kept (what WeChat said), the refused one's claims too.
    assert no in rows[1].request and "trade_manage_order_settlement" in rows[1].request
    # The verified one is filed under its order (flask orders show), the forged one under none.
    assert rows[0].out_trade_no is None
    assert post(client, query, body).status_code == 200  # a replay: filed under the order too
    assert audit_rows()[-1].out_trade_no == no and audit_rows()[-1].outcome == "200:duplicate"


# -- settings -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("push_env, message", [
    ({"WECHAT_PUSH_TOKEN": "consoletoken1"}, "go together"),  # plain mode: its signature does not cover the body
    ({"WECHAT_PUSH_AES_KEY": "K" * 43}, "needs WECHAT_PUSH_TOKEN"),
    ({"WECHAT_PUSH_TOKEN": "consoletoken1", "WECHAT_PUSH_AES_KEY": "K" * 42}, "43 characters"),
    ({"WECHAT_PUSH_TOKEN": "consoletoken1", "WECHAT_PUSH_AES_KEY": "K" * 42 + "/"}, "43 characters"),
    ({"WECHAT_PUSH_TOKEN": "to ken!", "WECHAT_PUSH_AES_KEY": "K" * 43}, "3 to 32 letters"),
])
def test_production_refuses_half_or_malformed_push_settings(tmp_path, push_env, message):
    from miniapp_server import ConfigError, create_app

    from .test_app_factory import PRODUCTION

    env = {**PRODUCTION, "EMBEDDED_STORE_PATH": str(tmp_path / "s.db"), "DATABASE_URL": f"sqlite:///{tmp_path}/p.db",
           **push_env}
    with pytest.raises(ConfigError, match=message) as err:
        create_app(env=env)
    assert "K" * 42 not in str(err.value) and "consoletoken1" not in str(err.value)


def test_production_starts_with_both_push_settings_or_neither(tmp_path):
    from miniapp_server import create_app

    from .test_app_factory import PRODUCTION

    base = {**PRODUCTION, "EMBEDDED_STORE_PATH": str(tmp_path / "s.db"), "DATABASE_URL": f"sqlite:///{tmp_path}/p.db"}
    assert create_app(env=base).config["WECHAT_PUSH_TOKEN"] == ""  # no push: refused at the URL
    app = create_app(env={**base, "WECHAT_PUSH_TOKEN": "consoletoken1", "WECHAT_PUSH_AES_KEY": "K" * 43})
    assert app.config["WECHAT_PUSH_AES_KEY"] == "K" * 43


def test_the_sandbox_refuses_a_real_push_token_or_key(make_app):
    from miniapp_server import ConfigError

    for setting in ({"WECHAT_PUSH_TOKEN": "consoletoken1"}, {"WECHAT_PUSH_AES_KEY": "K" * 43}):
        with pytest.raises(ConfigError, match="real credentials") as err:
            make_app(**setting)
        assert "consoletoken1" not in str(err.value) and "K" * 43 not in str(err.value)


def test_sandbox_defaults_to_safe_mode_and_an_empty_key_asks_for_plain_mode(make_app):
    from miniapp_server.config import SANDBOX_PUSH_AES_KEY, SANDBOX_PUSH_TOKEN

    app = make_app()
    assert (app.config["WECHAT_PUSH_TOKEN"], app.config["WECHAT_PUSH_AES_KEY"]) == (SANDBOX_PUSH_TOKEN,
                                                                                    SANDBOX_PUSH_AES_KEY)
    assert push.check_encoding_aes_key(SANDBOX_PUSH_AES_KEY) is None
    assert make_app(WECHAT_PUSH_AES_KEY="").config["WECHAT_PUSH_AES_KEY"] == ""
