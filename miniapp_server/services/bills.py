"""Reconciliation against WeChat's daily bills: the ledger a merchant is judged by.

`check_bill(day)` downloads the bill of one China-time day and reads it twice, as a stream:
1. the file alone: every line parses and the lines add up to the summary line (count, amounts, fees),
   so a truncated or garbled file changes nothing here;
2. against our ledger, a batch of lines at a time: a payment WeChat has and we do not is applied through
   `payments.apply_payment` (source `bill`), the notification's own exactly-once path, so any number of
   checks, at once or one after the other, apply it once; then the day's payments and refunds we have
   that the bill does not.

Memory stays bounded whatever the bill's size: the file is spooled to disk, lines are read one at a
time, and what is remembered across batches is only our own side of the day (the transactions we know).
Each check is a `BillCheck` row with its `BillDiscrepancy` rows; docs/bills.md says what each kind
means and what to do about it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Iterable, Iterator

from ..extensions import db, wechat
from ..sqlite_tuning import begin_write
from ..models import BillCheck, BillCheckStatus, BillDiscrepancy, Order, Payment, Refund, RefundStatus, utcnow
from ..wechat.errors import WeChatError
from ..wechat.pay import bills as wire
from ..wechat.pay.gateway import FUND_FLOW_BILL, TRADE_BILL
from ..wechat.times import CHINA
from . import payments

log = logging.getLogger(__name__)

BATCH = 500  # bill lines matched per round of queries
MAX_DISCREPANCY_ROWS = 1000  # kept per check; the count is always complete

# The kinds of discrepancy (docs/bills.md).
MISSED_PAYMENT = "missed_payment"  # paid at WeChat, unpaid here: applied now from the bill
UNKNOWN_PAYMENT = "unknown_payment"  # paid at WeChat for an order we do not have
PAYMENT_ANOMALY = "payment_anomaly"  # paid at WeChat, and apply_payment flagged it (amount, after close, twice)
AMOUNT_DIFFERS = "amount_differs"  # the same transaction with another amount here
MISSING_AT_WECHAT = "missing_at_wechat"  # paid here, absent from WeChat's bill
REFUND_UNKNOWN = "refund_unknown"  # a refund in the bill that we never made
REFUND_AMOUNT_DIFFERS = "refund_amount_differs"
REFUND_STATE_DIFFERS = "refund_state_differs"  # refunded at WeChat, not here (or the other way round)
REFUND_MISSING_AT_WECHAT = "refund_missing_at_wechat"  # refunded here, absent from the bill
SUMMARY_MISMATCH = "summary_mismatch"  # the bill's lines do not add up to its own summary line
KINDS = (MISSED_PAYMENT, UNKNOWN_PAYMENT, PAYMENT_ANOMALY, AMOUNT_DIFFERS, MISSING_AT_WECHAT, REFUND_UNKNOWN,
         REFUND_AMOUNT_DIFFERS, REFUND_STATE_DIFFERS, REFUND_MISSING_AT_WECHAT, SUMMARY_MISMATCH)

FINAL = (BillCheckStatus.CLEAN.value, BillCheckStatus.DISCREPANCIES.value, BillCheckStatus.NO_BILL.value)


def china_day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC instants a China-time day begins and ends (WeChat's bills are cut at midnight UTC+8)."""
    start = datetime.combine(day, time(0), CHINA)
    return start, start + timedelta(days=1)


def yesterday_in_china(now: datetime | None = None) -> date:
    now = (now or utcnow()).astimezone(CHINA)
    return now.date() - timedelta(days=1)


