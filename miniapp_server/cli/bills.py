"""`flask orders bills check`: WeChat's daily bill against our ledger (services/bills.py, docs/bills.md).

Exit codes: 0 the bills and the ledger agree (or there was no bill), 1 discrepancies, 2 usage,
3 WeChat failed or was unreachable (or the file was unreadable).
"""

from __future__ import annotations

import sys

import click

from ..logging_setup import run_id
from ..models import BillCheckStatus
from .orders import _emit, orders

DISCREPANCIES, WECHAT_FAILED = 1, 3


@orders.group("bills")
def bills_group() -> None:
    """Reconcile with WeChat's daily bills."""


@bills_group.command("check")
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="the China-time day of the bill (default: yesterday in China)")
@click.option("--type", "kinds", type=click.Choice(["trade", "fundflow"]), multiple=True,
              help="which bill (default: the trade bill, and the fund flow when it can be had)")
@click.option("--json", "as_json", is_flag=True)
def check(day, kinds: tuple[str, ...], as_json: bool) -> None:
    """Download the day's bills and match them against our payments and refunds."""
    from flask import current_app

    from ..services.bills import bill_kinds, check_bill, yesterday_in_china

    with run_id():
        bill_day = day.date() if day else yesterday_in_china()
        results = [check_bill(bill_day, kind, trigger="cli").to_dict() for kind in
                   (kinds or bill_kinds(current_app.config))]

    def table(rows):
        for r in rows:
            click.echo(f"bill {r['bill_type']} {r['bill_date']} ({r['api']}): {r['status']}: {r['lines']} lines, "
                       f"{r['payments']} payments {r['paid_fen']} fen (ours {r['ours_paid_fen']}), "
                       f"{r['refunds']} refunds {r['refunded_fen']} fen (ours {r['ours_refunded_fen']}), "
                       f"fees {r['fee_fen']} fen; {r['discrepancy_count']} discrepancies, {r['applied']} applied")
            if r["error"]:
                click.echo(f"  error: {r['error']}")
            for d in r["discrepancies"]:
                who = d["out_trade_no"] or d["out_refund_no"] or "-"
                click.echo(f"  {d['kind']:<24} {who:<32} bill {d['bill_fen'] if d['bill_fen'] is not None else '-':>9}"
                           f"  ours {d['ours_fen'] if d['ours_fen'] is not None else '-':>9}  {d['detail'] or ''}")

    _emit({"checks": results}, as_json, lambda d: table(d["checks"]))
    statuses = {r["status"] for r in results}
    if BillCheckStatus.FAILED.value in statuses:
        sys.exit(WECHAT_FAILED)
    if BillCheckStatus.DISCREPANCIES.value in statuses:
        sys.exit(DISCREPANCIES)
