"""Reconciliation against WeChat's daily bills, through the sandbox (v2 or v3, as WECHAT_PAY_API says) and on
WeChat's own sample bills: every kind of discrepancy caught, a missed payment applied exactly once however
often (and however concurrently) the check runs, the CLI's exit codes, and reconcile's daily pass."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, update

from miniapp_server.extensions import db, wechat
from miniapp_server.models import BillCheck, Payment, Refund
from miniapp_server.services import payments
from miniapp_server.services.bills import check_bill, due_checks
from miniapp_server.services.reconcile import reconcile
from miniapp_server.wechat.errors import WeChatUnavailable
from miniapp_server.wechat.pay.bills import BillFile
from miniapp_server.wechat.times import CHINA, china_now

from .conftest import lose_notifications
from .ops_helpers import fresh, new_order, paid_order, pay_in_sandbox, prepay

FIXTURES = Path(__file__).parent / "fixtures" / "bills"


def today():
    return china_now().date()


def kinds(check: BillCheck) -> list[str]:
    return sorted(d.kind for d in check.discrepancies)


def bills_cli(app, *args):
    return app.test_cli_runner().invoke(args=["orders", "bills", "check", "--date", today().isoformat(), *args])


def test_a_day_the_bill_and_the_ledger_agree(app, client, user):
    a, b = paid_order(client, user), paid_order(client, user, quantity=1)
    check = check_bill(today())
    assert (check.status, check.lines, check.payments, check.discrepancy_count) == ("clean", 2, 2, 0)
    assert check.paid_fen == check.ours_paid_fen == a["total_fee"] + b["total_fee"]
    assert check.fee_fen > 0  # the sandbox charges 0.60%, rounded to the fen per trade
    result = bills_cli(app, "--json", "--type", "trade")
    assert result.exit_code == 0, result.output
    assert '"status": "clean"' in result.output


def test_no_bill_that_day_is_not_an_error(app, runner):
    check = check_bill(today() - timedelta(days=3))
    assert check.status == "no_bill" and check.error is None
    result = runner.invoke(args=["orders", "bills", "check", "--date", (today() - timedelta(days=3)).isoformat()])
    assert result.exit_code == 0, result.output
    assert "no_bill" in result.output


def test_a_missed_payment_is_applied_once_however_often_the_check_runs(app, client, user):
    lose_notifications(app)
    order = new_order(client, user)
    no = order["out_trade_no"]
    paid = pay_in_sandbox(client, prepay(client, user, order))
    assert not paid["notification"]["acknowledged"] and fresh(no).status == "unpaid"

    first = check_bill(today())
    assert first.status == "discrepancies" and first.applied == 1 and kinds(first) == ["missed_payment"]
    found = fresh(no)
    assert found.status == "paid" and found.transaction_id == paid["transaction_id"]
    assert [p.source for p in found.payments] == ["bill"]
    result = bills_cli(app, "--type", "trade")
    assert result.exit_code == 0, result.output  # the second check finds the ledger right
    assert db.session.scalar(db.select(func.count(Payment.id))) == 1
    assert db.session.get(BillCheck, first.id).discrepancies[0].transaction_id == paid["transaction_id"]


def test_concurrent_checks_apply_a_missed_payment_once(app, client, user):
    lose_notifications(app)
    order = new_order(client, user)
    pay_in_sandbox(client, prepay(client, user, order))
    applied, errors = [], []
    start = threading.Barrier(4)

    def run():
        with app.app_context():
            try:
                start.wait(timeout=10)
                applied.append(check_bill(today()).applied)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(applied) == 4
    assert sum(applied) == 1
    db.session.rollback()
    assert db.session.scalar(db.select(func.count(Payment.id))) == 1
    assert fresh(order["out_trade_no"]).status == "paid"


def test_an_amount_off_by_one_fen(app, client, user):
    order = paid_order(client, user)
    assert client.post("/sandbox/control/bills", json={"amount_off_by": 1}).status_code == 200
    check = check_bill(today())
    assert kinds(check) == ["amount_differs"]
    d = check.discrepancies[0]
    assert (d.out_trade_no, d.bill_fen, d.ours_fen) == (order["out_trade_no"], order["total_fee"] + 1,
                                                       order["total_fee"])
    result = bills_cli(app, "--type", "trade")
    assert result.exit_code == 1 and "amount_differs" in result.output


def test_a_payment_for_an_order_we_do_not_have(app, client, user):
    paid_order(client, user)
    client.post("/sandbox/control/bills", json={"extra_payment": {"out_trade_no": "NOTOURS0001", "total_fee": 500}})
    check = check_bill(today())
    assert kinds(check) == ["unknown_payment"]
    assert (check.discrepancies[0].out_trade_no, check.discrepancies[0].bill_fen) == ("NOTOURS0001", 500)


def test_the_knob_pays_an_order_silently_and_the_check_finds_it(app, client, user):
    order = new_order(client, user)
    prepay(client, user, order)
    client.post("/sandbox/control/bills", json={"extra_payment": {"out_trade_no": order["out_trade_no"]}})
    check = check_bill(today())
    assert kinds(check) == ["missed_payment"] and fresh(order["out_trade_no"]).status == "paid"


def test_paid_here_but_absent_at_wechat(app, client, user):
    order = new_order(client, user)
    verdict = payments.apply_payment(out_trade_no=order["out_trade_no"], transaction_id="4200000000NOTATWECHAT",
                                     total_fee=order["total_fee"], time_end=china_now().strftime("%Y%m%d%H%M%S"),
                                     source="query")
    assert verdict == payments.PAID
    check = check_bill(today())  # the sandbox never saw this payment: it has no bill that day at all
    assert check.status == "discrepancies" and kinds(check) == ["missing_at_wechat"]
    assert check.discrepancies[0].ours_fen == order["total_fee"]


def _refund(client, no: str) -> None:
    from miniapp_server.services.refunds import refund_order

    outcome = refund_order(fresh(no), fee=100, reason="test")
    assert outcome.refund.status == "success", outcome.error


def test_refunds_likewise(app, client, user):
    a, b, c = paid_order(client, user), paid_order(client, user), paid_order(client, user)
    for order in (a, b, c):
        _refund(client, order["out_trade_no"])
    ids = [fresh(order["out_trade_no"]).id for order in (a, b, c)]  # fresh() rolls back: read them first
    db.session.execute(update(Refund).where(Refund.order_id == ids[0]).values(refund_fee=99))
    db.session.execute(update(Refund).where(Refund.order_id == ids[1]).values(status="processing"))
    gone = db.session.execute(db.select(Refund).where(Refund.order_id == ids[2])).scalar_one()
    gone.out_refund_no = "renamed-here-only"  # the bill's refund is unknown here; ours is missing there
    db.session.commit()
    check = check_bill(today())
    assert kinds(check) == ["refund_amount_differs", "refund_missing_at_wechat", "refund_state_differs",
                            "refund_unknown"]
    assert check.refunds == 3 and check.refunded_fen == 300


def test_wechat_unreachable_is_a_failed_check_and_exit_3(app, monkeypatch):
    def down(kind, day):
        raise WeChatUnavailable("no answer from WeChat Pay (ConnectTimeout)")

    monkeypatch.setattr(wechat.gateway, "download_bill", down)
    check = check_bill(today())
    assert check.status == "failed" and "ConnectTimeout" in check.error
    assert bills_cli(app).exit_code == 3


def _serve(monkeypatch, name: str) -> None:
    monkeypatch.setattr(wechat.gateway, "download_bill",
                        lambda kind, day: BillFile.from_bytes((FIXTURES / name).read_bytes()))


def test_wechats_sample_bill_through_the_matcher(app, monkeypatch):
    """WxJava's recording of a real ALL bill: one line shown, its summary counting 48; the trade is not ours."""
    _serve(monkeypatch, "tradebill_all_wxjava.csv")
    check = check_bill(today())
    assert check.lines == 1 and check.paid_fen == 600 and check.fee_fen == 1
    assert kinds(check).count("summary_mismatch") == 6  # count, settlement, refunds, fees, total, applied refunds
    assert "unknown_payment" in kinds(check)


