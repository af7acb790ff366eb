"""Refunds: full and partial, never more than was paid, idempotent out_refund_no, safe under concurrency;
the encrypted refund notification (WeChat's known-answer vector) decrypted and applied exactly once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import Order, Payment, PaymentNotification, Refund, User, utcnow
from miniapp_server.services import refunds
from miniapp_server.wechat.pay import crypto, xmlcodec
from miniapp_server.wechat.pay.client import ACK_SUCCESS

from .conftest import vector
from .ops_helpers import fresh, new_order, paid_order, prepay, refunds_of, sandbox_calls, sandbox_notifications


def refund_notification_kinds(no: str) -> list[str]:
    db.session.rollback()
    return list(db.session.execute(db.select(PaymentNotification.verdict).filter_by(kind="refund", out_trade_no=no)
                                   .order_by(PaymentNotification.id)).scalars())


# -- req_info: the known answer ------------------------------------------------------------------------

def test_req_info_decrypts_to_wechats_known_answer():
    v = vector("v2_refund_notify_req_info_decrypt")
    outer = xmlcodec.loads(v["inputs"]["notify_xml"])
    fields = xmlcodec.loads(crypto.decrypt_req_info(outer["req_info"], v["inputs"]["api_key"]), root_name="root")
    for name, value in v["expected"].items():
        assert fields[name] == value
    assert fields["refund_status"] == "SUCCESS" and fields["refund_fee"] == "1"


def test_req_info_with_another_key_or_garbage_is_refused():
    v = vector("v2_refund_notify_req_info_decrypt")
    req_info = xmlcodec.loads(v["inputs"]["notify_xml"])["req_info"]
    with pytest.raises(crypto.DecryptError):
        crypto.decrypt_req_info(req_info, "another-api-key-0000000000000000")
    for garbage in ("", "not base64!", "QUJD"):  # empty, not base64, not whole blocks
        with pytest.raises(crypto.DecryptError):
            crypto.decrypt_req_info(garbage, v["inputs"]["api_key"])
    assert crypto.decrypt_req_info(crypto.encrypt_req_info(b"<root/>", "k"), "k") == b"<root/>"


@pytest.fixture
def vector_app(make_app):
    """An app whose merchant is the vector's, holding the order and the refund the vector speaks of."""
    v = vector("v2_refund_notify_req_info_decrypt")
    # Not the sandbox: it refuses to run beside credentials other than its own (the vector's merchant here).
    # A v2 merchant by nature (the vector is v2's req_info), whatever API the suite runs on.
    app = make_app(WECHAT_SANDBOX="0", WECHAT_APPID=v["inputs"]["appid"], WECHAT_MCH_ID=v["inputs"]["mch_id"],
                   WECHAT_PAY_KEY=v["inputs"]["api_key"], WECHAT_PAY_API="v2")
    exp = v["expected"]
    with app.app_context():
        user = User(openid="o-vector")
        db.session.add(user)
        db.session.flush()
        now = utcnow()
        order = Order(out_trade_no=exp["out_trade_no"], user_id=user.id, total_fee=1, body="vector", trade_type="JSAPI",
                      status="refunding", transaction_id=exp["transaction_id"], paid_at=now,
                      expires_at=now + timedelta(minutes=30))
        db.session.add(order)
        db.session.flush()
        db.session.add(Payment(order_id=order.id, transaction_id=exp["transaction_id"], total_fee=1, source="notify"))
        db.session.add(Refund(order_id=order.id, out_refund_no=exp["out_refund_no"], transaction_id=exp["transaction_id"],
                              refund_fee=1, status="processing"))
        db.session.commit()
        yield app


