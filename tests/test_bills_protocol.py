"""The bill calls on the wire: v2's XML errors, v3's hash and download URL, and `Wechatpay-Serial` on v3 requests."""

from __future__ import annotations

import pytest

from miniapp_server.extensions import wechat
from miniapp_server.sandbox.bills import BillDesk
from miniapp_server.services.bills import check_bill
from miniapp_server.wechat.errors import PayError, SignatureError
from miniapp_server.wechat.pay import bills
from miniapp_server.wechat.pay.client import PayClient
from miniapp_server.wechat.times import china_now

from .ops_helpers import paid_order


@pytest.mark.pay_api("v2")
def test_v2_bill_plain_and_gzip_and_no_bill(app, client, user):
    order = paid_order(client, user)
    pay = wechat.pay
    day = china_now().strftime("%Y%m%d")
    for tar in ("GZIP", None):
        with pay.download_bill(day, "ALL", tar_type=tar) as file:
            rows = list(bills.BillReader(file.lines()))
        assert [r["商户订单号"] for r in rows] == [order["out_trade_no"]]
    assert pay.download_bill("20200101") is None  # No Bill Exist (20002)
    with pay.download_bill(day, "SUCCESS") as file:
        assert "微信退款单号" not in next(iter(bills.BillReader(file.lines())))


@pytest.mark.pay_api("v2")
def test_v2_fund_flow_is_signed_hmac_sha256_whatever_the_setting(app, client, user):
    paid_order(client, user)
    assert app.config["WECHAT_SIGN_TYPE"] == "MD5"
    with wechat.pay.download_fund_flow(china_now().strftime("%Y%m%d")) as file:
        reader = bills.BillReader(file.lines())
        assert [bills.fund_line(r).business_type for r in reader] == ["交易", "扣除交易手续费"]


@pytest.mark.pay_api("v2")
def test_v2_bill_with_a_wrong_key_is_a_signature_error(app):
    pay = wechat.pay
    wrong = PayClient(pay.creds.__class__(pay.creds.appid, pay.creds.mch_id, "w" * 32), pay.base, pay.http)
    with pytest.raises(PayError) as caught:
        wrong.download_bill(china_now().strftime("%Y%m%d"))
    assert caught.value.code == "SIGNERROR"


@pytest.mark.pay_api("v3")
def test_v3_bill_whose_file_does_not_match_its_hash_is_refused(app, client, user, monkeypatch):
    paid_order(client, user)
    real = BillDesk.v3_file
    monkeypatch.setattr(BillDesk, "v3_file", lambda self, token: (real(self, token) or b"") + b"\n")
    check = check_bill(china_now().date())
    assert check.status == "failed" and "SHA-1" in check.error
    monkeypatch.undo()
    assert check_bill(china_now().date()).status == "clean"


@pytest.mark.pay_api("v3")
def test_v3_download_url_must_be_wechats_own(app):
    v3 = wechat.state.pay_v3
    assert v3._download_target("https://api.mch.weixin.qq.com/v3/billdownload/file?token=a") == \
        "/v3/billdownload/file?token=a"
    for url in ("https://evil.example/v3/billdownload/file?token=a", "https://api.mch.weixin.qq.com.evil/v3/x",
                "https://api.mch.weixin.qq.com/v3/pay/transactions/id/1", ""):
        with pytest.raises(SignatureError):
            v3._download_target(url)


@pytest.mark.pay_api("v3")
def test_every_v3_request_carries_wechatpay_serial(app, client, user, monkeypatch):
    v3 = wechat.state.pay_v3
    sent = []
    original = v3.http.request

    def spy(method, url, **kwargs):
        sent.append((url, (kwargs.get("headers") or {}).get("Wechatpay-Serial")))
        return original(method, url, **kwargs)

    monkeypatch.setattr(v3.http, "request", spy)
    paid_order(client, user)
    check_bill(china_now().date())
    assert sent and {serial for _, serial in sent} == {app.config["WECHAT_PAY_PUBLIC_KEY_ID"] or
                                                       v3.keys.public_key_id}
    assert any("/v3/billdownload/file" in url for url, _ in sent)
