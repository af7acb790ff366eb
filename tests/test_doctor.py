"""`flask wechat doctor` against the sandbox standing in for WeChat, with broken settings: each finding caught,
with its advice, never with a secret; the expiry warnings in the log at start and once a day."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from Crypto.PublicKey import RSA

from miniapp_server.config import SANDBOX_APPID, SANDBOX_APPSECRET, SANDBOX_MCH_ID, SANDBOX_PAY_KEY, SANDBOX_PAY_V3_KEY
from miniapp_server.models import utcnow
from miniapp_server.sandbox.transport import WSGIAdapter
from miniapp_server.sandbox.v3_keys import ensure_keys, self_signed_certificate
from miniapp_server.services import doctor

WECHAT = "http://wechat.test/sandbox"


@pytest.fixture
def shop(make_app, tmp_path):
    """`shop(**settings)`: an app configured as in production, whose WeChat is a sandbox app of its own (with the
    right credentials), reached in-process; broken settings show how the doctor catches them."""
    wechat_app = make_app()
    keys = ensure_keys(wechat_app.config["SANDBOX_V3_KEY_DIR"], SANDBOX_MCH_ID)
    good = {"WECHAT_SANDBOX": "0", "WECHAT_APPID": SANDBOX_APPID, "WECHAT_APPSECRET": SANDBOX_APPSECRET,
            "WECHAT_MCH_ID": SANDBOX_MCH_ID, "WECHAT_PAY_KEY": SANDBOX_PAY_KEY, "WECHAT_PAY_V3_KEY": SANDBOX_PAY_V3_KEY,
            "WECHAT_API_BASE": WECHAT, "WECHAT_PAY_BASE": WECHAT,
            "WECHAT_MCH_PRIVATE_KEY_PATH": str(keys.merchant_key_path), "WECHAT_MCH_CERT_SERIAL": keys.merchant_serial,
            "WECHAT_PAY_PUBLIC_KEY_PATH": str(keys.public_key_path), "WECHAT_PAY_PUBLIC_KEY_ID": keys.public_key_id,
            "WECHAT_NOTIFY_URL": "https://shop.example.com/api/pay/notify"}

    def build(**settings):
        app = make_app(**{**good, **settings})
        app.extensions["wechat"].pay.http.mount("http://wechat.test/", WSGIAdapter(wechat_app))
        return app

    build.keys = keys
    build.wechat_app = wechat_app
    return build


def run(app) -> tuple[int, dict[str, dict], str]:
    result = app.test_cli_runner().invoke(args=["wechat", "doctor", "--json"])
    findings = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    return result.exit_code, findings, result.output


def test_a_healthy_configuration(shop):
    app = shop()
    code, findings, _ = run(app)
    assert code == 0, findings
    for check in ("appid_secret", "pay_v2_key", "notify_url", "refund_notify_url", "push_url", "trade_management"):
        assert findings[check]["level"] == "ok", findings[check]
    if app.config["WECHAT_PAY_API"] == "v3":
        assert findings["pay_v3_merchant_key"]["level"] == findings["pay_v3_wechat_key"]["level"] == "ok"
    text = app.test_cli_runner().invoke(args=["wechat", "doctor"])
    assert text.exit_code == 0 and "[ok  ] appid_secret" in text.output


def test_a_wrong_appsecret(shop):
    code, findings, output = run(shop(WECHAT_APPSECRET="not-the-secret-of-this-app-0000"))
    assert code == 1
    f = findings["appid_secret"]
    assert f["level"] == "error" and "40125" in f["message"] and "WECHAT_APPSECRET" in f["advice"]
    assert "not-the-secret-of-this-app-0000" not in output


def test_a_wrong_v2_key(shop):
    code, findings, output = run(shop(WECHAT_PAY_KEY="w" * 32))
    assert code == 1
    f = findings["pay_v2_key"]
    assert f["level"] == "error" and "WECHAT_PAY_KEY" in f["advice"]
    assert "w" * 32 not in output


@pytest.mark.pay_api("v3")
def test_a_v3_shop_without_its_v2_key_is_warned(shop):
    code, findings, _ = run(shop(WECHAT_PAY_KEY=""))
    assert code == 0
    f = findings["pay_v2_key"]
    assert f["level"] == "warning" and "merchant platform" in f["message"] and "WECHAT_PAY_KEY" in f["advice"]


@pytest.mark.pay_api("v3")
def test_a_wrong_merchant_serial(shop):
    code, findings, _ = run(shop(WECHAT_MCH_CERT_SERIAL="1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"))
    assert code == 1
    f = findings["pay_v3_merchant_key"]
    assert f["level"] == "error" and "WECHAT_MCH_CERT_SERIAL" in f["advice"]
    assert findings["pay_v3_wechat_key"]["level"] == "ok"  # WeChat's own signature still verifies


@pytest.mark.pay_api("v3")
def test_a_wrong_merchant_private_key(shop, tmp_path):
    other = tmp_path / "other_key.pem"
    other.write_bytes(RSA.generate(2048).export_key("PEM", pkcs=8))  # the app refuses smaller merchant keys
    code, findings, _ = run(shop(WECHAT_MCH_PRIVATE_KEY_PATH=str(other)))
    assert code == 1
    assert findings["pay_v3_merchant_key"]["level"] == "error"
    assert "WECHAT_MCH_PRIVATE_KEY_PATH" in findings["pay_v3_merchant_key"]["advice"]


@pytest.mark.pay_api("v3")
def test_a_wrong_wechat_public_key(shop, tmp_path):
    other = tmp_path / "other_pub.pem"
    other.write_bytes(RSA.generate(1024).public_key().export_key("PEM"))
    code, findings, _ = run(shop(WECHAT_PAY_PUBLIC_KEY_PATH=str(other)))
    assert code == 1
    f = findings["pay_v3_wechat_key"]
    assert f["level"] == "error" and "does not verify" in f["message"] and "WECHAT_PAY_PUBLIC_KEY_PATH" in f["advice"]


@pytest.mark.pay_api("v3")
def test_a_merchant_moved_to_public_key_mode_unnoticed(shop):
    app = shop(WECHAT_PAY_PUBLIC_KEY_PATH="", WECHAT_PAY_PUBLIC_KEY_ID="", WECHAT_PAY_PLATFORM_CERTS="1")
    code, findings, _ = run(app)  # the sandbox signs with its public key (as WeChat does after the move)
    assert code == 1
    f = findings["pay_v3_wechat_key"]
    assert f["level"] == "error" and "public-key mode" in f["message"]
    assert shop.keys.public_key_id in f["advice"]
    assert findings["platform_certificates"]["level"] == "ok"
    assert findings["platform_certificate"]["level"] == "ok"  # the sandbox's certificate lives long


def _certificate(tmp_path, days: float, serial: int = 0x5A17) -> str:
    now = utcnow()
    pem = self_signed_certificate(RSA.generate(1024), serial, "1900000109", now - timedelta(days=365),
                                  now + timedelta(days=days))
    path = tmp_path / f"apiclient_cert_{int(days)}.pem"
    path.write_text(pem)
    return str(path)


@pytest.mark.pay_api("v3")
def test_a_merchant_certificate_that_is_not_the_serials(shop, tmp_path):
    code, findings, _ = run(shop(WECHAT_CERT_PATH=_certificate(tmp_path, 300)))
    assert code == 1
    f = findings["merchant_cert_serial"]
    assert f["level"] == "error" and "5A17" in f["message"]


def test_an_expired_merchant_certificate(shop, tmp_path):
    code, findings, _ = run(shop(WECHAT_CERT_PATH=_certificate(tmp_path, -2)))
    assert code == 1
    f = findings["merchant_certificate"]
    assert f["level"] == "error" and "expired" in f["message"] and "5A17" in f["message"]


def test_a_certificate_expiring_soon_warns_in_the_doctor_and_the_log_at_start(shop, tmp_path, caplog):
    path = _certificate(tmp_path, 10, serial=int(shop.keys.merchant_serial, 16))  # the v3 key's own certificate
    with caplog.at_level(logging.WARNING, logger="miniapp_server.services.doctor"):
        app = shop(WECHAT_CERT_PATH=path)
    logged = [r.getMessage() for r in caplog.records if r.name == "miniapp_server.services.doctor"]
    assert any(m.startswith("merchant_certificate:") and "expires on" in m for m in logged), logged
    code, findings, _ = run(app)
    assert code == 0  # a warning is not an error
    assert findings["merchant_certificate"]["level"] == "warning"


def test_the_expiry_warnings_are_logged_once_a_day_across_instances(shop, tmp_path, caplog):
    app = shop(WECHAT_CERT_PATH=_certificate(tmp_path, 5))
    caplog.clear()  # the app logged it at start already
    with app.app_context(), caplog.at_level(logging.WARNING, logger="miniapp_server.services.doctor"):
        now = utcnow()
        assert doctor.daily_expiry_warnings(now) is True
        assert doctor.daily_expiry_warnings(now) is False  # another instance, the same day
        assert doctor.daily_expiry_warnings(now + timedelta(days=1)) is True
    assert sum("merchant_certificate" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("url, says", [
    ("http://shop.example.com/api/pay/notify", "not https"),
    ("https://shop.example.com/notify", "not /api/pay/notify"),
    ("https://shop.example.com/api/pay/notify?shop=1", "query string"),
    ("https://localhost/api/pay/notify", "cannot reach"),
])
def test_notify_urls_that_wechat_cannot_use(shop, url, says):
    code, findings, _ = run(shop(WECHAT_NOTIFY_URL=url))
    assert code == 1
    assert findings["notify_url"]["level"] == "error" and says in findings["notify_url"]["message"]
    if says == "not https":
        assert findings["push_url"]["level"] == "error"  # the push URL shares the shop's origin


def test_a_wrong_refund_notify_url(shop):
    code, findings, _ = run(shop(WECHAT_REFUND_NOTIFY_URL="https://shop.example.com/api/pay/notify"))
    assert code == 1 and findings["refund_notify_url"]["level"] == "error"


def test_wechat_unreachable_is_exit_3(shop):
    app = shop(WECHAT_API_BASE="http://127.0.0.1:9/sandbox", WECHAT_PAY_BASE="http://127.0.0.1:9/sandbox")
    code, findings, _ = run(app)
    assert code == 3
    assert findings["appid_secret"]["unreachable"] and findings["trade_management"]["unreachable"]
