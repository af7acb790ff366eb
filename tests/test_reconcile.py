"""Reconciliation in the sandbox: a lost notification found, an expired order closed at WeChat, a payment
that lands after closing flagged, unsettled refunds settled; idempotent, and one pass at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from miniapp_server.extensions import db, store
from miniapp_server.models import Order, utcnow
from miniapp_server.services import refunds
from miniapp_server.services.reconcile import LOCK_NAME, reconcile
from miniapp_server.wechat.pay.gateway import TradeState

from .conftest import bearer, login
from .ops_helpers import fresh, new_order, paid_order, pay_in_sandbox, prepay, sandbox_calls, sandbox_notifications


@pytest.fixture
def lossy(make_app):
    """An app whose notifications get lost: WeChat is told a notify URL that answers 404, and its next
    attempt would come hours later (the time scale stretches WeChat's schedule)."""
    app = make_app(WECHAT_NOTIFY_URL="http://localhost/api/pay/lost", SANDBOX_TIME_SCALE="1000")
    with app.app_context():
        client = app.test_client()
        data = login(client)
        yield app, client, {**data, "headers": bearer(data["token"])}


def expire(no: str, ago: timedelta = timedelta(minutes=1)) -> None:
    db.session.rollback()
    db.session.execute(update(Order).where(Order.out_trade_no == no).values(expires_at=utcnow() - ago))
    db.session.commit()


def test_a_lost_notification_is_found_by_reconcile(lossy):
    app, client, user = lossy
    order = new_order(client, user)
    no = order["out_trade_no"]
    paid = pay_in_sandbox(client, prepay(client, user, order))
    assert not paid["notification"]["acknowledged"] and paid["notification"]["status"] == 404
    assert fresh(no).status == "unpaid"  # WeChat has the money; we do not know yet

    young = reconcile(older_than=3600)  # too young to ask about
    assert young.checked == 0 and fresh(no).status == "unpaid"

    summary = reconcile(older_than=0)
    assert (summary.checked, summary.paid, summary.closed, summary.errors) == (1, 1, 0, 0)
    found = fresh(no)
    assert found.status == "paid" and found.transaction_id == paid["transaction_id"]
    assert [p.source for p in found.payments] == ["query"]

    again = reconcile(older_than=0)  # idempotent: nothing left to do
    assert (again.checked, again.paid) == (0, 0)
    assert len(fresh(no).payments) == 1


def test_an_unpaid_order_past_its_time_is_closed_at_wechat_then_here(client, user):
    order = new_order(client, user)
    no = order["out_trade_no"]
    prepay(client, user, order)
    never_prepaid = new_order(client, user)["out_trade_no"]
    live = new_order(client, user)["out_trade_no"]
    expire(no)
    expire(never_prepaid)
    before = sandbox_calls(client)["closeorder"]

    summary = reconcile(older_than=3600)
    assert (summary.checked, summary.closed, summary.paid, summary.errors) == (2, 2, 0, 0)
    assert sandbox_calls(client)["closeorder"] == before + 1  # only the one WeChat knew about
    from miniapp_server.sandbox.routes import emulator
    assert emulator().load_order(no)["state"] == "CLOSED"
    assert fresh(no).status == "closed" and fresh(no).closed_at is not None
    assert fresh(never_prepaid).status == "closed"
    assert fresh(live).status == "unpaid"
    from miniapp_server.sandbox.emulator import SandboxError
    with pytest.raises(SandboxError) as err:  # nobody can pay it at WeChat any more
        emulator().pay_order(no)
    assert err.value.code == "order_closed"


def test_an_expired_order_paid_at_the_last_moment_is_found_paid_not_closed(lossy):
    app, client, user = lossy
    order = new_order(client, user)
    no = order["out_trade_no"]
    pay_in_sandbox(client, prepay(client, user, order))  # paid; the notification is lost
    expire(no)
    summary = reconcile(older_than=3600)
    assert (summary.checked, summary.paid, summary.closed) == (1, 1, 0)  # closeorder said ORDERPAID
    assert fresh(no).status == "paid"


def test_a_payment_landing_after_close_is_flagged_then_refunded(client, user):
    from miniapp_server.sandbox.routes import emulator

    order = new_order(client, user)
    no = order["out_trade_no"]
    prepay(client, user, order)
    expire(no)
    assert reconcile(older_than=0).closed == 1
    # WeChat completes a payment that was already under way when the order was closed.
    emu = emulator()
    trade = emu.load_order(no)
    trade["state"] = "NOTPAY"
    emu.save_order(trade)
    landed = emu.pay_order(no)
    assert landed["notification"]["acknowledged"]  # recorded, so WeChat may stop: never a lost payment

    flagged = fresh(no)
    assert flagged.status == "closed" and flagged.anomaly == "paid_after_close"
    (payment,) = flagged.payments
    assert payment.anomaly == "paid_after_close" and payment.transaction_id == landed["transaction_id"]
    assert reconcile(older_than=0).checked == 0  # a closed order is not reconciled again

    refund = refunds.refund_order(flagged, transaction_id=payment.transaction_id).refund
    assert refund.status == "success" and refund.refund_fee == order["total_fee"]
    assert fresh(no).status == "closed"


def test_unsettled_refunds_are_resumed_or_queried(client, user):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    # 1. WeChat accepted a refund, but its notification is lost: the refund query settles it.
    client.post("/sandbox/control/refund-behaviour", json={"hold_notifications": True})
    held = refunds.refund_order(fresh(no), fee=600).refund
    assert held.status == "processing"
    client.post("/sandbox/control/refund-notify", json={"out_refund_no": held.out_refund_no, "deliver": False})
    # 2. WeChat never answered another: it is sent again, with the same out_refund_no.
    client.post("/sandbox/control/refund-behaviour", json={"hold_notifications": False, "fail_next": "SYSTEMERROR"})
    unanswered = refunds.refund_order(fresh(no), fee=400).refund
    assert unanswered.status == "pending"
    assert fresh(no).status == "refunding"

    summary = reconcile(older_than=0)
    assert (summary.refunds_checked, summary.refunds_settled, summary.errors) == (2, 2, 0)
    rows = {r.out_refund_no: r for r in fresh(no).refunds}
    assert rows[held.out_refund_no].status == "success" and rows[unanswered.out_refund_no].status == "success"
    after = fresh(no)
    assert after.refunded_fee == 1000 and after.status == "paid"
    assert len(sandbox_notifications(client, no, "refund")) == 1  # only the resumed one was notified
    assert reconcile(older_than=0).refunds_checked == 0


def test_one_pass_at_a_time(client, user):
    order = new_order(client, user)
    prepay(client, user, order)
    expire(order["out_trade_no"])
    with store.lock(LOCK_NAME, timeout=30, wait=1):  # another machine is reconciling
        busy = reconcile(older_than=0)
    assert busy.skipped and busy.checked == 0 and "skipped" in busy.line()
    assert fresh(order["out_trade_no"]).status == "unpaid"
    assert reconcile(older_than=0).closed == 1


def test_wechat_failing_is_counted_not_fatal(client, user, monkeypatch):
    from miniapp_server.extensions import wechat
    from miniapp_server.wechat.errors import WeChatUnavailable

    first, second = new_order(client, user), new_order(client, user)
    for o in (first, second):
        prepay(client, user, o)
    calls = []

    def flaky(out_trade_no):
        calls.append(out_trade_no)
        if len(calls) == 1:
            raise WeChatUnavailable("no answer from WeChat Pay (ConnectTimeout)")
        return TradeState("NOTPAY")

    monkeypatch.setattr(wechat.gateway, "query", flaky)
    summary = reconcile(older_than=0)
    assert (summary.checked, summary.errors, summary.unchanged) == (2, 1, 1)
    assert "ConnectTimeout" in summary.failures[0]
    assert fresh(first["out_trade_no"]).status == fresh(second["out_trade_no"]).status == "unpaid"