def test_the_vectors_notification_is_applied_once_under_concurrent_duplicates(vector_app):
    v = vector("v2_refund_notify_req_info_decrypt")
    body = v["inputs"]["notify_xml"].encode()
    answers: list[bytes] = []

    def deliver():
        answers.append(vector_app.test_client().post("/api/pay/refund-notify", data=body,
                                                     content_type="text/xml").data)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == [ACK_SUCCESS] * 6  # every copy acknowledged, each only after its commit
    order = fresh(v["expected"]["out_trade_no"])
    assert order.status == "refunded" and order.refunded_fee == 1
    (refund,) = order.refunds
    assert refund.status == "success" and refund.refund_id == v["expected"]["refund_id"]
    assert refund.succeeded_at.isoformat() == "2020-01-04T10:34:24+00:00"  # 18:34:24 China time
    kinds = refund_notification_kinds(order.out_trade_no)
    assert sorted(kinds) == ["duplicate"] * 5 + ["refunded"]


def test_a_refund_notification_not_ours_is_refused_and_changes_nothing(vector_app):
    v = vector("v2_refund_notify_req_info_decrypt")
    client = vector_app.test_client()
    outer = xmlcodec.loads(v["inputs"]["notify_xml"])
    plain = crypto.decrypt_req_info(outer["req_info"], v["inputs"]["api_key"])
    key = v["inputs"]["api_key"]

    def post(fields: dict) -> dict:
        resp = client.post("/api/pay/refund-notify", data=xmlcodec.dumps(fields), content_type="text/xml")
        assert resp.status_code == 200
        return xmlcodec.loads(resp.data)

    cases = {
        "wrong_merchant": {**outer, "mch_id": "99999999"},
        "bad_req_info": {**outer, "req_info": crypto.encrypt_req_info(plain, "someone-elses-key-00000000000000")},
        "unknown_refund": {**outer, "req_info": crypto.encrypt_req_info(
            plain.replace(b"<out_refund_no><![CDATA[1234]]>", b"<out_refund_no><![CDATA[9999]]>"), key)},
        "refund_mismatch": {**outer, "req_info": crypto.encrypt_req_info(
            plain.replace(b"<refund_fee><![CDATA[1]]>", b"<refund_fee><![CDATA[2]]>"), key)},
    }
    for verdict, fields in cases.items():
        answer = post(fields)
        assert answer["return_code"] == "FAIL", verdict
    assert post({"return_code": "SUCCESS", "appid": outer["appid"]})["return_code"] == "FAIL"
    order = fresh(v["expected"]["out_trade_no"])
    assert order.status == "refunding" and order.refunded_fee == 0 and order.refunds[0].status == "processing"
    db.session.rollback()
    recorded = set(db.session.execute(db.select(PaymentNotification.verdict).filter_by(kind="refund")).scalars())
    assert set(cases) <= recorded


# -- through the sandbox -------------------------------------------------------------------------------

def test_a_full_refund_goes_refunding_then_refunded(client, user):
    order = paid_order(client, user)
    no, total = order["out_trade_no"], order["total_fee"]
    client.post("/sandbox/control/refund-behaviour", json={"hold_notifications": True})
    outcome = refunds.refund_order(fresh(no), reason="out of stock")
    assert outcome.error is None and outcome.refund.status == "processing" and outcome.refund.refund_id
    assert outcome.refund.out_refund_no == f"{no}R1" and outcome.refund.refund_fee == total
    assert fresh(no).status == "refunding"
    assert client.get(f"/api/orders/{no}", headers=user["headers"]).get_json()["status"] == "refunding"
    settled = client.post("/sandbox/control/refund-notify", json={"out_refund_no": f"{no}R1"}).get_json()
    assert settled["notification"]["acknowledged"] and settled["status"] == "SUCCESS"
    order_now = fresh(no)
    assert order_now.status == "refunded" and order_now.refunded_fee == total
    assert refunds_of(no)[0].status == "success" and refunds_of(no)[0].succeeded_at is not None
    assert refund_notification_kinds(no) == ["refunded"]
    # WeChat sending it again (its retry) changes nothing
    again = client.post("/sandbox/control/refund-notify", json={"out_refund_no": f"{no}R1"}).get_json()
    assert again["notification"]["acknowledged"]
    assert fresh(no).refunded_fee == total and refund_notification_kinds(no) == ["refunded", "duplicate"]
    # and nothing is left to refund
    with pytest.raises(refunds.ApiError) as err:
        refunds.refund_order(fresh(no), fee=1)
    assert err.value.code == "refund_exceeds_paid"


