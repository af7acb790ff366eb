"""`flask orders ...` and `flask shell` for operators: readable tables, --json, exit codes scripts can use
(the contract's: 0 done, 1 refused (wrong state or bad input; an unknown order is bad input), 2 usage,
3 WeChat failed or unreachable)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from miniapp_server.extensions import db
from miniapp_server.models import Order, utcnow

from .conftest import bearer, login, wechat_path
from .ops_helpers import fresh, new_order, paid_order, pay_in_sandbox, prepay


def run(runner, *args: str):
    db.session.rollback()  # the command starts from what is committed, as a real `flask` process would
    return runner.invoke(args=["orders", *args])


def test_list_shows_a_table_filters_and_json(app, runner, client, user):
    paid = paid_order(client, user)
    unpaid = new_order(client, user, quantity=1)
    other = login(client, "someone-else")
    theirs = new_order(client, {"headers": bearer(other["token"])}, quantity=3)

    result = run(runner, "list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["out_trade_no", "status", "total_fee", "refunded", "user", "created_at", "(UTC)",
                                "anomaly"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert rows[paid["out_trade_no"]][1:4] == ["paid", "3600", "0"]
    assert rows[unpaid["out_trade_no"]][1:3] == ["unpaid", "1800"]
    assert lines[-1] == "(3 orders)"
    assert lines[1].split()[0] == theirs["out_trade_no"]  # newest first

    only_paid = run(runner, "list", "--status", "paid", "--json")
    assert [o["out_trade_no"] for o in json.loads(only_paid.stdout)] == [paid["out_trade_no"]]
    by_openid = json.loads(run(runner, "list", "--user", other["user"]["openid"], "--json").stdout)
    assert [o["out_trade_no"] for o in by_openid] == [theirs["out_trade_no"]]
    by_id = json.loads(run(runner, "list", "--user", str(user["user"]["id"]), "--json").stdout)
    assert {o["out_trade_no"] for o in by_id} == {paid["out_trade_no"], unpaid["out_trade_no"]}
    assert json.loads(run(runner, "list", "--since", "2999-01-01", "--json").stdout) == []
    assert len(json.loads(run(runner, "list", "--since", "2000-01-01", "--limit", "2", "--json").stdout)) == 2
    assert json.loads(run(runner, "list", "--anomalies", "--json").stdout) == []
    assert run(runner, "list", "--status", "lost").exit_code == 2


def test_show_tells_the_whole_story(app, runner, client, user):
    order = paid_order(client, user)
    no = order["out_trade_no"]
    assert run(runner, "refund", no, "--fee", "600", "--reason", "one cup broken").exit_code == 0

    result = run(runner, "show", no)
    assert result.exit_code == 0
    out = result.stdout
    assert f"out_trade_no    {no}" in out and "status          paid" in out and "refunded_fee    600" in out
    assert "2 x 拿铁咖啡 Latte @ 1800 = 3600" in out
    txn = fresh(no).transaction_id
    assert f"{txn}       3600  notify  refunded     600" in out
    assert "payment  paid" in out and "refund   refunded" in out
    assert f"{no}R1        600  success" in out
    for path in (wechat_path(app, "prepay"), "/api/pay/notify", wechat_path(app, "refund"), "/api/pay/refund-notify"):
        assert path in out

    data = json.loads(run(runner, "show", no, "--json").stdout)
    assert data["status"] == "paid" and data["refunded_fee"] == 600
    assert [p["refunded_fee"] for p in data["payments"]] == [600]
    assert [r["out_refund_no"] for r in data["refunds"]] == [f"{no}R1"]
    assert [n["kind"] for n in data["notifications"]] == ["payment", "refund"]
    assert {"request", "response"}.isdisjoint(data["exchanges"][0])  # the bodies stay in the audit table

    missing = run(runner, "show", "nosuchorder")
    assert missing.exit_code == 1 and "no order nosuchorder" in missing.stderr


def test_sync_finds_a_payment_whose_notification_was_lost(make_app):
    app = make_app(WECHAT_NOTIFY_URL="http://localhost/api/pay/lost", SANDBOX_TIME_SCALE="1000")
    with app.app_context():
        client, runner = app.test_client(), app.test_cli_runner()
        user = {"headers": bearer(login(client)["token"])}
        order = new_order(client, user)
        pay_in_sandbox(client, prepay(client, user, order))
        result = run(runner, "sync", order["out_trade_no"])
        assert result.exit_code == 0 and result.stdout.strip() == f"{order['out_trade_no']}: unpaid -> paid"
        again = json.loads(run(runner, "sync", order["out_trade_no"], "--json").stdout)
        assert again == {"out_trade_no": order["out_trade_no"], "before": "paid", "status": "paid"}
        assert run(runner, "sync", "nosuchorder").exit_code == 1


def test_close(app, runner, client, user):
    order = new_order(client, user)
    prepay(client, user, order)
    result = run(runner, "close", order["out_trade_no"], "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "closed"
    again = run(runner, "close", order["out_trade_no"])
    assert again.exit_code == 1 and "only unpaid orders can be closed" in again.stderr
    paid = paid_order(client, user)
    assert run(runner, "close", paid["out_trade_no"]).exit_code == 1
    assert fresh(paid["out_trade_no"]).status == "paid"


def test_refund_exit_codes(app, runner, client, user):
    order = paid_order(client, user)
    no = order["out_trade_no"]

    partial = run(runner, "refund", no, "--fee", "1000")
    assert partial.exit_code == 0
    assert partial.stdout.splitlines() == [f"refund {no}R1: 1000 fen of {fresh(no).transaction_id}: success",
                                           f"order {no}: paid, 1000 fen refunded"]
    too_much = run(runner, "refund", no, "--fee", "2601")
    assert too_much.exit_code == 1 and "would exceed what was paid" in too_much.stderr
    assert run(runner, "refund", no, "--fee", "0").exit_code == 2
    assert run(runner, "refund", no, "--fee", "ten").exit_code == 2
    assert run(runner, "refund", "nosuchorder").exit_code == 1
    assert run(runner, "refund", no, "--transaction", "4200000000000000000000000000").exit_code == 1
    assert run(runner, "refund", new_order(client, user)["out_trade_no"]).exit_code == 1  # nothing paid

    client.post("/sandbox/control/refund-behaviour", json={"fail_next": "NOTENOUGH"})
    refused = run(runner, "refund", no, "--fee", "100", "--json")
    assert refused.exit_code == 3 and "WeChat refused the refund" in refused.stderr
    assert json.loads(refused.stdout)["status"] == "failed"

    client.post("/sandbox/control/refund-behaviour", json={"fail_next": "SYSTEMERROR"})
    unanswered = run(runner, "refund", no, "--fee", "100")
    assert unanswered.exit_code == 3 and "run the same command again" in unanswered.stderr
    resumed = run(runner, "refund", no, "--json")  # the same command resumes the same refund
    assert resumed.exit_code == 0
    data = json.loads(resumed.stdout)
    assert data["resumed"] and data["out_refund_no"] == f"{no}R3" and data["refund_fee"] == 100
    rest = json.loads(run(runner, "refund", no, "--json").stdout)
    assert rest["refund_fee"] == 2500 and rest["order_status"] == "refunded" and rest["refunded_fee"] == 3600


def test_reconcile_prints_a_summary_and_json_lines(app, runner, client, user):
    order = new_order(client, user)
    prepay(client, user, order)
    db.session.execute(update(Order).where(Order.out_trade_no == order["out_trade_no"])
                       .values(expires_at=utcnow() - timedelta(minutes=5)))
    db.session.commit()
    result = runner.invoke(args=["orders", "reconcile"])
    assert result.exit_code == 0
    assert result.stdout.strip() == ("reconcile: 1 orders checked: 0 paid, 1 closed, 0 anomalies, 0 unchanged; "
                                     "0 refunds checked, 0 settled; 0 errors")
    watched = runner.invoke(args=["orders", "reconcile", "--watch", "--interval", "1", "--iterations", "2", "--json"])
    assert watched.exit_code == 0
    passes = [json.loads(line) for line in watched.stdout.splitlines()]
    assert len(passes) == 2 and all(p["checked"] == 0 and not p["skipped"] for p in passes)
    assert passes[0]["run_id"] != passes[1]["run_id"]


def test_reconcile_exits_3_when_wechat_fails(app, runner, client, user, monkeypatch):
    from miniapp_server.extensions import wechat
    from miniapp_server.wechat.errors import WeChatUnavailable

    order = new_order(client, user)
    prepay(client, user, order)

    def down(*_, **__):
        raise WeChatUnavailable("no answer from WeChat Pay (ConnectionError)")

    monkeypatch.setattr(wechat.gateway, "query", down)
    result = runner.invoke(args=["orders", "reconcile", "--older-than", "0", "--json"])
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    assert summary["errors"] == 1 and order["out_trade_no"] in summary["failures"][0]
    assert "failed:" in result.stderr


@pytest.mark.parametrize("name", ["db", "select", "Order", "Refund", "WeChatExchange", "find_order", "user_orders",
                                  "recent_anomalies", "exchanges", "refund_order", "reconcile", "Shipment",
                                  "ship_order", "shipments", "pending_shipments"])
def test_the_shell_opens_with_the_helpers(app, name):
    assert name in app.make_shell_context()


def test_shell_helpers_work(app, client, user):
    order = paid_order(client, user)
    ctx = app.make_shell_context()
    assert ctx["find_order"](order["out_trade_no"]).status == "paid"
    assert [o.out_trade_no for o in ctx["user_orders"](user["user"]["id"])] == [order["out_trade_no"]]
    assert [x.path for x in ctx["exchanges"](order["out_trade_no"])] == [wechat_path(app, "prepay"), "/api/pay/notify"]
    assert ctx["recent_anomalies"]() == []
    assert ctx["shipments"](order["out_trade_no"]) == []
    ctx["ship_order"](ctx["find_order"](order["out_trade_no"]), "pickup")
    (shipment,) = ctx["shipments"](order["out_trade_no"])
    assert shipment["logistics_type"] == "pickup" and shipment["upload_state"] == "uploaded"
    assert ctx["pending_shipments"]() == []


def test_every_orders_command_takes_json(app, runner):
    import click

    from miniapp_server.cli.orders import orders

    def leaves(group, prefix=""):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from leaves(command, f"{prefix}{name} ")
            else:
                yield prefix + name, command

    without = [name for name, command in leaves(orders) if not any(p.name == "as_json" for p in command.params)]
    assert without == []