@dataclass
class _Found:
    """What one check has found so far; discrepancy rows are written as they come, up to a limit."""

    check_id: int
    count: int = 0
    applied: int = 0
    pending: list[BillDiscrepancy] = field(default_factory=list)

    def add(self, kind: str, *, out_trade_no: str | None = None, transaction_id: str | None = None,
            out_refund_no: str | None = None, bill_fen: int | None = None, ours_fen: int | None = None,
            detail: str = "") -> None:
        self.count += 1
        log.warning("bill check %s: %s %s %s", self.check_id, kind, out_trade_no or out_refund_no or "", detail)
        if self.count <= MAX_DISCREPANCY_ROWS:
            self.pending.append(BillDiscrepancy(
                check_id=self.check_id, kind=kind, out_trade_no=(out_trade_no or None) and out_trade_no[:64],
                transaction_id=(transaction_id or None) and transaction_id[:32],
                out_refund_no=(out_refund_no or None) and out_refund_no[:64], bill_fen=bill_fen, ours_fen=ours_fen,
                detail=detail[:255] or None))

    def flush(self) -> None:
        if self.pending:
            begin_write(db.session)
            db.session.add_all(self.pending)
            db.session.commit()
            self.pending = []


# -- one check ----------------------------------------------------------------------------------------

def check_bill(day: date, kind: str = TRADE_BILL, trigger: str = "cli") -> BillCheck:
    """Check WeChat's `kind` bill (trade or fundflow) of China-time `day`; the finished BillCheck row.

    WeChat failing or unreachable, or a file that is not a bill, ends as status `failed` (never raises
    for those); reconcile tries a failed day again later.
    """
    if kind not in (TRADE_BILL, FUND_FLOW_BILL):
        raise ValueError("kind must be trade or fundflow")
    check = BillCheck(bill_date=day, bill_type=kind, api=wechat.gateway.api, trigger=trigger,
                      status=BillCheckStatus.RUNNING.value, started_at=utcnow())
    begin_write(db.session)
    db.session.add(check)
    db.session.commit()
    check_id = check.id
    found = _Found(check_id)
    try:
        bill = wechat.gateway.download_bill(kind, day)
    except WeChatError as err:
        return _finish(check_id, found, BillCheckStatus.FAILED, error=f"WeChat: {err}")
    try:
        if bill is None:
            if kind == TRADE_BILL:  # no bill is an empty bill: whatever we have for the day is missing there
                _ledger_side(check_id, found, day, set(), set())
            status = BillCheckStatus.DISCREPANCIES if found.count else BillCheckStatus.NO_BILL
            return _finish(check_id, found, status)
        with bill:
            if kind == TRADE_BILL:
                _check_trade_bill(check_id, found, day, bill)
            else:
                _check_fund_flow(check_id, found, bill)
    except wire.BillFormatError as err:
        db.session.rollback()
        return _finish(check_id, found, BillCheckStatus.FAILED, error=f"unreadable bill: {err}")
    except WeChatError as err:
        db.session.rollback()
        return _finish(check_id, found, BillCheckStatus.FAILED, error=f"WeChat: {err}")
    return _finish(check_id, found, BillCheckStatus.DISCREPANCIES if found.count else BillCheckStatus.CLEAN)


def _finish(check_id: int, found: _Found, status: BillCheckStatus, error: str | None = None) -> BillCheck:
    found.flush()
    begin_write(db.session)  # SQLite: a read that turns into a write must hold the write lock from the start
    check = db.session.get(BillCheck, check_id)
    assert check is not None
    check.status, check.finished_at, check.error = status.value, utcnow(), (error or None) and error[:255]
    check.discrepancy_count, check.applied = found.count, found.applied
    db.session.commit()
    log.info("bill check %s (%s %s, %s): %s, %s discrepancies, %s payments applied%s", check_id, check.bill_type,
             check.bill_date, check.api, check.status, found.count, found.applied, f": {error}" if error else "")
    return check


def _update(check_id: int, **values) -> None:
    begin_write(db.session)
    check = db.session.get(BillCheck, check_id)
    assert check is not None
    for name, value in values.items():
        setattr(check, name, value)
    db.session.commit()


