"""The payment notification: verified, applied exactly once, recorded, and every bad input refused."""

import threading
import time

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import Order, Payment, PaymentNotification
from miniapp_server.wechat.pay import signing, xmlcodec
from miniapp_server.wechat.pay.client import ACK_SUCCESS

from .test_pay import pay


def notification(app, order, **overrides) -> dict:
    fields = {
        "return_code": "SUCCESS", "result_code": "SUCCESS", "appid": app.config["WECHAT_APPID"],
        "mch_id": app.config["WECHAT_MCH_ID"], "nonce_str": signing.nonce(), "openid": "o-someone",
        "trade_type": "JSAPI", "bank_type": "OTHERS", "total_fee": str(order["total_fee"]), "fee_type": "CNY",
        "cash_fee": str(order["total_fee"]), "transaction_id": "4200000001202611240000000001",
        "out_trade_no": order["out_trade_no"], "time_end": "20261124120000",
    }
    fields.update(overrides)
    return fields


def signed(app, fields, key=None, sign_type="MD5") -> bytes:
    fields = dict(fields)
    if sign_type != "MD5":
        fields["sign_type"] = sign_type
    fields["sign"] = signing.sign(fields, key or app.config["WECHAT_PAY_KEY"], sign_type)
    return xmlcodec.dumps(fields)


def post(client, body: bytes):
    resp = client.post("/api/pay/notify", data=body, content_type="text/xml")
    # 200 always, but 413 for a body past the app's limit (MAX_CONTENT_LENGTH, 1 MB): FAIL in WeChat's XML either way
    assert resp.status_code == (413 if len(body) > 1024 * 1024 else 200)
    return xmlcodec.loads(resp.data)


def stored_order() -> Order:
    db.session.rollback()  # a fresh snapshot: other threads may have committed since
    return db.session.execute(db.select(Order)).scalar_one()


def verdicts() -> list[str]:
    db.session.rollback()
    return list(db.session.execute(db.select(PaymentNotification.verdict).order_by(PaymentNotification.id)).scalars())


def test_a_good_notification_pays_the_order_once(app, client, order):
    body = signed(app, notification(app, order))
    resp = client.post("/api/pay/notify", data=body, content_type="text/xml")
    assert resp.data == ACK_SUCCESS  # exactly the contract's bytes
    paid = stored_order()
    assert paid.status == "paid" and paid.transaction_id == "4200000001202611240000000001"
    assert paid.paid_at.isoformat() == "2026-11-24T04:00:00+00:00"  # 12:00 in China is 04:00 UTC
    for _ in range(3):
        assert post(client, body)["return_code"] == "SUCCESS"
    assert verdicts() == ["paid", "duplicate", "duplicate", "duplicate"]
    assert db.session.execute(db.select(db.func.count(Payment.id))).scalar_one() == 1


def test_hmac_sha256_and_a_notification_naming_another_sign_type(make_app):
    """Only the configured sign type is believed: a body saying <sign_type>MD5</sign_type> cannot downgrade it."""
    from .conftest import bearer, login
    app = make_app(WECHAT_SIGN_TYPE="HMAC-SHA256")
    client = app.test_client()
    headers = bearer(login(client)["token"])
    order = client.post("/api/orders", headers=headers, json={"items": [{"product_id": 2, "quantity": 1}]}).get_json()
    with app.app_context():
        md5_body = signed(app, notification(app, order))  # no sign_type field: checked with ours, HMAC: fails
        assert post(client, md5_body)["return_code"] == "FAIL"
        fields = notification(app, order)
        fields["sign_type"] = "MD5"
        fields["sign"] = signing.sign(fields, app.config["WECHAT_PAY_KEY"], "MD5")
        assert post(client, xmlcodec.dumps(fields))["return_code"] == "FAIL"
        assert stored_order().status == "unpaid"
        assert post(client, signed(app, notification(app, order), sign_type="HMAC-SHA256"))["return_code"] == "SUCCESS"
        assert stored_order().status == "paid"


