"""/metrics: what an operator watches moves as it should, across gunicorn workers too, and only for the allowed."""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from .conftest import lose_notifications, wechat_path


def scrape(client) -> dict[tuple[str, frozenset], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    return parse(resp.get_data(as_text=True))


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_sandbox_journey_moves_the_counters(app, client, user):
    before = scrape(client)
    order = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 2}]},
                        headers=user["headers"]).get_json()
    params = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=user["headers"]).get_json()
    assert client.post("/sandbox/control/pay", json=params).get_json()["notification"]["acknowledged"]
    assert client.get(f"/api/orders/{order['out_trade_no']}", headers=user["headers"]).get_json()["status"] == "paid"
    assert client.get("/api/orders/nope", headers=user["headers"]).status_code == 404
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests_total = "miniapp_http_requests_total"
    assert moved(requests_total, route="/api/orders", method="POST", status="201") == 1
    assert moved(requests_total, route="/api/orders/<out_trade_no>/pay", method="POST", status="200") == 1
    assert moved(requests_total, route="/api/orders/<out_trade_no>", method="GET", status="200") == 1
    assert moved(requests_total, route="/api/orders/<out_trade_no>", method="GET", status="404") == 1
    assert moved(requests_total, route="/api/pay/notify", method="POST", status="200" if app.config[
        "WECHAT_PAY_API"] == "v2" else "204") == 1  # the sandbox's notification, through the app
    assert moved("miniapp_http_request_duration_seconds_count", route="/api/orders", method="POST") == 1
    assert not any(order["out_trade_no"] in str(labels) for _, labels in after)  # the rule, never the raw path
    assert moved("miniapp_notifications_total", kind="payment", verdict="paid", acknowledged="true") == 1
    prepay = wechat_path(app, "prepay")
    assert moved("miniapp_wechat_calls_total", endpoint=prepay, outcome="ok") == 1
    assert moved("miniapp_wechat_call_duration_seconds_count", endpoint=prepay) == 1
    backlog = {dict(labels)["queue"]: v for (name, labels), v in after.items() if name == "miniapp_backlog"}
    assert backlog["orders_overdue"] == 0 and backlog["refunds_pending"] == 0 and backlog["shipments_pending"] == 0
    assert "messages_pending" in backlog and "shipments_failed" in backlog


def test_a_forged_notification_is_counted_as_refused(app, client):
    before = scrape(client)
    resp = client.post("/api/pay/notify", data=b"<xml><return_code>SUCCESS</return_code></xml>",
                       content_type="text/xml")
    assert resp.status_code == 200 and b"FAIL" in resp.data
    after = scrape(client)
    refused = [(labels, v - before.get((name, labels), 0)) for (name, labels), v in after.items()
               if name == "miniapp_notifications_total" and dict(labels)["acknowledged"] == "false"]
    assert sum(delta for _, delta in refused) == 1


def test_login_counts_code2session_and_reconcile_its_outcomes(app, client, user, runner):
    before = scrape(client)
    lose_notifications(app)
    order = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]},
                        headers=user["headers"]).get_json()
    params = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=user["headers"]).get_json()
    client.post("/sandbox/control/pay", json=params)  # paid at WeChat, its notification lost
    result = runner.invoke(args=["orders", "reconcile", "--older-than", "0", "--json"])
    assert result.exit_code == 0, result.output
    client.post("/api/auth/login", json={"code": "metrics-second-login"})
    after = scrape(client)
    assert value(after, "miniapp_reconcile_outcomes_total", kind="order", outcome="paid") - value(
        before, "miniapp_reconcile_outcomes_total", kind="order", outcome="paid") == 1
    assert value(after, "miniapp_wechat_calls_total", endpoint="/sns/jscode2session", outcome="ok") - value(
        before, "miniapp_wechat_calls_total", endpoint="/sns/jscode2session", outcome="ok") == 1


def test_a_database_error_is_counted(app, client, monkeypatch):
    from miniapp_server.services import orders

    def broken():
        raise OperationalError("SELECT 1", {}, Exception("the database went away"))

    monkeypatch.setattr(orders, "list_products", broken)
    before = value(scrape(client), "miniapp_errors_total", component="database")
    resp = client.get("/api/products")
    assert resp.status_code == 500 and resp.get_json()["error"]["code"] == "internal_error"
    assert value(scrape(client), "miniapp_errors_total", component="database") - before == 1


@pytest.mark.parametrize("allow, addr, status", [
    (None, "127.0.0.1", 200), (None, "::1", 200), (None, "10.0.0.5", 404),
    ("10.0.0.0/8", "10.0.0.5", 200), ("10.0.0.0/8", "127.0.0.1", 404), ("", "127.0.0.1", 404),
])
def test_metrics_answer_only_where_the_setting_allows(make_app, allow, addr, status):
    app = make_app(**({} if allow is None else {"METRICS_ALLOW": allow}))
    resp = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": addr})
    assert resp.status_code == status
    if status == 404:
        assert b"miniapp_" not in resp.data and resp.get_json()["error"]["code"] == "not_found"


def test_counters_add_up_across_two_gunicorn_workers(gunicorn):
    # Sync workers that each serve one request: every request below is answered by another process.
    server = gunicorn("--workers", "2", "--threads", "1", "--worker-class", "sync", "--max-requests", "1",
                      "--access-logformat", '%(p)s "%(r)s" %(s)s')
    http = requests.Session()
    http.headers["Connection"] = "close"
    for _ in range(4):
        assert http.get(server.url + "/api/products", timeout=10).status_code == 200
    deadline = time.monotonic() + 20
    while True:
        samples = parse(http.get(server.url + "/metrics", timeout=10).text)
        count = value(samples, "miniapp_http_requests_total", route="/api/products", method="GET", status="200")
        if count == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # a worker's file is written as it answers; give the last one a moment
    pids = {line.split(" ", 1)[0] for line in server.log().splitlines() if '"GET /api/products ' in line}
    assert len(pids) >= 2, server.log()  # really served by several processes
    assert count == 4  # and yet counted once each, in one scrape


def test_the_dashboard_and_alerts_use_metrics_that_exist():
    """deploy/monitoring/ loads as it is: valid YAML and JSON, every query on a metric the app exports."""
    import json
    import re

    import yaml
    from prometheus_client import REGISTRY

    from miniapp_server import metrics  # noqa: F401 - registers them

    from .conftest import ROOT

    exported = {name for family in REGISTRY.collect() for name in
                [family.name, *(s.name for s in family.samples)]} | {"miniapp_backlog"}
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        exported |= {name + suffix for name in list(exported)}
    rules = yaml.safe_load((ROOT / "deploy" / "monitoring" / "alerts.yml").read_text())["groups"][0]["rules"]
    dashboard = json.loads((ROOT / "deploy" / "monitoring" / "grafana-dashboard.json").read_text())
    queries = [r["expr"] for r in rules] + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(rules) >= 5 and {"MiniappNotificationsRefused", "MiniappWeChatErrors", "MiniappBacklogGrowing"} <= {
        r["alert"] for r in rules}
    for query in queries:
        used = set(re.findall(r"\bminiapp_[a-z_]+", query))
        assert used and used <= exported, f"{query}: {used - exported}"
