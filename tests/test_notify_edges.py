"""What peers' users trip over: WeChat's signature probes (refused quickly, recorded as probes, not forgeries),
and refunds made in the merchant platform, whose v2 XML notifications reach a shop running on v3."""

from __future__ import annotations

import base64
import json

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import PaymentNotification
from miniapp_server.sandbox.refunds import RefundDesk
from miniapp_server.wechat.pay import xmlcodec
from miniapp_server.wechat.pay.v3 import signing

from .ops_helpers import fresh, paid_order

PROBE = "WECHATPAY/SIGNTEST_" + base64.b64encode(b"x" * 256).decode()


def verdicts() -> list[str]:
    db.session.rollback()
    return list(db.session.execute(db.select(PaymentNotification.verdict).order_by(PaymentNotification.id)).scalars())


@pytest.mark.parametrize("api", ["v2", "v3"])
@pytest.mark.parametrize("path", ["/api/pay/notify", "/api/pay/refund-notify"])
def test_a_signature_probe_is_refused_as_wechat_expects_and_recorded_as_a_probe(make_app, api, path, caplog):
    app = make_app(WECHAT_PAY_API=api)
    client = app.test_client()
    body = json.dumps({"id": "probe", "event_type": "TRANSACTION.SUCCESS", "resource": {}}).encode()
    headers = {"Wechatpay-Signature": PROBE, "Wechatpay-Serial": "PUB_KEY_ID_0114232134912410000000000000",
               "Wechatpay-Nonce": "n", "Wechatpay-Timestamp": "1700000000", "Content-Type": "application/json"}
    with app.app_context():
        resp = client.post(path, data=body, headers=headers)
        assert resp.status_code == 401 and resp.get_json()["code"] == "FAIL"
        assert verdicts() == ["signature_probe"]
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "rejected" in r.getMessage()]


@pytest.mark.pay_api("v3")
def test_a_v3_probe_needs_no_key_lookup(app, monkeypatch):
    v3 = app.extensions["wechat"].pay_v3
    monkeypatch.setattr(v3.keys, "key_for", lambda serial: pytest.fail("a probe must not look up a key"))
    with pytest.raises(Exception) as caught:
        v3.parse_notification({"Wechatpay-Signature": PROBE}, b"{}")
    assert caught.value.code == "signature_probe"
    assert signing.is_probe({"wechatpay-signature": PROBE}) and not signing.is_probe({"Wechatpay-Signature": "AAAA"})


def _console_refund(app, no: str, out_refund_no: str, fee: int) -> bytes:
    """The v2 XML refund notification WeChat sends for a refund made by hand in the merchant platform."""
    emu = app.extensions["sandbox"]
    order = emu.load_order(no)
    refund = {"out_refund_no": out_refund_no, "refund_fee": fee, "refund_id": "50300000012026120100000000001",
              "status": "SUCCESS", "success_time": "2026-12-01 12:00:00"}
    return RefundDesk(emu).notification_for(order, refund)


@pytest.mark.pay_api("v3")
def test_a_refund_made_in_the_merchant_platform_is_settled_on_v3_when_a_v2_key_is_set(app, client, user):
    assert app.config["WECHAT_PAY_KEY"]  # the sandbox's v2 key, as a merchant keeps its API key beside APIv3
    order = paid_order(client, user)
    body = _console_refund(app, order["out_trade_no"], "CONSOLE20261201001", 500)
    for _ in range(2):  # WeChat sends it again until acknowledged: recorded once
        resp = client.post("/api/pay/refund-notify", data=body, content_type="text/xml")
        assert resp.status_code == 200 and xmlcodec.loads(resp.data)["return_code"] == "SUCCESS"
    stored = fresh(order["out_trade_no"])
    assert stored.refunded_fee == 500 and stored.status == "paid"  # partly refunded
    assert [(r.out_refund_no, r.refund_fee, r.status) for r in stored.refunds] == [("CONSOLE20261201001", 500,
                                                                                    "success")]
    assert verdicts()[-2:] == ["refunded_elsewhere", "duplicate"]


@pytest.mark.pay_api("v3")
def test_a_refund_made_elsewhere_that_does_not_fit_stays_unknown(app, client, user):
    order = paid_order(client, user)
    body = _console_refund(app, order["out_trade_no"], "CONSOLE20261201002", order["total_fee"] + 1)
    resp = client.post("/api/pay/refund-notify", data=body, content_type="text/xml")
    assert xmlcodec.loads(resp.data)["return_code"] == "FAIL"
    assert fresh(order["out_trade_no"]).refunds == [] and verdicts()[-1] == "unknown_refund"