def _batches(items: Iterable, size: int = BATCH) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- the trade bill -----------------------------------------------------------------------------------

def _check_trade_bill(check_id: int, found: _Found, day: date, bill: wire.BillFile) -> None:
    # Pass 1: the file alone. Any BillFormatError here leaves our ledger untouched.
    reader = wire.BillReader(bill.lines())
    sums = {"count": 0, "settlement": 0, "total": 0, "refund_settlement": 0, "refund": 0, "fee": 0,
            "payments": 0, "refunds": 0, "paid": 0, "refunded": 0}
    for row in reader:
        line = wire.trade_line(row)
        sums["count"] += 1
        sums["settlement"] += line.settlement_fen
        sums["total"] += line.total_fen
        sums["refund_settlement"] += line.refund_settlement_fen
        sums["refund"] += line.refund_fen
        sums["fee"] += line.fee_fen
        if line.is_payment:
            sums["payments"] += 1
            sums["paid"] += line.total_fen
        elif line.is_refund:
            sums["refunds"] += 1
            sums["refunded"] += line.refund_fen
    summary = wire.trade_summary(reader.summary)
    for name, said, counted in (("总交易单数", summary.count, sums["count"]),
                                ("应结订单总金额", summary.settlement_fen, sums["settlement"]),
                                ("退款总金额", summary.refund_fen, sums["refund_settlement"]),
                                ("手续费总金额", summary.fee_fen, sums["fee"]),
                                ("订单总金额", summary.total_fen, sums["total"]),
                                ("申请退款总金额", summary.applied_refund_fen, sums["refund"])):
        if said is not None and said != counted:
            found.add(SUMMARY_MISMATCH, bill_fen=said, ours_fen=counted,
                      detail=f"{name}: the summary says {said}, the lines add up to {counted}")
    _update(check_id, lines=sums["count"], payments=sums["payments"], refunds=sums["refunds"], paid_fen=sums["paid"],
            refunded_fen=sums["refunded"], fee_fen=summary.fee_fen)

    # Pass 2: against the ledger, a batch at a time; remembered across batches: only our own transactions.
    seen_payments: set[str] = set()
    seen_refunds: set[str] = set()
    for batch in _batches(wire.trade_line(row) for row in wire.BillReader(bill.lines())):
        _match_payments(found, [line for line in batch if line.is_payment], seen_payments)
        _match_refunds(found, [line for line in batch if line.is_refund], seen_refunds)
        found.flush()
    _ledger_side(check_id, found, day, seen_payments, seen_refunds)


def _bill_time(text: str) -> str:
    """`2019-07-25 08:35:41` (a bill's China time) as WeChat Pay's `yyyyMMddHHmmss`."""
    return "".join(ch for ch in text if ch.isascii() and ch.isdigit())[:14]


def _match_payments(found: _Found, lines: list[wire.TradeLine], seen: set[str]) -> None:
    if not lines:
        return
    known = {p.transaction_id: p for p in db.session.execute(
        db.select(Payment).where(Payment.transaction_id.in_({line.transaction_id for line in lines}))).scalars()}
    db.session.commit()
    for line in lines:
        ours = known.get(line.transaction_id)
        if ours is not None:
            seen.add(ours.transaction_id)
            if ours.total_fee != line.total_fen:
                found.add(AMOUNT_DIFFERS, out_trade_no=line.out_trade_no, transaction_id=line.transaction_id,
                          bill_fen=line.total_fen, ours_fen=ours.total_fee,
                          detail=f"WeChat's bill says {line.total_fen} fen, our payment {ours.total_fee} fen")
            continue
        # WeChat has it and we do not: its own exactly-once path decides what it means.
        verdict = payments.apply_payment(out_trade_no=line.out_trade_no, transaction_id=line.transaction_id,
                                         total_fee=line.total_fen, time_end=_bill_time(line.time), source="bill")
        if verdict == payments.PAID:
            found.applied += 1
            seen.add(line.transaction_id)
            found.add(MISSED_PAYMENT, out_trade_no=line.out_trade_no, transaction_id=line.transaction_id,
                      bill_fen=line.total_fen, detail="paid at WeChat, unpaid here: applied from the bill now")
        elif verdict == payments.DUPLICATE:
            seen.add(line.transaction_id)  # a concurrent check (or notification) recorded it just now
        elif verdict == payments.UNKNOWN_ORDER:
            found.add(UNKNOWN_PAYMENT, out_trade_no=line.out_trade_no, transaction_id=line.transaction_id,
                      bill_fen=line.total_fen, detail="paid at WeChat for an order this shop does not have")
        else:
            seen.add(line.transaction_id)
            found.add(PAYMENT_ANOMALY, out_trade_no=line.out_trade_no, transaction_id=line.transaction_id,
                      bill_fen=line.total_fen, detail=f"recorded from the bill as {verdict}; refund it if due")


