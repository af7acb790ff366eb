"""The audit trail and the logs: every exchange with WeChat recorded with its outcome and timing, no secret in
any recorded exchange or log line, one request id from /pay to the notification, audit rows that never join
or break the caller's transaction."""

from __future__ import annotations

import json
import logging

from sqlalchemy import func, select, text, update

from miniapp_server import audit
from miniapp_server.extensions import db, wechat
from miniapp_server.models import Product, WeChatExchange
from miniapp_server.services import refunds
from miniapp_server.sqlite_tuning import begin_write
from miniapp_server.wechat.pay import signing, xmlcodec

from .conftest import login, wechat_path
from .ops_helpers import fresh, new_order, pay_in_sandbox, prepay


def exchanges(**filters) -> list[WeChatExchange]:
    db.session.rollback()
    return list(db.session.execute(db.select(WeChatExchange).filter_by(**filters).order_by(WeChatExchange.id)).scalars())


def count_from_another_connection() -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(WeChatExchange.__table__)).scalar_one()


def test_every_exchange_is_recorded_with_its_outcome_and_timing(app, client, user):
    from miniapp_server.wechat.errors import PayError

    order = new_order(client, user)
    no = order["out_trade_no"]
    pay_in_sandbox(client, prepay(client, user, order))
    refunds.refund_order(fresh(no), fee=100)
    try:
        wechat.pay.order_query(out_trade_no="nosuchorder")
    except PayError:
        pass
    assert client.post("/api/auth/login", json={"code": "bad-code"}).status_code == 400
    client.post("/api/pay/notify", data=b"<xml><return_code>SUCCESS</return_code></xml>", content_type="text/xml")

    rows = exchanges()
    seen = [(x.direction, x.path, x.outcome) for x in rows]
    prepay_path, refund_path = wechat_path(app, "prepay"), wechat_path(app, "refund")
    assert ("out", "/sns/jscode2session", "ok") in seen
    assert ("out", "/sns/jscode2session", "InvalidCode:40029") in seen
    assert ("out", prepay_path, "ok") in seen
    assert ("in", "/api/pay/notify", "SUCCESS:paid") in seen
    assert ("out", refund_path, "ok") in seen
    assert ("in", "/api/pay/refund-notify", "SUCCESS:refunded") in seen
    assert ("out", "/pay/orderquery", "PayError:ORDERNOTEXIST") in seen
    assert ("in", "/api/pay/notify", "FAIL:signature does not verify") in seen
    assert {x.out_trade_no for x in rows if x.path in (prepay_path, "/api/pay/notify", refund_path,
                                                       "/api/pay/refund-notify") and x.outcome[0] in "oS"} == {no}
    assert all(x.duration_ms >= 0 and x.at is not None for x in rows)
    notified = next(x for x in rows if x.path == "/api/pay/refund-notify")
    assert json.loads(notified.request)["refund_status"] == "SUCCESS"  # the decrypted fields, not req_info
    assert json.loads(notified.response) == {"return_code": "SUCCESS", "return_msg": "refunded"}


