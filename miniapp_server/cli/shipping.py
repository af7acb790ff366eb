"""`flask orders ship`, `ship-batch`, `trade-managed`, `set-jump-path` (exit codes as in `orders.py`).

    flask orders ship 2026120112ab... --express SF --tracking SF1234567890 --receiver-phone 13912345678
    flask orders ship 2026120112ab... --virtual
    flask orders ship-batch today.csv      # out_trade_no,logistics,express_company,tracking_no,item_desc,receiver_phone
"""

from __future__ import annotations

import csv
import io
import sys

import click

from ..errors import ApiError
from ..extensions import db
from ..logging_setup import run_id
from ..models import UploadState
from ..shell import find_order
from ..wechat.errors import WeChatError
from .orders import REFUSED, WECHAT_FAILED, _emit, _order_or_exit, orders, refuse, wechat_failed

CSV_COLUMNS = ("out_trade_no", "logistics", "express_company", "tracking_no", "item_desc", "receiver_phone")


def _result(outcome) -> dict:
    order = outcome.order
    return {"out_trade_no": order.out_trade_no, "status": order.status,
            "shipped_at": order.shipped_at.isoformat() if order.shipped_at else None,
            "upload_no": outcome.upload_no, "upload_state": outcome.upload_state,
            "shipments": [s.operator_dict() for s in outcome.shipments],
            "error": str(outcome.error) if outcome.error else None}


def _describe(d: dict) -> str:
    packages = ", ".join(f"{s['express_company']} {s['tracking_no']}" if s["logistics_type"] == "express"
                         else s["logistics_type"] for s in d["shipments"])
    return f"{d['out_trade_no']}: {d['status']}; upload #{d['upload_no']} ({packages}): {d['upload_state']}"


def _upload_trouble(d: dict) -> str | None:
    if d["upload_state"] == UploadState.FAILED.value:
        return (f"WeChat refused the shipping upload of {d['out_trade_no']}: {d['error']}; correct it and ship "
                "again (that replaces the refused upload)")
    if d["upload_state"] == UploadState.PENDING.value:
        return (f"WeChat has not taken the shipping upload of {d['out_trade_no']} yet ({d['error']}); it stays "
                "pending and `flask orders reconcile` sends it again")
    return None


@orders.command("ship")
@click.argument("out_trade_no")
@click.option("--express", "express_company", metavar="CODE", help="express company code of WeChat's list (SF, ZTO, ...)")
@click.option("--tracking", "tracking_nos", multiple=True, metavar="NO",
              help="tracking number (several with --split: one package each)")
@click.option("--virtual", "kind", flag_value="virtual", help="virtual goods (nothing is carried)")
@click.option("--pickup", "kind", flag_value="pickup", help="the buyer picks it up")
@click.option("--same-city", "kind", flag_value="same_city", help="same-city delivery")
@click.option("--item-desc", help="what is in it (at most 120 characters; default: the order's items)")
@click.option("--receiver-phone", help="the receiver's phone (sent masked; WeChat needs a contact for SF)")
@click.option("--split", is_flag=True, help="some packages of a split shipment (WeChat's delivery_mode 2)")
@click.option("--all-delivered", is_flag=True, help="with --split: these are the last packages")
@click.option("--change", is_flag=True, help="replace shipping information WeChat already has (once per order)")
@click.option("--json", "as_json", is_flag=True)
def ship(out_trade_no, express_company, tracking_nos, kind, item_desc, receiver_phone, split, all_delivered,
         change, as_json) -> None:
    """Ship a paid order and upload its shipping information to WeChat."""
    from ..services.shipping import PackageIn, ship_order

    if express_company and kind:
        raise click.UsageError("give --express CODE --tracking NO, or one of --virtual, --pickup, --same-city")
    if not express_company and not kind:
        raise click.UsageError("how is it shipped? --express CODE --tracking NO, --virtual, --pickup or --same-city")
    if tracking_nos and not express_company:
        raise click.UsageError("--tracking goes with --express")
    if all_delivered and not split:
        raise click.UsageError("--all-delivered goes with --split")
    if len(tracking_nos) > 1 and not split:
        raise click.UsageError("several --tracking numbers are a split shipment: add --split")
    with run_id():
        order = _order_or_exit(out_trade_no)
        if express_company:
            packages = [PackageIn(tracking_no=t, express_company=express_company, item_desc=item_desc,
                                  receiver_phone=receiver_phone) for t in (tracking_nos or ("",))]
        else:
            packages = [PackageIn(item_desc=item_desc, receiver_phone=receiver_phone)]
        try:
            outcome = ship_order(order, "express" if express_company else kind, packages, split=split,
                                 all_delivered=all_delivered or not split, change=change)
        except ApiError as err:
            refuse(f"refused: {err.message}")
        data = _result(outcome)
        _emit(data, as_json, lambda d: click.echo(("changed " if change else "shipped ") + _describe(d)))
        trouble = _upload_trouble(data)
        if trouble:
            wechat_failed(trouble)