BILL_REFUND_DONE = "SUCCESS"
BILL_REFUND_FAILED = ("FAIL", "CHANGE")


def _match_refunds(found: _Found, lines: list[wire.TradeLine], seen: set[str]) -> None:
    if not lines:
        return
    known = {r.out_refund_no: r for r in db.session.execute(
        db.select(Refund).where(Refund.out_refund_no.in_({line.out_refund_no for line in lines}))).scalars()}
    db.session.commit()
    for line in lines:
        ours = known.get(line.out_refund_no)
        if ours is None:
            found.add(REFUND_UNKNOWN, out_trade_no=line.out_trade_no, transaction_id=line.transaction_id,
                      out_refund_no=line.out_refund_no, bill_fen=line.refund_fen,
                      detail="refunded at WeChat (the merchant platform?), unknown here")
            continue
        seen.add(ours.out_refund_no)
        if ours.refund_fee != line.refund_fen:
            found.add(REFUND_AMOUNT_DIFFERS, out_trade_no=line.out_trade_no, out_refund_no=line.out_refund_no,
                      bill_fen=line.refund_fen, ours_fen=ours.refund_fee,
                      detail=f"WeChat's bill says {line.refund_fen} fen, our refund {ours.refund_fee} fen")
        elif (line.refund_status == BILL_REFUND_DONE and ours.status != RefundStatus.SUCCESS.value) or \
                (line.refund_status in BILL_REFUND_FAILED and ours.status == RefundStatus.SUCCESS.value):
            found.add(REFUND_STATE_DIFFERS, out_trade_no=line.out_trade_no, out_refund_no=line.out_refund_no,
                      bill_fen=line.refund_fen, ours_fen=ours.refund_fee,
                      detail=f"WeChat's bill says {line.refund_status}, ours is {ours.status}")


def _ledger_side(check_id: int, found: _Found, day: date, seen_payments: set[str], seen_refunds: set[str]) -> None:
    """Our payments and successful refunds of the day that the bill does not have."""
    start, end = china_day_bounds(day)
    ours_paid = 0
    query = db.select(Payment.transaction_id, Payment.total_fee, Payment.order_id).where(
        Payment.time_end >= start, Payment.time_end < end).order_by(Payment.id)
    for txn, fee, order_id in db.session.execute(query.execution_options(yield_per=BATCH)):
        ours_paid += fee
        if txn not in seen_payments:
            no = db.session.execute(db.select(Order.out_trade_no).filter_by(id=order_id)).scalar()
            found.add(MISSING_AT_WECHAT, out_trade_no=no, transaction_id=txn, ours_fen=fee,
                      detail="paid here, absent from WeChat's bill of that day")
    ours_refunded = 0
    query = db.select(Refund.out_refund_no, Refund.refund_fee, Refund.transaction_id).where(
        Refund.status == RefundStatus.SUCCESS.value, Refund.created_at >= start, Refund.created_at < end
    ).order_by(Refund.id)
    for no, fee, txn in db.session.execute(query.execution_options(yield_per=BATCH)):
        ours_refunded += fee
        if no not in seen_refunds:
            found.add(REFUND_MISSING_AT_WECHAT, out_refund_no=no, transaction_id=txn, ours_fen=fee,
                      detail="refunded here, absent from WeChat's bill of that day")
    db.session.commit()
    found.flush()
    _update(check_id, ours_paid_fen=ours_paid, ours_refunded_fen=ours_refunded)