def test_no_secret_in_any_recorded_exchange_or_log_line(app, client, caplog, monkeypatch):
    from miniapp_server.auth import sessions

    caplog.set_level(logging.DEBUG)
    signatures: list[str] = []
    real_sign = signing.sign

    def spy(params, key, sign_type="MD5"):
        signatures.append(real_sign(params, key, sign_type))
        return signatures[-1]

    monkeypatch.setattr(signing, "sign", spy)
    from miniapp_server.wechat.pay.v3 import signing as v3signing
    real_rsa = v3signing.sign

    def rsa_spy(message, private_key):  # v3: requests, answers, notifications, paySign
        signatures.append(real_rsa(message, private_key))
        return signatures[-1]

    monkeypatch.setattr(v3signing, "sign", rsa_spy)
    data = login(client)
    user = {"headers": {"Authorization": f"Bearer {data['token']}"}}
    order = new_order(client, user)
    params = prepay(client, user, order)
    pay_in_sandbox(client, params)
    refunds.refund_order(fresh(order["out_trade_no"]), fee=200)
    token = wechat.access_token.get()
    try:
        wechat.miniapp.get_phone_number(token, "phone-code")
    except Exception:  # noqa: BLE001 - whatever the sandbox answers, the exchange is recorded
        pass

    secrets = {
        "api key": app.config["WECHAT_PAY_KEY"], "app secret": app.config["WECHAT_APPSECRET"],
        "flask secret": app.config["SECRET_KEY"], "paySign": params["paySign"], "access_token": token,
        "session_key": sessions.lookup(data["token"]).session_key, "login token": data["token"],
    }
    secrets.update({f"sign {i}": s for i, s in enumerate(signatures)})
    if app.config["WECHAT_PAY_API"] == "v3":
        secrets["apiv3 key"] = app.config["WECHAT_PAY_V3_KEY"]
        pem = wechat.state.pay_v3.creds.private_key.export_key().decode().splitlines()
        secrets["private key"] = pem[len(pem) // 2]
    assert len(signatures) >= 6  # requests, answers, the notification, the second signature for the phone
    rows = exchanges()
    assert {"/sns/jscode2session", wechat_path(app, "prepay"), wechat_path(app, "refund"), "/cgi-bin/stable_token"} \
        <= {x.path for x in rows}
    recorded = "\n".join(f"{x.request}\n{x.response}" for x in rows)
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for name, value in secrets.items():
        assert value and value not in recorded, f"{name} in the audit trail"
        assert value not in logged, f"{name} in a log line"
    assert '"secret": "[redacted]"' in recorded
    assert app.config["WECHAT_PAY_API"] == "v3" or '"sign": "[redacted]"' in recorded  # v3 signs in headers
    assert '"session_key": "[redacted]"' in recorded and '"access_token": "[redacted]"' in recorded


def test_one_request_id_follows_a_payment_from_pay_to_its_notification(app, client, user, caplog):
    caplog.set_level(logging.INFO)
    order = new_order(client, user)
    no = order["out_trade_no"]
    resp = client.post(f"/api/orders/{no}/pay", headers={**user["headers"], "X-Request-Id": "pay-4f2a"})
    assert resp.status_code == 200
    assert resp.headers["X-Request-Id"] == "pay-4f2a"  # the nested call to the sandbox did not overwrite it
    assert fresh(no).pay_request_id == "pay-4f2a"
    pay_in_sandbox(client, resp.get_json())  # another request, with an id of its own

    (unified,) = exchanges(path=wechat_path(app, "prepay"))
    assert unified.request_id == "pay-4f2a" and json.loads(unified.request)["attach"] == "rid=pay-4f2a"
    (notified,) = exchanges(path="/api/pay/notify")
    assert notified.request_id == "pay-4f2a" and json.loads(notified.request)["attach"] == "rid=pay-4f2a"
    assert any("pay request pay-4f2a" in r.getMessage() for r in caplog.records
               if r.name == "miniapp_server.services.payments")  # its one line of the outcome
    # paying again reuses the prepay; a renewal would send the same attach, keeping the unified order identical
    client.post(f"/api/orders/{no}/pay", headers={**user["headers"], "X-Request-Id": "later-1"})
    assert fresh(no).pay_request_id == "pay-4f2a"


def test_json_logs_carry_the_request_id_and_no_secret(make_app, capsys):
    app = make_app(LOG_FORMAT="json")
    with app.app_context():
        client = app.test_client()
        data = login(client)
        user = {"headers": {"Authorization": f"Bearer {data['token']}"}}
        order = new_order(client, user)
        capsys.readouterr()
        client.post(f"/api/orders/{order['out_trade_no']}/pay", headers={**user["headers"], "X-Request-Id": "json-1"})
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert any(e["request_id"] == "json-1" and wechat_path(app, "prepay") in e["message"] for e in lines)
    assert all({"time", "level", "logger", "request_id", "message"} <= set(e) for e in lines)
    assert not any(app.config["WECHAT_PAY_KEY"] in json.dumps(e) for e in lines)


def test_an_audit_row_waits_for_the_callers_transaction_and_survives_its_rollback(app):
    before = count_from_another_connection()
    begin_write(db.session)  # the caller holds a write transaction (on SQLite: the database's write lock)
    db.session.execute(update(Product).where(Product.id == 1).values(name="renamed"))
    audit.record("out", "/pay/orderquery", {"out_trade_no": "x", "sign": "S"}, {"return_code": "SUCCESS"}, "ok", 0.01)
    assert count_from_another_connection() == before  # not written beside the open transaction
    db.session.rollback()  # the caller gives up: its change goes, the exchange still happened
    assert count_from_another_connection() == before + 1
    assert db.session.get(Product, 1).name != "renamed"
    (row,) = exchanges(path="/pay/orderquery")
    assert row.out_trade_no is None and json.loads(row.request) == {"out_trade_no": "x", "sign": "[redacted]"}
    assert row.duration_ms == 10


def test_an_audit_row_is_written_at_once_when_the_caller_holds_no_transaction(app):
    db.session.commit()
    before = count_from_another_connection()
    audit.record("in", "/api/pay/notify", {"out_trade_no": "abc"}, None, "SUCCESS:paid", 0.0)
    assert count_from_another_connection() == before + 1


def test_audit_rows_join_the_callers_commit_beside_its_change(app, tmp_path):
    """The rows ride along with the caller's commit, with its change. On PostgreSQL inside their own
    savepoint, sent to psycopg directly: the savepoint, each row, the release and the COMMIT, five answers
    from the server in libpq's own protocol trace (ReadyForQuery ends each wait for it), and nothing else."""
    begin_write(db.session)
    db.session.execute(update(Product).where(Product.id == 1).values(name="renamed"))
    for n in range(2):
        audit.record("out", f"/pay/orderquery/{n}", {"out_trade_no": f"n{n}"}, {"return_code": "SUCCESS"}, "ok", 0.01)
    on_postgres = db.engine.dialect.name != "sqlite"
    if on_postgres:
        pgconn = db.session.connection().connection.driver_connection.pgconn
        trace = open(tmp_path / "libpq.trace", "w")  # noqa: SIM115 - closed below, after the untrace
        pgconn.trace(trace.fileno())
    db.session.commit()
    if on_postgres:
        pgconn.untrace()
        trace.close()
        messages = [line.split("\t")[1] + " " + line.split("\t")[3].split(" ")[0]
                    for line in (tmp_path / "libpq.trace").read_text().splitlines()]
        assert messages.count("B ReadyForQuery") == 5, messages
        assert [m for m in messages if m.startswith("B CommandComplete")] == ["B CommandComplete"] * 5
    db.session.remove()
    assert sorted(x.path for x in exchanges() if x.path.startswith("/pay/orderquery/")) == \
        ["/pay/orderquery/0", "/pay/orderquery/1"]
    assert db.session.get(Product, 1).name == "renamed"
    at = exchanges(path="/pay/orderquery/0")[0].at
    assert at.tzinfo is not None and abs((audit.utcnow() - at).total_seconds()) < 60  # UTC, as every other row


def test_a_broken_audit_never_breaks_a_payment(app, client, user, caplog):
    order = new_order(client, user)
    db.session.execute(text("DROP TABLE wechat_exchanges"))
    db.session.commit()
    params = prepay(client, user, order)
    assert pay_in_sandbox(client, params)["notification"]["acknowledged"]
    assert fresh(order["out_trade_no"]).status == "paid"
    assert any("audit rows not written" in r.getMessage() for r in caplog.records)


def test_redact():
    fields = {"sign": "A", "paySign": "B", "SESSION_KEY": "C", "appsecret": "D", "js_code": "E", "nonce_str": "n",
              "sign_type": "MD5", "out_trade_no": "o", "nested": {"access_token": "F", "list": [{"api_key": "G"}]},
              "req_info": "x" * 40, "phone_info": {"phoneNumber": "13800000000", "countryCode": "86"}}
    out = audit.redact(fields)
    flat = json.dumps(out)
    for secret in ("\"A\"", "\"B\"", "\"C\"", "\"D\"", "\"E\"", "\"F\"", "\"G\"", "13800000000", "x" * 40):
        assert secret not in flat
    assert out["nonce_str"] == "n" and out["sign_type"] == "MD5" and out["out_trade_no"] == "o"
    assert out["phone_info"]["countryCode"] == "86" and out["req_info"] == "[encrypted, 40 chars]"
    assert audit.request_id_from_attach("rid=abc-1") == "abc-1"
    assert audit.request_id_from_attach("rid=<script>") is None and audit.request_id_from_attach("other") is None


def test_a_refused_notification_is_recorded_with_what_it_claimed(app, client, user):
    """The audit row of a forgery keeps its claims (for an operator), its signature redacted; junk keeps its size."""
    order = new_order(client, user)
    forged = {"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": app.config["WECHAT_APPID"],
              "mch_id": app.config["WECHAT_MCH_ID"], "nonce_str": "n", "out_trade_no": order["out_trade_no"],
              "transaction_id": "4200000000000000000000000001", "total_fee": str(order["total_fee"]),
              "sign": "0123456789ABCDEF0123456789ABCDEF"}
    client.post("/api/pay/notify", data=xmlcodec.dumps(forged), content_type="text/xml")
    client.post("/api/pay/notify", data=b"not xml at all", content_type="text/xml")
    rows = [x for x in exchanges() if x.path == "/api/pay/notify"]
    assert [x.outcome for x in rows] == ["FAIL:signature does not verify", "FAIL:not well-formed XML (ExpatError)"]
    claimed = json.loads(rows[0].request)
    assert claimed["out_trade_no"] == order["out_trade_no"] and claimed["transaction_id"].startswith("42")
    assert "0123456789ABCDEF0123456789ABCDEF" not in rows[0].request
    assert json.loads(rows[1].request) == {"unreadable_body_bytes": 14}
    assert fresh(order["out_trade_no"]).status == "unpaid"