@orders.command("ship-batch")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--json", "as_json", is_flag=True)
def ship_batch(file, as_json: bool) -> None:
    """Ship many orders from a CSV file, one line per order.

    Columns (a header line names them): out_trade_no, logistics (express, virtual, pickup,
    same_city; empty means express), express_company, tracking_no, item_desc, receiver_phone.
    A bad line is reported with its number and the rest goes on; exit 1 if any line was refused,
    else 3 if WeChat did not take some upload (reconcile retries those).
    """
    from ..services.shipping import PackageIn, ship_order

    text = file.read()
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "out_trade_no" not in [f.strip() for f in reader.fieldnames]:
        raise click.UsageError(f"{file.name}: the first line must name the columns: {','.join(CSV_COLUMNS)}")
    unknown = [f for f in reader.fieldnames if f and f.strip() not in CSV_COLUMNS]
    if unknown:
        raise click.UsageError(f"{file.name}: unknown column(s) {', '.join(unknown)}; known: {','.join(CSV_COLUMNS)}")
    lines: list[dict] = []
    with run_id():
        for raw in reader:
            number = reader.line_num
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k}
            if not any(row.values()):
                continue  # a blank line
            no = row.get("out_trade_no", "")
            entry: dict = {"line": number, "out_trade_no": no, "ok": False}
            try:
                order = find_order(no) if no else None
                if order is None:
                    raise ApiError(404, "not_found", f"no order {no}" if no else "no out_trade_no")
                kind = row.get("logistics") or "express"
                package = PackageIn(tracking_no=row.get("tracking_no") or None,
                                    express_company=row.get("express_company") or None,
                                    item_desc=row.get("item_desc") or None,
                                    receiver_phone=row.get("receiver_phone") or None)
                data = _result(ship_order(order, kind, [package]))
                entry.update(ok=True, status=data["status"], upload_state=data["upload_state"], error=data["error"])
            except ApiError as err:
                db.session.rollback()
                entry.update(error=err.message, refused=True)
            lines.append(entry)
    refused = [e for e in lines if e.get("refused")]
    not_through = [e for e in lines if e["ok"] and e["upload_state"] != UploadState.UPLOADED.value]
    summary = {"lines": lines, "shipped": sum(e["ok"] for e in lines), "refused": len(refused),
               "uploaded": sum(e["ok"] and e["upload_state"] == UploadState.UPLOADED.value for e in lines),
               "not_uploaded": len(not_through)}

    def table(d):
        for e in d["lines"]:
            if e["ok"]:
                extra = f" ({e['error']})" if e["error"] else ""
                click.echo(f"line {e['line']}: {e['out_trade_no']}: {e['status']}, upload {e['upload_state']}{extra}")
            else:
                click.echo(f"line {e['line']}: refused: {e['error']}", err=True)
        click.echo(f"{d['shipped']} shipped ({d['uploaded']} uploaded to WeChat), {d['refused']} refused")

    _emit(summary, as_json, table)
    if refused:
        sys.exit(REFUSED)
    if not_through:
        sys.exit(WECHAT_FAILED)


@orders.command("trade-managed")
@click.option("--json", "as_json", is_flag=True)
def trade_managed_cmd(as_json: bool) -> None:
    """Ask WeChat whether the mini-program is under order-shipping management (is_trade_managed)."""
    from ..services.trade_management import describe, trade_managed

    try:
        managed = trade_managed()
    except WeChatError as err:
        wechat_failed(f"WeChat: {err}")
    _emit({"trade_managed": managed, "message": describe(managed)}, as_json, lambda d: click.echo(d["message"]))


@orders.command("set-jump-path")
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True)
def set_jump_path_cmd(path: str | None, as_json: bool) -> None:
    """Make WeChat's shipping messages open the mini-program's order page (set_msg_jump_path).

    PATH defaults to WECHAT_SHIPPING_JUMP_PATH (pages/order-detail/order-detail); WeChat adds
    transaction_id, merchant_id and merchant_trade_no to its query by itself.
    """
    from ..services.trade_management import set_jump_path

    if path is not None and (not path or path.startswith("/") or len(path) > 512):
        raise click.UsageError("PATH is a page path of the mini-program, like pages/order-detail/order-detail")
    try:
        done = set_jump_path(path)
    except WeChatError as err:
        wechat_failed(f"WeChat: {err}")
    _emit({"path": done}, as_json, lambda d: click.echo(f"WeChat's shipping messages now open {d['path']}"))