BILLION_LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><xml><a>&d;</a></xml>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><return_code>&e;</return_code></xml>"""


def bad_bodies(app, order):
    good = notification(app, order)
    return {
        "forged": signed(app, good, key="not-our-key-not-our-key-not-our-"),
        "tampered": signed(app, good).replace(b"<total_fee>3600</total_fee>", b"<total_fee>1</total_fee>"),
        "unsigned": xmlcodec.dumps(good),
        "wrong_appid": signed(app, {**good, "appid": "wx0000000000000000"}),
        "wrong_mch": signed(app, {**good, "mch_id": "1234567890"}),
        "unknown_order": signed(app, {**good, "out_trade_no": "20261124ffffffffffffffffffffffff"}),
        "result_fail": signed(app, {**good, "result_code": "FAIL", "err_code": "NOTENOUGH"}),
        "return_fail": xmlcodec.dumps({"return_code": "FAIL", "return_msg": "no"}),
        "no_fee": signed(app, {k: v for k, v in good.items() if k != "total_fee"}),
        "odd_fee": signed(app, {**good, "total_fee": "36.00"}),
        "empty": b"",
        "not_xml": b"hello, WeChat here",
        "truncated": signed(app, good)[:-20],
        "json": b'{"return_code": "SUCCESS"}',
        "billion_laughs": BILLION_LAUGHS,
        "xxe": XXE,
        "huge": b"<xml><a>" + b"x" * (1024 * 1024 + 10) + b"</a></xml>",
    }


@pytest.mark.parametrize("case", ["forged", "tampered", "unsigned", "wrong_appid", "wrong_mch", "unknown_order",
                                  "result_fail", "return_fail", "no_fee", "odd_fee", "empty", "not_xml", "truncated",
                                  "json", "billion_laughs", "xxe", "huge"])
def test_bad_notifications_fail_change_nothing_and_leave_a_record(app, client, order, case):
    body = bad_bodies(app, order)[case]
    started = time.monotonic()
    answer = post(client, body)
    assert time.monotonic() - started < 1.0
    assert answer["return_code"] == "FAIL" and answer["return_msg"]
    assert stored_order().status == "unpaid" and stored_order().transaction_id is None
    assert db.session.execute(db.select(db.func.count(Payment.id))).scalar_one() == 0
    records = verdicts()
    assert len(records) == 1 and records[0] not in ("paid", "duplicate")
    assert client.get("/api/products").status_code == 200  # and the server keeps serving


def test_amount_mismatch_is_flagged_never_paid(app, client, order):
    body = signed(app, notification(app, order, total_fee="1", cash_fee="1"))
    assert post(client, body)["return_code"] == "FAIL"
    assert post(client, body)["return_code"] == "FAIL"  # the same answer when WeChat retries
    o = stored_order()
    assert o.status == "unpaid" and o.anomaly == "amount_mismatch" and "1 fen" in o.anomaly_detail
    payments = db.session.execute(db.select(Payment)).scalars().all()
    assert len(payments) == 1 and payments[0].anomaly == "amount_mismatch"  # kept, so it can be refunded
    assert verdicts() == ["amount_mismatch", "amount_mismatch"]


def test_payment_for_a_closed_order_is_flagged(app, client, order):
    db.session.execute(db.update(Order).values(status="closed"))
    db.session.commit()
    assert post(client, signed(app, notification(app, order)))["return_code"] == "SUCCESS"
    o = stored_order()
    assert o.status == "closed" and o.anomaly == "paid_after_close"
    assert verdicts() == ["paid_after_close"]


def test_second_payment_with_another_transaction_is_flagged(app, client, order):
    assert post(client, signed(app, notification(app, order)))["return_code"] == "SUCCESS"
    second = notification(app, order, transaction_id="4200000001202611249999999999")
    assert post(client, signed(app, second))["return_code"] == "SUCCESS"
    o = stored_order()
    assert o.status == "paid" and o.transaction_id == "4200000001202611240000000001"
    assert o.anomaly == "double_payment"
    assert sorted(p.anomaly or "-" for p in o.payments) == ["-", "double_payment"]


def test_concurrent_copies_make_one_transition(app, order):
    body = signed(app, notification(app, order))
    answers, errors = [], []

    def send():
        try:
            answers.append(app.test_client().post("/api/pay/notify", data=body, content_type="text/xml").data)
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and answers == [ACK_SUCCESS] * 12
    assert verdicts().count("paid") == 1 and verdicts().count("duplicate") == 11
    assert db.session.execute(db.select(db.func.count(Payment.id))).scalar_one() == 1


def test_sync_applies_what_wechat_says_when_no_notification_came(app, client, user, order, monkeypatch):
    params = pay(client, user, order).get_json()
    emu = app.extensions["sandbox"]
    monkeypatch.setattr(emu, "deliver", lambda stored: {"acknowledged": False})  # the notification is lost
    assert client.post("/sandbox/control/pay", json=params).status_code == 200
    assert client.get(f"/api/orders/{order['out_trade_no']}", headers=user["headers"]).get_json()["status"] == "unpaid"
    synced = client.post(f"/api/orders/{order['out_trade_no']}/sync", headers=user["headers"]).get_json()
    assert synced["status"] == "paid" and synced["transaction_id"].startswith("4200")
    assert db.session.execute(db.select(Payment.source)).scalar_one() == "query"


def test_sync_of_an_order_wechat_never_saw_changes_nothing(client, user, order):
    resp = client.post(f"/api/orders/{order['out_trade_no']}/sync", headers=user["headers"])
    assert resp.status_code == 200 and resp.get_json()["status"] == "unpaid"