# -- the fund-flow bill -------------------------------------------------------------------------------

def _check_fund_flow(check_id: int, found: _Found, bill: wire.BillFile) -> None:
    """The account's money moves of the day: every line read and added up against the summary line.

    Its lines are bookings (a trade's income, its fee, a refund's expense, a withdrawal) on the day they
    were booked, not trades: the trade bill is where trades are matched one by one.
    """
    reader = wire.BillReader(bill.lines())
    income_count = expense_count = income = expense = fees = 0
    for row in reader:
        line = wire.fund_line(row)
        if line.income:
            income_count, income = income_count + 1, income + line.amount_fen
        else:
            expense_count, expense = expense_count + 1, expense + line.amount_fen
            if "手续费" in line.business_type:
                fees += line.amount_fen
    summary = wire.fund_summary(reader.summary)
    for name, said, counted in (("资金流水总笔数", summary.count, reader.count),
                                ("收入笔数", summary.income_count, income_count),
                                ("收入金额", summary.income_fen, income),
                                ("支出笔数", summary.expense_count, expense_count),
                                ("支出金额", summary.expense_fen, expense)):
        if said != counted:
            found.add(SUMMARY_MISMATCH, bill_fen=said, ours_fen=counted,
                      detail=f"{name}: the summary says {said}, the lines add up to {counted}")
    _update(check_id, lines=reader.count, payments=income_count, refunds=expense_count, paid_fen=income,
            refunded_fen=expense, fee_fen=fees)


# -- what reconcile runs ------------------------------------------------------------------------------

def due_checks(now: datetime, kinds: Iterable[str], retry_after: timedelta, ready_at: time = time(10)
               ) -> list[tuple[date, str]]:
    """The (day, kind) checks reconcile should run now: yesterday's (China time) once WeChat has made it
    (after 10:00 China time), unless a check of it finished; a failed one again after `retry_after`;
    one left `running` for an hour (its process died) again."""
    local = now.astimezone(CHINA)
    if local.time() < ready_at:
        return []
    day = local.date() - timedelta(days=1)
    due = []
    for kind in kinds:
        checks = db.session.execute(db.select(BillCheck).where(BillCheck.bill_date == day, BillCheck.bill_type == kind)
                                    .order_by(BillCheck.id.desc())).scalars().all()
        db.session.commit()
        if any(c.status in FINAL for c in checks):
            continue
        last = checks[0] if checks else None
        if last is None:
            due.append((day, kind))
        elif last.status == BillCheckStatus.FAILED.value and (last.finished_at or last.started_at) <= now - retry_after:
            due.append((day, kind))
        elif last.status == BillCheckStatus.RUNNING.value and last.started_at <= now - timedelta(hours=1):
            due.append((day, kind))
    return due


def bill_kinds(config) -> list[str]:
    """Which bills this shop checks: always the trade bill; the fund flow when it can be had
    (v3; v2 needs the merchant's client certificate, except against the in-app sandbox)."""
    setting = str(config.get("BILLS_FUND_FLOW", "auto")).lower()
    if setting in ("0", "false", "no", "off"):
        return [TRADE_BILL]
    if setting == "auto" and config.get("WECHAT_PAY_API") != "v3" and not config.get("WECHAT_CERT_PATH") \
            and not config.get("WECHAT_SANDBOX"):
        return [TRADE_BILL]
    return [TRADE_BILL, FUND_FLOW_BILL]