def test_partial_refunds_leave_the_order_paid_until_all_came_back(client, user):
    order = paid_order(client, user)  # 3600 fen
    no = order["out_trade_no"]
    first = refunds.refund_order(fresh(no), fee=1000).refund
    assert first.status == "success"  # the sandbox settled and notified at once
    now = fresh(no)
    assert now.status == "paid" and now.refunded_fee == 1000  # a partial refund leaves the order paid
    calls = sandbox_calls(client)["refund"]
    with pytest.raises(refunds.ApiError) as err:
        refunds.refund_order(fresh(no), fee=2601)  # 1000 + 2601 > 3600
    assert err.value.status == 409 and err.value.code == "refund_exceeds_paid"
    assert sandbox_calls(client)["refund"] == calls  # refused here, WeChat never asked
    assert len(refunds_of(no)) == 1  # nothing written
    rest = refunds.refund_order(fresh(no)).refund  # no fee: all that is left
    assert rest.refund_fee == 2600 and rest.out_refund_no == f"{no}R2" and rest.status == "success"
    now = fresh(no)
    assert now.status == "refunded" and now.refunded_fee == 3600
    assert [n["acknowledged"] for n in sandbox_notifications(client, no, "refund")] == [True, True]


def test_bad_refund_requests_are_refused_before_wechat(client, user):
    order = new_order(client, user)
    with pytest.raises(refunds.ApiError) as err:
        refunds.refund_order(fresh(order["out_trade_no"]))
    assert err.value.code == "order_not_paid"
    paid = paid_order(client, user)
    for fee, code in ((0, "invalid_refund_fee"), (-5, "invalid_refund_fee"), (True, "invalid_refund_fee")):
        with pytest.raises(refunds.ApiError) as err:
            refunds.refund_order(fresh(paid["out_trade_no"]), fee=fee)
        assert err.value.code == code
    with pytest.raises(refunds.ApiError) as err:
        refunds.refund_order(fresh(paid["out_trade_no"]), reason="x" * 81)
    assert err.value.code == "invalid_reason"
    with pytest.raises(refunds.ApiError) as err:
        refunds.refund_order(fresh(paid["out_trade_no"]), transaction_id="4200000000000000000000000000")
    assert err.value.status == 404
    assert refunds_of(paid["out_trade_no"]) == [] and fresh(paid["out_trade_no"]).status == "paid"


def test_wechat_refusing_a_refund_fails_it_and_frees_the_amount(client, user):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    client.post("/sandbox/control/refund-behaviour", json={"fail_next": "NOTENOUGH"})
    outcome = refunds.refund_order(fresh(no), fee=500)
    assert outcome.error is not None and outcome.error.code == "NOTENOUGH"
    assert outcome.refund.status == "failed" and outcome.refund.failure == "NOTENOUGH"
    assert fresh(no).status == "paid" and fresh(no).refunded_fee == 0
    whole = refunds.refund_order(fresh(no)).refund  # the failed 500 does not count against what is left
    assert whole.refund_fee == order["total_fee"] and whole.out_refund_no == f"{no}R2" and whole.status == "success"
    assert fresh(no).status == "refunded"


def test_no_answer_leaves_the_refund_pending_and_a_retry_reuses_its_number(client, user):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    client.post("/sandbox/control/refund-behaviour", json={"fail_next": "SYSTEMERROR"})
    outcome = refunds.refund_order(fresh(no), fee=700)
    assert outcome.error is not None and outcome.refund.status == "pending"
    assert fresh(no).status == "refunding"
    with pytest.raises(refunds.ApiError) as err:  # another amount while that one is unanswered
        refunds.refund_order(fresh(no), fee=800)
    assert err.value.code == "refund_pending"
    again = refunds.refund_order(fresh(no))  # no fee: resume the unanswered one
    assert again.resumed and again.refund.out_refund_no == f"{no}R1" and again.refund.status == "success"
    assert len(refunds_of(no)) == 1
    now = fresh(no)
    assert now.status == "paid" and now.refunded_fee == 700