def test_a_v3_sample_bill_that_adds_up(app, monkeypatch):
    _serve(monkeypatch, "tradebill_v3_native.csv")
    check = check_bill(today())
    assert check.lines == 3 and check.paid_fen == 3
    assert kinds(check) == ["unknown_payment"] * 3  # it adds up; its trades are simply not this shop's


def test_an_unreadable_bill_fails_and_changes_nothing(app, client, user, monkeypatch):
    lose_notifications(app)
    order = new_order(client, user)
    pay_in_sandbox(client, prepay(client, user, order))
    good = wechat.gateway.download_bill("trade", today())
    text = b"".join(line.encode() for line in good.lines())
    cut = text[: text.index("总交易单数".encode())]  # the summary never arrived
    monkeypatch.setattr(wechat.gateway, "download_bill", lambda kind, day: BillFile.from_bytes(cut))
    check = check_bill(today())
    assert check.status == "failed" and "summary" in check.error
    assert fresh(order["out_trade_no"]).status == "unpaid"  # nothing applied from a bill cut short


def test_the_fund_flow_bill_adds_up(app, client, user):
    order = paid_order(client, user)
    _refund(client, order["out_trade_no"])
    check = check_bill(today(), "fundflow")
    assert check.status == "clean", [d.detail for d in check.discrepancies]
    assert check.payments == 1 and check.paid_fen == order["total_fee"]
    assert check.refunds == 2 and check.fee_fen > 0  # the fee and the refund went out


