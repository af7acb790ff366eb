"""Subscribe messages: the settings, the person's credits (POST/GET /api/user/subscriptions), WeChat's limits
per field kind (pinned with the examples of WeChat's own documentation), and the messages themselves:
exactly one per event per accepted template, none without a credit, none to another user, none before the
commit, one under concurrent copies, retried when WeChat failed, never when it refused; the sandbox's
subscribe/send with WeChat's errcodes; the operator's view (`flask orders show`) and the audit trail."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from miniapp_server import ConfigError
from miniapp_server.config import Config
from miniapp_server.extensions import db, wechat
from miniapp_server.message_settings import DEFAULT_PAGE, SANDBOX_TEMPLATES
from miniapp_server.models import MessageCredit, Product, SubscribeMessage, WeChatExchange
from miniapp_server.services import messages, payments, refunds, shipping
from miniapp_server.services.reconcile import reconcile
from miniapp_server.wechat.errors import WeChatUnavailable
from miniapp_server.wechat.subscribe import KINDS, Fen, fit, kind_of, valid

from .conftest import bearer, login
from .ops_helpers import fresh, new_order, paid_order, pay_in_sandbox, prepay, sandbox_calls

PAID, SHIPPED, REFUNDED = (SANDBOX_TEMPLATES[e][0] for e in ("paid", "shipped", "refunded"))


# -- helpers --------------------------------------------------------------------------------------------

def accept(client, user, *template_ids: str, at_wechat: bool = True) -> dict:
    """The person taps "allow" in wx.requestSubscribeMessage: WeChat counts it, the mini-program reports it."""
    if at_wechat:
        resp = client.post("/sandbox/control/subscribe",
                           json={"openid": user["user"]["openid"], "template_ids": list(template_ids)})
        assert resp.status_code == 200, resp.get_json()
    resp = client.post("/api/user/subscriptions", json={"accepted": list(template_ids)}, headers=user["headers"])
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def logged_in(client, code: str | None = None) -> dict:
    data = login(client, code)
    return {**data, "headers": bearer(data["token"])}


def sent(client, **filters) -> list[dict]:
    return client.get("/sandbox/control/messages", query_string=filters).get_json()["items"]


def rows(no: str | None = None) -> list[SubscribeMessage]:
    db.session.rollback()
    query = db.select(SubscribeMessage).order_by(SubscribeMessage.id)
    if no is not None:
        query = query.where(SubscribeMessage.order_id == fresh(no).id)
    return list(db.session.execute(query).scalars())


def our_credits(client, user) -> dict[str, int]:
    items = client.get("/api/user/subscriptions", headers=user["headers"]).get_json()["items"]
    return {i["template_id"]: i["credits"] for i in items}


def wechat_credits(client, user) -> dict[str, int]:
    return client.get("/sandbox/control/subscriptions", query_string={"openid": user["user"]["openid"]}) \
        .get_json()["credits"]


def china(moment: datetime) -> str:
    return moment.astimezone(timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M")


# -- settings -------------------------------------------------------------------------------------------

REAL = {"WECHAT_APPID": "wx1234567890abcdef", "WECHAT_SANDBOX": "0"}


def test_the_documented_settings_give_the_template_its_fields_and_page():
    cfg = Config.from_env({**REAL, "WECHAT_MSG_PAID_TEMPLATE": "aY74R-PsuU6c-IWTMNzyMstLJ0ZMrfn9nIpGLpkTBPs",
                           "WECHAT_MSG_PAID_FIELDS": " character_string1:out_trade_no, amount2:amount,thing3:item,"
                                                     "time4:paid_at,phrase5:status"})
    paid = cfg.WECHAT_MESSAGES["paid"]
    assert paid.template_id == "aY74R-PsuU6c-IWTMNzyMstLJ0ZMrfn9nIpGLpkTBPs"
    assert paid.fields == (("character_string1", "out_trade_no"), ("amount2", "amount"), ("thing3", "item"),
                           ("time4", "paid_at"), ("phrase5", "status"))
    assert paid.page == DEFAULT_PAGE and paid.page_for("N1") == "pages/order-detail/order-detail?out_trade_no=N1"
    assert set(cfg.WECHAT_MESSAGES) == {"paid"}  # not configured: not sent
    assert (cfg.WECHAT_MSG_STATE, cfg.WECHAT_MSG_LANG) == ("formal", "zh_CN")
    custom = Config.from_env({**REAL, "WECHAT_MSG_REFUNDED_TEMPLATE": "t-1", "WECHAT_MSG_STATE": "trial",
                              "WECHAT_MSG_REFUNDED_FIELDS": "amount1:refund_amount,date2:refunded_at",
                              "WECHAT_MSG_REFUNDED_PAGE": "pages/orders/orders?from=msg&no={out_trade_no}"})
    assert custom.WECHAT_MESSAGES["refunded"].page_for("N2") == "pages/orders/orders?from=msg&no=N2"
    assert custom.WECHAT_MSG_STATE == "trial"


def test_the_sandbox_has_its_own_templates_unless_told_otherwise():
    cfg = Config.from_env({})
    assert {e: t.template_id for e, t in cfg.WECHAT_MESSAGES.items()} == {"paid": PAID, "shipped": SHIPPED,
                                                                           "refunded": REFUNDED}
    assert cfg.WECHAT_MSG_STATE == "developer"
    off = Config.from_env({"WECHAT_MSG_SHIPPED_TEMPLATE": "off"})
    assert set(off.WECHAT_MESSAGES) == {"paid", "refunded"}


@pytest.mark.parametrize("settings, named", [
    ({"WECHAT_MSG_PAID_TEMPLATE": "t", "WECHAT_MSG_PAID_FIELDS": "character_string1=out_trade_no"},
     "WECHAT_MSG_PAID_FIELDS"),
    ({"WECHAT_MSG_PAID_TEMPLATE": "t", "WECHAT_MSG_PAID_FIELDS": "thing3:colour"}, "WECHAT_MSG_PAID_FIELDS"),
    ({"WECHAT_MSG_PAID_TEMPLATE": "t", "WECHAT_MSG_PAID_FIELDS": "colour3:item"}, "WECHAT_MSG_PAID_FIELDS"),
    ({"WECHAT_MSG_PAID_TEMPLATE": "t", "WECHAT_MSG_PAID_FIELDS": "phrase1:out_trade_no"}, "WECHAT_MSG_PAID_FIELDS"),
    ({"WECHAT_MSG_PAID_TEMPLATE": "t", "WECHAT_MSG_PAID_FIELDS": "character_string4:tracking_no"},
     "WECHAT_MSG_PAID_FIELDS"),  # a paid order has no tracking number yet
    ({"WECHAT_MSG_PAID_TEMPLATE": "t", "WECHAT_MSG_PAID_FIELDS": "thing3:item,thing3:status"},
     "WECHAT_MSG_PAID_FIELDS"),
    ({"WECHAT_MSG_PAID_TEMPLATE": "t", "WECHAT_MSG_PAID_FIELDS": ""}, "WECHAT_MSG_PAID_TEMPLATE"),
    ({"WECHAT_MSG_SHIPPED_FIELDS": "thing3:item"}, "WECHAT_MSG_SHIPPED_FIELDS"),
    ({"WECHAT_MSG_PAID_TEMPLATE": "t d", "WECHAT_MSG_PAID_FIELDS": "thing3:item"}, "WECHAT_MSG_PAID_TEMPLATE"),
    ({"WECHAT_MSG_PAID_TEMPLATE": "t", "WECHAT_MSG_PAID_FIELDS": "thing3:item", "WECHAT_MSG_PAID_PAGE": "p?u={openid}"},
     "WECHAT_MSG_PAID_PAGE"),
    ({"WECHAT_MSG_STATE": "beta"}, "WECHAT_MSG_STATE"),
    ({"WECHAT_MSG_LANG": "fr_FR"}, "WECHAT_MSG_LANG"),
])
def test_bad_settings_stop_the_app_naming_the_setting(settings, named):
    with pytest.raises(ConfigError, match=named):
        Config.from_env({**REAL, **settings})
    with pytest.raises(ConfigError, match=named):  # and so does the app
        from miniapp_server import create_app
        create_app(env={**REAL, **settings})


def test_production_never_opens_the_developer_version():
    prod = {**REAL, "APP_ENV": "production", "SECRET_KEY": "s", "WECHAT_APPSECRET": "x", "WECHAT_MCH_ID": "1",
            "WECHAT_PAY_KEY": "k" * 32, "WECHAT_NOTIFY_URL": "https://shop.example/api/pay/notify"}
    Config.from_env(prod).check()
    assert Config.from_env(prod).WECHAT_MSG_STATE == "formal"
    with pytest.raises(ConfigError, match="WECHAT_MSG_STATE"):
        Config.from_env({**prod, "WECHAT_MSG_STATE": "developer"}).check()


# -- WeChat's limits per field kind ---------------------------------------------------------------------

# Values WeChat's documentation gives as examples of each kind (订阅消息参数值内容限制说明, and the data of
# its request samples), and ones WeChat refused with 47003 in threads of its developer community.
DOCUMENTED_VALID = [
    ("time", "15:01"), ("time", "2019年10月1日 15:01"), ("date", "2019年10月1日"), ("date", "2019年10月1日 15:01"),
    ("date", "2019-12-25 09:42"), ("date", "2015年01月05日"), ("number", "339208499"),
    ("phone_number", "+86-0766-66888866"), ("car_number", "粤A8Z888挂"), ("phrase", "配送中"), ("phrase", "审核通过"),
    ("name", "订阅"), ("amount", "¥8.6"), ("amount", "¥214.00"), ("thing", "TIT创意园"),
    ("character_string", "27"), ("time", "15:01~16:30"),
]
DOCUMENTED_REFUSED = [
    ("phrase", "邀请金到账提醒"), ("phrase", "略略略略略略"),  # more than 5 Chinese characters: 47003
    ("thing", ""),  # "data.thing3.value is emtpy": 47003
    ("thing", "武志红2020年度课::自恋到自信,唤醒啊啊"),  # 21 characters
    ("character_string", "订单号123"), ("character_string", "x" * 33), ("amount", "¥12345678901"),
    ("time", "25:01"), ("time", "明天"), ("number", "12a"), ("letter", "abc1"), ("symbol", "!!!!!!"),
    ("phone_number", "1" * 18), ("car_number", "粤A8Z888挂12"), ("name", "欧阳一二三四五六七八九"),
    ("phrase", "OK"),
]


@pytest.mark.parametrize("kind, value", DOCUMENTED_VALID)
def test_wechats_own_examples_keep_its_rules(kind, value):
    assert valid(kind, value)


@pytest.mark.parametrize("kind, value", DOCUMENTED_REFUSED)
def test_what_wechat_refused_breaks_its_rules(kind, value):
    assert not valid(kind, value)


def test_keys_name_their_kind():
    assert kind_of("thing3") == "thing" and kind_of("character_string12") == "character_string"
    assert kind_of("amount2") == "amount" and kind_of("phone_number1") == "phone_number"
    assert kind_of("thing") is None and kind_of("colour3") is None and kind_of("enum1") is None


LONG_NAME = "超长的商品名称：手工烘焙埃塞俄比亚耶加雪菲日晒咖啡豆 Ethiopia Yirgacheffe 500g 礼盒装"
NASTY = [LONG_NAME, "", "   ", "\n\t", "a" * 500, "🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰🍰", "顺丰速运有限公司（同城急送）",
         "SF1234567890123456789012345678901234567890", "+86 (0766) 6688-8866-12345", "京A·12345·挂", "-12.5.6",
         "<script>alert(1)</script>", "Ab", "李"]


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("time", "date", "amount")])
def test_any_text_fits_every_text_kind(kind):
    for text in NASTY:
        value = fit(kind, text)
        assert valid(kind, value), (kind, text, value)


def test_fitting_cuts_to_each_kinds_limit():
    assert fit("thing", LONG_NAME) == LONG_NAME[:19] + "…" and len(fit("thing", LONG_NAME)) == 20
    assert fit("thing", "拿铁咖啡 Latte 等2件商品") == "拿铁咖啡 Latte 等2件商品"  # within the limit: unchanged
    assert fit("thing", "line one\nline two") == "line one line two"
    assert fit("character_string", "2026120100aabbccddeeff00112233445566") == "2026120100aabbccddeeff0011223344"
    assert fit("character_string", "单号SF1234") == "SF1234"
    assert fit("phrase", "已支付成功啦啦") == "已支付成功"
    assert fit("phrase", "OK") == "无"
    assert fit("name", "欧阳一二三四五六七八九十") == "欧阳一二三四五六七八"
    assert fit("name", "Alexander Hamilton-Burr Jr") == "Alexander Hamilton-B"
    assert fit("number", "共 12.50 元") == "12.50"
    assert fit("letter", "abc123def") == "abcdef"
    assert fit("symbol", "a-b+c*d/e%f") == "-+*/%"
    assert fit("phone_number", "+86 (0766) 66888866") == "+86(0766)66888866"
    assert fit("car_number", "粤 A8Z888 挂") == "粤A8Z888挂"


def test_times_and_amounts_in_each_kind_that_shows_them():
    moment = datetime(2019, 12, 25, 1, 42, 30, tzinfo=timezone.utc)  # 09:42 in China
    assert fit("time", moment) == fit("date", moment) == "2019-12-25 09:42"
    assert valid("time", fit("time", moment)) and valid("date", fit("date", moment))
    assert fit("amount", Fen(3600)) == "¥36.00" and fit("amount", Fen(5)) == "¥0.05"
    assert fit("number", Fen(123456)) == "1234.56" and fit("thing", Fen(1800)) == "18.00元"
    assert fit("character_string", Fen(99)) == "0.99"
    assert all(valid("amount", fit("amount", Fen(n))) for n in (1, 99, 100, 2_147_483_647))
    with pytest.raises(ValueError):
        fit("phrase", moment)
    with pytest.raises(ValueError):
        fit("time", "tomorrow")


# -- the person's credits: /api/user/subscriptions ------------------------------------------------------

def test_get_lists_the_templates_to_ask_for_and_the_credits(client, user):
    assert client.get("/api/user/subscriptions").status_code == 401
    body = client.get("/api/user/subscriptions", headers=user["headers"]).get_json()
    assert body["template_ids"] == [PAID, SHIPPED, REFUNDED]
    assert [(i["event"], i["template_id"], i["credits"]) for i in body["items"]] == [
        ("paid", PAID, 0), ("shipped", SHIPPED, 0), ("refunded", REFUNDED, 0)]


def test_each_accept_is_one_more_credit_and_a_reject_changes_none(client, user):
    accept(client, user, PAID, REFUNDED, at_wechat=False)
    body = accept(client, user, PAID, at_wechat=False)
    assert {i["template_id"]: (i["credits"], i["last_choice"]) for i in body["items"]} == {
        PAID: (2, "accept"), SHIPPED: (0, None), REFUNDED: (1, "accept")}
    resp = client.post("/api/user/subscriptions", json={"rejected": [PAID, SHIPPED]}, headers=user["headers"])
    assert resp.status_code == 200
    assert {i["template_id"]: (i["credits"], i["last_choice"]) for i in resp.get_json()["items"]} == {
        PAID: (2, "reject"), SHIPPED: (0, "reject"), REFUNDED: (1, "accept")}
    other = logged_in(client)
    assert our_credits(client, other) == {PAID: 0, SHIPPED: 0, REFUNDED: 0}  # credits are per person


@pytest.mark.parametrize("body, code", [
    ({"accepted": [PAID, "unknownTemplate0000000000000000000000000000"]}, "unknown_template"),
    ({"accepted": [PAID], "rejected": ["nope"]}, "unknown_template"),
    ({"accepted": PAID}, "invalid_subscriptions"),
    ({"accepted": [PAID, 3]}, "invalid_subscriptions"),
    ({"accepted": [PAID, PAID]}, "invalid_subscriptions"),
    ({"accepted": [PAID], "rejected": [PAID]}, "invalid_subscriptions"),
    ({"accepted": [PAID], "banned": [SHIPPED]}, "invalid_subscriptions"),
    ({}, "invalid_subscriptions"),
    ({"accepted": [PAID] + [f"t{i}" for i in range(20)]}, "invalid_subscriptions"),
])
def test_bad_reports_are_400s_that_change_nothing(client, user, body, code):
    resp = client.post("/api/user/subscriptions", json=body, headers=user["headers"])
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == code and resp.get_json()["error"]["message"]
    assert our_credits(client, user)[PAID] == 0  # the good template id in the same body did not count either
    assert db.session.execute(db.select(db.func.count(MessageCredit.id))).scalar_one() == 0


def test_a_body_that_is_no_object_is_a_400(client, user):
    for data in (b"[]", b"not json"):
        resp = client.post("/api/user/subscriptions", data=data, content_type="application/json",
                           headers=user["headers"])
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_json"


def test_concurrent_accepts_all_count(app, user):
    def report():
        with app.app_context():
            resp = app.test_client().post("/api/user/subscriptions", json={"accepted": [PAID]},
                                          headers=user["headers"])
            assert resp.status_code == 200

    threads = [threading.Thread(target=report) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    db.session.rollback()
    assert db.session.execute(db.select(MessageCredit.credits).filter_by(template_id=PAID)).scalar_one() == 6


# -- the paid message ------------------------------------------------------------------------------------

def test_paying_sends_one_message_to_the_owner_with_the_orders_fields(app, client, user):
    accept(client, user, PAID, REFUNDED)
    order = paid_order(client, user)
    no = order["out_trade_no"]
    stored = fresh(no)
    [message] = sent(client, out_trade_no=no)
    assert message["delivered"] and message["errcode"] == 0
    assert message["touser"] == user["user"]["openid"] and message["template_id"] == PAID
    assert message["page"] == f"pages/order-detail/order-detail?out_trade_no={no}"
    assert (message["miniprogram_state"], message["lang"]) == ("developer", "zh_CN")
    assert message["data"] == {"character_string1": no, "amount2": "¥36.00", "thing3": "拿铁咖啡 Latte",
                               "time4": china(stored.paid_at)}
    [row] = rows(no)
    assert (row.event, row.state, row.template_id, row.touser) == ("paid", "sent", PAID, user["user"]["openid"])
    assert row.sent_at is not None and row.msgid == str(message["msgid"]) and row.attempts == 1
    # One credit spent on both sides: ours and WeChat's agree.
    assert our_credits(client, user)[PAID] == 0 == wechat_credits(client, user)[PAID]
    assert our_credits(client, user)[REFUNDED] == 1 == wechat_credits(client, user)[REFUNDED]


def test_two_accepts_and_two_orders_make_two_messages_and_a_third_gets_none(client, user):
    accept(client, user, PAID)
    accept(client, user, PAID)
    nos = [paid_order(client, user)["out_trade_no"] for _ in range(3)]
    assert [len(sent(client, out_trade_no=no)) for no in nos] == [1, 1, 0]
    assert [len(rows(no)) for no in nos] == [1, 1, 0]
    assert our_credits(client, user)[PAID] == 0 == wechat_credits(client, user)[PAID]


def test_no_credit_no_message(client, user):
    before = sandbox_calls(client)["subscribe_send"]
    no = paid_order(client, user)["out_trade_no"]
    assert sandbox_calls(client)["subscribe_send"] == before  # WeChat was not even asked
    assert rows(no) == [] and sent(client, out_trade_no=no) == []


def test_a_message_goes_to_the_orders_owner_and_nobody_else(client, user):
    other = logged_in(client)
    accept(client, other, PAID)
    mine = paid_order(client, user)["out_trade_no"]  # I have no credit: nothing, and not to the other person
    assert sent(client, out_trade_no=mine) == [] and sent(client, openid=other["user"]["openid"]) == []
    assert our_credits(client, other)[PAID] == 1 == wechat_credits(client, other)[PAID]
    theirs = paid_order(client, other)["out_trade_no"]
    [message] = sent(client, out_trade_no=theirs)
    assert message["touser"] == other["user"]["openid"] != user["user"]["openid"]
    assert sent(client, openid=user["user"]["openid"]) == []


def test_a_rolled_back_payment_sends_nothing_and_spends_nothing(app, client, user):
    accept(client, user, PAID)
    order = new_order(client, user)
    no = order["out_trade_no"]
    db.session.rollback()
    payments._apply_once(no, "4200000000202612010000000001", fresh(no).total_fee, datetime.now(timezone.utc), "notify")
    assert db.session.execute(db.select(db.func.count(SubscribeMessage.id))).scalar_one() == 1  # written, in the txn
    db.session.rollback()  # ... and the payment's transaction fails
    messages.send_ready()
    assert rows() == [] and sent(client) == []
    assert fresh(no).status == "unpaid"
    assert our_credits(client, user)[PAID] == 1  # the credit came back with the rollback
    # The real payment later sends it, once.
    pay_in_sandbox(client, prepay(client, user, order))
    assert len(sent(client, out_trade_no=no)) == 1 and [r.state for r in rows(no)] == ["sent"]


def test_nothing_is_sent_before_the_payment_commits(app, client, user, monkeypatch):
    accept(client, user, PAID)
    no = new_order(client, user)["out_trade_no"]
    seen_committed = []
    original = wechat.miniapp.send_subscribe_message

    def watching(token, body):
        with db.engine.connect() as conn:  # another connection sees only what was committed
            seen_committed.append(conn.execute(db.select(db.text("status")).select_from(db.text("orders"))
                                               .where(db.text("out_trade_no = :no")), {"no": no}).scalar_one())
        return original(token, body)

    monkeypatch.setattr(wechat.miniapp, "send_subscribe_message", watching)
    payments.apply_payment(out_trade_no=no, transaction_id="4200000000202612010000000002",
                           total_fee=fresh(no).total_fee, time_end=None, source="notify")
    assert seen_committed == ["paid"]


def test_concurrent_copies_of_one_payment_send_one_message(app, client, user):
    accept(client, user, PAID)
    accept(client, user, PAID)  # a second credit: were the message sent twice, WeChat would take it
    no = new_order(client, user)["out_trade_no"]
    fee = fresh(no).total_fee
    barrier, errors = threading.Barrier(6), []

    def apply(source):
        try:
            with app.app_context():
                barrier.wait(10)
                payments.apply_payment(out_trade_no=no, transaction_id="4200000000202612010000000003", total_fee=fee,
                                       time_end=None, source=source)
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=("notify" if i % 2 else "query",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(sent(client, out_trade_no=no)) == 1 and len(rows(no)) == 1
    assert our_credits(client, user)[PAID] == 1 == wechat_credits(client, user)[PAID]


def test_a_payment_found_by_reconcile_sends_its_message(make_app):
    app = make_app(WECHAT_NOTIFY_URL="http://localhost/api/pay/lost", SANDBOX_TIME_SCALE="1000")
    with app.app_context():
        client = app.test_client()
        user = logged_in(client)
        accept(client, user, PAID)
        order = new_order(client, user)
        no = order["out_trade_no"]
        assert not pay_in_sandbox(client, prepay(client, user, order))["notification"]["acknowledged"]
        assert sent(client, out_trade_no=no) == []
        summary = reconcile(older_than=0)
        assert summary.paid == 1
        [message] = sent(client, out_trade_no=no)
        assert message["delivered"] and [r.state for r in rows(no)] == ["sent"]
        again = reconcile(older_than=0)
        assert again.messages_checked == 0 and len(sent(client, out_trade_no=no)) == 1


def test_a_long_product_name_is_cut_and_the_message_still_goes(app, client, user):
    db.session.add(Product(name=LONG_NAME[:100], price_fen=9900))
    db.session.commit()
    product_id = db.session.execute(db.select(Product.id).filter_by(price_fen=9900)).scalar_one()
    accept(client, user, PAID)
    order = new_order(client, user, quantity=1, product_id=product_id)
    pay_in_sandbox(client, prepay(client, user, order))
    [message] = sent(client, out_trade_no=order["out_trade_no"])
    assert message["delivered"]
    assert message["data"]["thing3"] == LONG_NAME[:19] + "…" and message["data"]["amount2"] == "¥99.00"


# -- failures: retried, or recorded for good -------------------------------------------------------------

def make_due(no: str) -> None:
    db.session.rollback()
    db.session.execute(update(SubscribeMessage).where(SubscribeMessage.order_id == fresh(no).id)
                       .values(next_attempt_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    db.session.commit()


def test_wechat_busy_leaves_it_pending_and_reconcile_sends_it(client, user):
    accept(client, user, PAID)
    client.post("/sandbox/control/messages-behaviour", json={"fail_next": -1})
    no = paid_order(client, user)["out_trade_no"]
    [row] = rows(no)
    assert (row.state, row.errcode, row.attempts) == ("pending", -1, 1) and row.claimed_until is None
    assert row.next_attempt_at > datetime.now(timezone.utc)  # not at once: a delay first
    early = reconcile()
    assert early.messages_checked == 0
    make_due(no)
    summary = reconcile()
    assert (summary.messages_checked, summary.messages_sent, summary.errors) == (1, 1, 0)
    assert [(m["errcode"], m["delivered"]) for m in sent(client, out_trade_no=no)] == [(-1, False), (0, True)]
    [row] = rows(no)
    assert (row.state, row.attempts, row.errcode) == ("sent", 2, 0)
    assert our_credits(client, user)[PAID] == 0 == wechat_credits(client, user)[PAID]
    assert reconcile().messages_checked == 0  # done: never again


def test_wechat_unreachable_is_retried_with_a_growing_delay(client, user, monkeypatch):
    accept(client, user, PAID)

    def down(token, body):
        raise WeChatUnavailable("no answer from WeChat (ConnectTimeout)")

    monkeypatch.setattr(wechat.miniapp, "send_subscribe_message", down)
    no = paid_order(client, user)["out_trade_no"]
    delays = []
    for _ in range(3):
        [row] = rows(no)
        assert row.state == "pending" and "ConnectTimeout" in row.error
        delays.append(row.next_attempt_at)
        make_due(no)
        summary = reconcile()
        assert summary.errors == 1 and summary.failures and no in summary.failures[0]
    [row] = rows(no)
    assert row.attempts == 4 and row.next_attempt_at - datetime.now(timezone.utc) > timedelta(minutes=7)
    monkeypatch.undo()
    make_due(no)
    assert reconcile().messages_sent == 1 and rows(no)[0].state == "sent"


def test_no_credit_at_wechat_is_refused_for_good_and_our_count_follows(client, user):
    accept(client, user, PAID, at_wechat=False)  # the mini-program says "accepted"; WeChat has no such accept
    accept(client, user, PAID, at_wechat=False)
    no = paid_order(client, user)["out_trade_no"]
    [row] = rows(no)
    assert (row.state, row.errcode) == ("refused", 43101) and row.sent_at is None
    assert our_credits(client, user)[PAID] == 0  # WeChat says none: ours drop to none too
    make_due(no)
    calls = sandbox_calls(client)["subscribe_send"]
    assert reconcile().messages_checked == 0 and sandbox_calls(client)["subscribe_send"] == calls


def test_bad_data_is_refused_for_good_and_the_credit_comes_back(client, user):
    accept(client, user, PAID)
    client.post("/sandbox/control/messages-behaviour", json={"fail_next": 47003})
    no = paid_order(client, user)["out_trade_no"]
    [row] = rows(no)
    assert (row.state, row.errcode) == ("refused", 47003)
    assert our_credits(client, user)[PAID] == 1 == wechat_credits(client, user)[PAID]  # WeChat spent none
    make_due(no)
    assert reconcile().messages_checked == 0


def test_a_template_wechat_does_not_know_is_refused(app, client, user):
    accept(client, user, PAID)
    app.extensions["sandbox_messages"].templates.pop(PAID)  # deleted from the mini-program's console meanwhile
    no = paid_order(client, user)["out_trade_no"]
    assert [(r.state, r.errcode) for r in rows(no)] == [("refused", 40037)]


def test_a_refused_access_token_is_fetched_again_once(client, user):
    accept(client, user, PAID)
    paid_order(client, user)  # a token exists now
    accept(client, user, PAID)
    tokens_before = sandbox_calls(client)["stable_token"]
    client.post("/sandbox/control/revoke-token", json={"reason": "expired"})
    no = paid_order(client, user)["out_trade_no"]
    assert [r.state for r in rows(no)] == ["sent"]
    assert sandbox_calls(client)["stable_token"] == tokens_before + 1


def test_a_sender_that_holds_the_message_is_not_doubled(client, user):
    accept(client, user, PAID)
    client.post("/sandbox/control/messages-behaviour", json={"fail_next": -1})
    no = paid_order(client, user)["out_trade_no"]
    [row] = rows(no)
    db.session.execute(update(SubscribeMessage).where(SubscribeMessage.id == row.id).values(
        next_attempt_at=datetime.now(timezone.utc) - timedelta(seconds=1),
        claimed_until=datetime.now(timezone.utc) + timedelta(minutes=5)))  # another machine is sending it
    db.session.commit()
    assert reconcile().messages_checked == 0 and messages.deliver(row.id) is None
    assert len(sent(client, out_trade_no=no)) == 1  # only the first, failed, attempt


# -- the refunded message --------------------------------------------------------------------------------

def test_each_settled_refund_sends_its_own_message(client, user):
    accept(client, user, REFUNDED)
    accept(client, user, REFUNDED)
    no = paid_order(client, user)["out_trade_no"]
    first = refunds.refund_order(fresh(no), fee=1000)
    second = refunds.refund_order(fresh(no), fee=2600)
    assert first.refund.status == second.refund.status == "success"
    got = sent(client, out_trade_no=no)
    assert [(m["template_id"], m["data"]["amount2"]) for m in got] == [(REFUNDED, "¥10.00"), (REFUNDED, "¥26.00")]
    assert got[0]["data"]["time4"] == china(first.refund.succeeded_at)
    assert [(r.event, r.event_ref, r.state) for r in rows(no)] == [
        ("refunded", first.refund.out_refund_no, "sent"), ("refunded", second.refund.out_refund_no, "sent")]
    # The refund notification again (a duplicate): no third message.
    assert refunds.settle_refund({"out_refund_no": first.refund.out_refund_no, "out_trade_no": no,
                                  "refund_fee": "1000", "refund_status": "SUCCESS"}, source="query") == "duplicate"
    assert len(sent(client, out_trade_no=no)) == 2


# -- the sandbox's subscribe/send, as WeChat answers -----------------------------------------------------

def post_send(client, body, token: str | None = None) -> dict:
    token = token if token is not None else wechat.access_token.get()
    return client.post("/sandbox/cgi-bin/message/subscribe/send", query_string={"access_token": token},
                       json=body).get_json()


def test_the_sandbox_answers_wechats_errcodes(client, user):
    openid = user["user"]["openid"]
    good = {"touser": openid, "template_id": PAID, "page": "pages/order-detail/order-detail?out_trade_no=N",
            "miniprogram_state": "developer", "lang": "zh_CN",
            "data": {"character_string1": {"value": "N1"}, "amount2": {"value": "¥1.00"}, "thing3": {"value": "咖啡"},
                     "time4": {"value": "2019-12-25 09:42"}}}
    assert post_send(client, good, token="")["errcode"] == 41001
    assert post_send(client, good, token="not-a-token")["errcode"] == 40001
    assert post_send(client, {**good, "template_id": "nosuch"})["errcode"] == 40037
    assert post_send(client, {**good, "touser": "oNobodyAtAll000000000000000"})["errcode"] == 40003
    assert post_send(client, {**good, "page": "pages/nosuch/nosuch"})["errcode"] == 41030
    assert post_send(client, {**good, "miniprogram_state": "beta"})["errcode"] == 47003
    missing = post_send(client, {**good, "data": {k: v for k, v in good["data"].items() if k != "thing3"}})
    assert missing["errcode"] == 47003 and "data.thing3.value is emtpy" in missing["errmsg"]
    long = post_send(client, {**good, "data": {**good["data"], "thing3": {"value": "咖" * 21}}})
    assert long["errcode"] == 47003 and "data.thing3.value invalid" in long["errmsg"]
    amount = post_send(client, {**good, "data": {**good["data"], "amount2": {"value": "one yuan"}}})
    assert amount["errcode"] == 47003 and "amount2" in amount["errmsg"]
    assert post_send(client, good)["errcode"] == 43101  # all well formed, but no accept
    client.post("/sandbox/control/subscribe", json={"openid": openid, "template_ids": [PAID]})
    ok = post_send(client, good)
    assert ok["errcode"] == 0 and ok["errmsg"] == "ok" and isinstance(ok["msgid"], int)
    assert post_send(client, good)["errcode"] == 43101  # one accept, one message
    assert [m["errcode"] for m in sent(client, openid=openid)][-2:] == [0, 43101]
    assert [m["errcode"] for m in sent(client, openid=openid, delivered="1")] == [0]


def test_the_sandboxs_accept_control_call(client, user):
    openid = user["user"]["openid"]
    resp = client.post("/sandbox/control/subscribe", json={"code": "someone-new", "template_ids": [PAID, SHIPPED]})
    assert resp.status_code == 200 and resp.get_json()["credits"] == {PAID: 1, SHIPPED: 1}
    assert resp.get_json()["openid"] == app_openid(client, "someone-new")
    again = client.post("/sandbox/control/subscribe", json={"openid": openid, "template_ids": [PAID]})
    assert again.get_json() == {"openid": openid, "credits": {PAID: 1}}
    for body, code in [({"openid": openid, "template_ids": ["nosuch"]}, "unknown_template"),
                       ({"openid": openid, "template_ids": [PAID, SHIPPED, REFUNDED, "x"]}, "too_many_templates"),
                       ({"openid": "oNeverLoggedIn", "template_ids": [PAID]}, "unknown_openid"),
                       ({"template_ids": [PAID]}, "invalid_params"), ({"openid": openid}, "invalid_params")]:
        resp = client.post("/sandbox/control/subscribe", json=body)
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == code, body
    assert wechat_credits(client, user) == {PAID: 1, SHIPPED: 0, REFUNDED: 0}


def app_openid(client, code: str) -> str:
    return login(client, code)["user"]["openid"]


# -- the operator's view and the audit trail -------------------------------------------------------------

def test_orders_show_lists_the_messages_and_the_audit_keeps_no_token(app, client, user, runner):
    accept(client, user, PAID)
    no = paid_order(client, user)["out_trade_no"]
    result = runner.invoke(args=["orders", "show", no, "--json"])
    assert result.exit_code == 0, result.output
    [shown] = json.loads(result.stdout)["messages"]
    assert (shown["event"], shown["template_id"], shown["state"], shown["error"]) == ("paid", PAID, "sent", None)
    assert shown["sent_at"]
    text = runner.invoke(args=["orders", "show", no])
    assert "messages:" in text.stdout and f"paid      {PAID}" in text.stdout
    db.session.rollback()
    [exchange] = db.session.execute(db.select(WeChatExchange).filter_by(
        path="/cgi-bin/message/subscribe/send")).scalars().all()
    assert exchange.out_trade_no == no and exchange.outcome == "ok"
    request = json.loads(exchange.request)
    assert request["access_token"] == "[redacted]" and request["touser"] == user["user"]["openid"]
    assert wechat.access_token.get() not in exchange.request + (exchange.response or "")
    assert json.loads(exchange.response)["errcode"] == 0


def test_a_message_whose_template_is_not_configured_is_not_sent(make_app):
    app = make_app(WECHAT_MSG_PAID_TEMPLATE="off")
    with app.app_context():
        client = app.test_client()
        user = logged_in(client)
        assert client.get("/api/user/subscriptions", headers=user["headers"]).get_json()["template_ids"] == [
            SHIPPED, REFUNDED]
        resp = client.post("/api/user/subscriptions", json={"accepted": [PAID]}, headers=user["headers"])
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "unknown_template"
        no = paid_order(client, user)["out_trade_no"]
        assert rows(no) == [] and sent(client) == []


# -- the shipped message ---------------------------------------------------------------------------------

def test_shipping_sends_one_shipped_message_and_a_change_none(client, user):
    accept(client, user, SHIPPED)
    accept(client, user, SHIPPED)  # a second credit: were a change to send again, WeChat would take it
    no = paid_order(client, user)["out_trade_no"]
    assert sent(client, out_trade_no=no) == []  # no credit for the paid message
    outcome = shipping.ship_order(fresh(no), "express", [shipping.PackageIn(tracking_no="ZT7700112233",
                                                                            express_company="ZTO")])
    assert outcome.order.status == "shipped"
    [message] = sent(client, out_trade_no=no)
    assert message["delivered"] and message["template_id"] == SHIPPED
    assert message["data"] == {"character_string1": no, "thing2": "拿铁咖啡 Latte", "thing3": "中通快递",
                               "character_string4": "ZT7700112233", "time5": china(fresh(no).shipped_at)}
    assert [(r.event, r.state) for r in rows(no)] == [("shipped", "sent")]
    shipping.ship_order(fresh(no), "express", [shipping.PackageIn(tracking_no="ZT7700445566", express_company="ZTO")],
                        change=True)
    assert len(sent(client, out_trade_no=no)) == 1
    assert our_credits(client, user)[SHIPPED] == 1 == wechat_credits(client, user)[SHIPPED]


def test_virtual_goods_say_so_and_split_packages_wait_for_the_last(client, user):
    accept(client, user, SHIPPED)
    accept(client, user, SHIPPED)
    virtual = paid_order(client, user)["out_trade_no"]
    shipping.ship_order(fresh(virtual), "virtual")
    [message] = sent(client, out_trade_no=virtual)
    assert (message["data"]["thing3"], message["data"]["character_string4"]) == ("虚拟发货", "-")
    split = paid_order(client, user)["out_trade_no"]
    shipping.ship_order(fresh(split), "express", [shipping.PackageIn(tracking_no="YT1000000001", express_company="YTO")],
                        split=True, all_delivered=False)
    assert fresh(split).status == "paid" and sent(client, out_trade_no=split) == []  # not all of it has left
    shipping.ship_order(fresh(split), "express", [shipping.PackageIn(tracking_no="YT1000000002", express_company="YTO")],
                        split=True, all_delivered=True)
    [message] = sent(client, out_trade_no=split)
    assert message["data"]["character_string4"] == "YT1000000001,YT1000000002"
    assert message["data"]["thing3"] == "圆通速递"


def test_the_cli_ship_sends_the_message_after_its_commit(client, user, runner):
    accept(client, user, SHIPPED)
    no = paid_order(client, user)["out_trade_no"]
    db.session.rollback()
    result = runner.invoke(args=["orders", "ship", no, "--express", "ZTO", "--tracking", "ZT0001", "--json"])
    assert result.exit_code == 0, result.output
    assert [m["template_id"] for m in sent(client, out_trade_no=no)] == [SHIPPED]
    [shown] = json.loads(runner.invoke(args=["orders", "show", no, "--json"]).stdout)["messages"]
    assert (shown["event"], shown["state"]) == ("shipped", "sent")