def test_the_sandbox_is_idempotent_on_out_refund_no(app, client, user):
    from miniapp_server.extensions import wechat
    from miniapp_server.wechat.errors import PayError

    order = paid_order(client, user)
    txn = fresh(order["out_trade_no"]).transaction_id
    client.post("/sandbox/control/refund-behaviour", json={"hold_notifications": True})
    args = dict(out_trade_no=order["out_trade_no"], out_refund_no="R-test-1", total_fee=order["total_fee"],
                refund_fee=100, notify_url="http://localhost/api/pay/refund-notify")
    first, second = wechat.pay.refund(**args), wechat.pay.refund(**args)
    assert first["refund_id"] == second["refund_id"] and first["transaction_id"] == txn
    with pytest.raises(PayError) as err:  # the same number with another amount
        wechat.pay.refund(**{**args, "refund_fee": 200})
    assert err.value.code == "INVALID_REQUEST"
    with pytest.raises(PayError) as err:  # more than was paid
        wechat.pay.refund(**{**args, "out_refund_no": "R-test-2", "refund_fee": order["total_fee"]})
    assert err.value.code == "ERROR"
    with pytest.raises(PayError) as err:  # total_fee is not what the transaction paid
        wechat.pay.refund(**{**args, "out_refund_no": "R-test-3", "total_fee": order["total_fee"] + 1})
    assert err.value.code == "INVALID_REQUEST"
    query = wechat.pay.refund_query("R-test-1")
    assert query["refund_status_0"] == "PROCESSING" and query["refund_fee_0"] == "100"


def test_concurrent_full_refunds_refund_once(app, client, user):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    db.session.commit()
    results: list[object] = []

    def refund_it():
        with app.app_context():
            try:
                results.append(refunds.refund_order(fresh(no)).refund.out_refund_no)
            except refunds.ApiError as err:
                results.append(err.code)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=refund_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4
    # each either refunded (the one refund, R1, perhaps resumed by another thread) or was told nothing is left
    assert set(results) <= {f"{no}R1", "refund_exceeds_paid"} and f"{no}R1" in results
    rows = refunds_of(no)
    assert [(r.out_refund_no, r.refund_fee, r.status) for r in rows] == [(f"{no}R1", order["total_fee"], "success")]
    assert fresh(no).refunded_fee == order["total_fee"] and fresh(no).status == "refunded"
    assert refund_notification_kinds(no).count("refunded") == 1


def test_an_anomalous_payment_is_refunded_without_touching_the_order(app, client, user):
    from miniapp_server.sandbox.routes import emulator

    order = new_order(client, user)
    no = order["out_trade_no"]
    prepay(client, user, order)
    emulator().pay_order(no, fee=1)  # paid 1 fen for a 3600 fen order: an amount mismatch
    flagged = fresh(no)
    assert flagged.status == "unpaid" and flagged.anomaly == "amount_mismatch"
    (payment,) = flagged.payments
    with pytest.raises(refunds.ApiError):  # the order itself has no payment
        refunds.refund_order(flagged)
    refund = refunds.refund_order(fresh(no), transaction_id=payment.transaction_id).refund
    assert refund.status == "success" and refund.refund_fee == 1 and refund.transaction_id == payment.transaction_id
    after = fresh(no)
    assert after.status == "unpaid" and after.refunded_fee == 0  # the order's own money is untouched


def test_refund_notify_url_derivation(make_app):
    app = make_app(WECHAT_NOTIFY_URL="https://shop.example.com/api/pay/notify")
    with app.app_context():
        assert refunds.refund_notify_url() == "https://shop.example.com/api/pay/refund-notify"
    app = make_app(WECHAT_REFUND_NOTIFY_URL="https://shop.example.com/hooks/refunds")
    with app.app_context():
        assert refunds.refund_notify_url() == "https://shop.example.com/hooks/refunds"