def test_wechats_fund_flow_sample_is_checked_against_its_summary(app, monkeypatch):
    _serve(monkeypatch, "fundflow_v3.csv")  # three bookings counted, two shown
    check = check_bill(today(), "fundflow")
    assert [d.detail.split(":")[0] for d in check.discrepancies] == ["资金流水总笔数", "收入笔数", "收入金额"]


# -- reconcile -----------------------------------------------------------------------------------------

def china(day, hour):
    return datetime(day.year, day.month, day.day, hour, tzinfo=CHINA)


def test_reconcile_checks_yesterdays_bill_once_after_ten(app, client, user):
    paid_order(client, user)
    client.post("/sandbox/control/bills", json={"extra_payment": {"out_trade_no": "NOTOURS0002", "total_fee": 1}})
    tomorrow = today() + timedelta(days=1)
    assert reconcile(older_than=3600, now=china(tomorrow, 9)).bills == []  # not made yet at 09:00
    first = reconcile(older_than=3600, now=china(tomorrow, 10) + timedelta(minutes=5))
    assert [(b["bill_type"], b["bill_date"], b["status"], b["discrepancy_count"]) for b in first.bills] == [
        ("trade", today().isoformat(), "discrepancies", 1), ("fundflow", today().isoformat(), "clean", 0)]
    assert "bill trade" in first.line()
    again = reconcile(older_than=3600, now=china(tomorrow, 11))
    assert again.bills == []  # done for that day


def test_reconcile_tries_a_failed_check_again_later(app, monkeypatch):
    tomorrow = today() + timedelta(days=1)

    def down(kind, day):
        raise WeChatUnavailable("WeChat Pay answered HTTP 502")

    monkeypatch.setattr(wechat.gateway, "download_bill", down)
    failed = reconcile(older_than=3600, now=china(tomorrow, 11))
    assert {b["status"] for b in failed.bills} == {"failed"} and failed.errors == 0
    monkeypatch.undo()
    db.session.execute(update(BillCheck).values(finished_at=china(tomorrow, 11)))  # as if it were then
    db.session.commit()
    soon = china(tomorrow, 11) + timedelta(minutes=5)
    assert due_checks(soon, ["trade"], timedelta(minutes=30)) == []  # not at once
    later = reconcile(older_than=3600, now=china(tomorrow, 12))
    assert {b["status"] for b in later.bills} == {"no_bill"}
    assert due_checks(china(tomorrow, 13), ["trade", "fundflow"], timedelta(minutes=30)) == []
