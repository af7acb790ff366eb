"""`flask orders refund` and `flask orders reconcile` (exit codes as in `orders.py`: 0, 1, 2, 3)."""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

from ..errors import ApiError
from ..extensions import db
from ..logging_setup import run_id
from ..models import RefundStatus
from .orders import WECHAT_FAILED, _emit, _order_or_exit, orders, refuse


@orders.command("refund")
@click.argument("out_trade_no")
@click.option("--fee", type=click.IntRange(min=1), help="fen to refund (default: all that is left)")
@click.option("--reason", help="shown to the customer by WeChat (at most 80 characters)")
@click.option("--transaction", "transaction_id", help="refund this anomalous payment instead of the order's own")
@click.option("--json", "as_json", is_flag=True)
def refund(out_trade_no: str, fee: int | None, reason: str | None, transaction_id: str | None, as_json: bool) -> None:
    """Refund an order's payment (or an anomalous one), wholly or in part.

    Running it again after WeChat gave no answer resumes the same refund (same
    out_refund_no); once WeChat accepted it, another run is another refund.
    """
    from ..services.refunds import refund_order

    with run_id():
        o = _order_or_exit(out_trade_no)
        try:
            outcome = refund_order(o, fee=fee, reason=reason, transaction_id=transaction_id)
        except ApiError as err:
            refuse(f"refused: {err.message}")
        r = outcome.refund
        order = r.order
        db.session.refresh(order)
        data = {**r.to_dict(), "out_trade_no": order.out_trade_no, "order_status": order.status,
                "refunded_fee": order.refunded_fee, "resumed": outcome.resumed,
                "error": str(outcome.error) if outcome.error else None}

        def table(d):
            verb = "resumed" if d["resumed"] else "refund"
            click.echo(f"{verb} {d['out_refund_no']}: {d['refund_fee']} fen of {d['transaction_id']}: {d['status']}")
            click.echo(f"order {d['out_trade_no']}: {d['order_status']}, {d['refunded_fee']} fen refunded")

        _emit(data, as_json, table)
        if r.status == RefundStatus.FAILED.value:
            click.echo(f"WeChat refused the refund: {outcome.error or r.failure}", err=True)
            sys.exit(WECHAT_FAILED)
        if r.status == RefundStatus.PENDING.value:
            click.echo(f"WeChat gave no answer ({outcome.error}); run the same command again to resume "
                       f"{r.out_refund_no} (reconcile does too)", err=True)
            sys.exit(WECHAT_FAILED)


@orders.command("reconcile")
@click.option("--older-than", default=300, show_default=True, type=click.IntRange(min=0),
              help="seconds an unpaid order (or a refund) must have waited before WeChat is asked about it")
@click.option("--limit", default=500, show_default=True, type=click.IntRange(1, 100_000),
              help="orders (and refunds) per pass")
@click.option("--watch", is_flag=True, help="run again every --interval seconds until stopped")
@click.option("--interval", default=60, show_default=True, type=click.IntRange(min=1))
@click.option("--iterations", default=0, hidden=True, type=click.IntRange(min=0), help="stop after N passes (tests)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per pass")
def reconcile_cmd(older_than: int, limit: int, watch: bool, interval: int, iterations: int, as_json: bool) -> None:
    """Ask WeChat about unpaid orders and unsettled refunds; close orders whose time is up."""
    from ..services.reconcile import reconcile

    stop = threading.Event()
    previous = {}
    if watch and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):  # finish the pass under way, then leave
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    passes, errors = 0, 0
    try:
        while True:
            with run_id() as rid:
                summary = reconcile(older_than=older_than, limit=limit)
            db.session.remove()  # the next pass sees the database afresh
            passes += 1
            errors += summary.errors
            if as_json:  # one line per pass, so that `--watch --json` is JSON lines
                click.echo(json.dumps({**summary.to_dict(), "run_id": rid}, ensure_ascii=False))
            else:
                click.echo(summary.line())
            for failure in summary.failures:
                click.echo(f"  failed: {failure}", err=True)
            if not watch or (iterations and passes >= iterations) or stop.wait(interval):
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not watch and errors:
        sys.exit(WECHAT_FAILED)  # what failed is WeChat (or the database): the summary names each
