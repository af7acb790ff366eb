"""The doctor: every configured credential tried against WeChat with a harmless call, certificates' and keys'
expiry, the callback URLs, trade management; each finding with what to do about it.

The calls change nothing at WeChat: a `stable_token` in normal mode (the current token stays valid), an order
query of a trade that does not exist (ORDERNOTEXIST proves the v2 key right; a signature error proves it wrong),
the same as a signed v3 GET (a verified ORDER_NOT_EXIST proves the merchant's key and serial and WeChat's key),
the platform certificates' download, and `is_trade_managed`.

The expiry warnings (`expiry_findings`) need no call to WeChat: the app logs them at start and reconcile once
a day (`log_expiry_warnings`).
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable
from urllib.parse import urlsplit

from flask import Flask, current_app

from ..extensions import store, wechat
from ..models import utcnow
from ..wechat.certs import CertificateError, certificate_info, read_certificate
from ..wechat.errors import PayError, SignatureError, WeChatError, WeChatUnavailable
from ..wechat.pay.gateway import V2
from ..wechat.pay.v3 import signing as v3signing
from ..wechat.times import CHINA

log = logging.getLogger(__name__)

OK, WARNING, ERROR, SKIPPED = "ok", "warning", "error", "skipped"
EXPIRY_WARNING = timedelta(days=30)

NOTIFY_PATH, REFUND_NOTIFY_PATH, PUSH_PATH = "/api/pay/notify", "/api/pay/refund-notify", "/api/wechat/events"


@dataclass
class Finding:
    check: str
    level: str  # ok | warning | error | skipped
    message: str
    advice: str = ""
    unreachable: bool = False  # WeChat could not be asked (not a finding about our settings)

    def to_dict(self) -> dict:
        return asdict(self)


def _unreachable(check: str, err: WeChatError) -> Finding:
    return Finding(check, ERROR, f"WeChat could not be asked: {err}",
                   "Check the network to WeChat (and WECHAT_API_BASE / WECHAT_PAY_BASE), then run the doctor again.",
                   unreachable=True)


def _probe_no() -> str:
    return "DOCTOR" + secrets.token_hex(13)  # 32 characters; no shop makes order numbers like it


# -- the mini-program's appid and secret -----------------------------------------------------------

def check_appid_secret() -> Finding:
    try:
        wechat.miniapp.fetch_access_token(endpoint="stable_token")
    except WeChatUnavailable as err:
        return _unreachable("appid_secret", err)
    except WeChatError as err:
        advice = {
            40013: "WECHAT_APPID is not a valid appid: copy it from the mini-program's console (开发管理 > 开发设置).",
            40125: "WECHAT_APPSECRET is wrong: reset it in the mini-program's console (开发设置 > AppSecret) and "
                   "set the new one.",
            40164: "This server's IP is not in the mini-program's IP whitelist (开发设置 > IP白名单): add it.",
            40002: "WeChat refused the grant type: report this (the app sends client_credential).",
        }.get(err.code if isinstance(err.code, int) else -2,
              "WeChat refused the appid and secret; check WECHAT_APPID and WECHAT_APPSECRET.")
        return Finding("appid_secret", ERROR, f"stable_token refused: {err}", advice)
    return Finding("appid_secret", OK, "WECHAT_APPID and WECHAT_APPSECRET give an access token (stable_token)")


# -- WeChat Pay v2 ---------------------------------------------------------------------------------

def check_v2_key() -> Finding:
    if not current_app.config.get("WECHAT_PAY_KEY"):
        if current_app.config.get("WECHAT_PAY_API") == "v3":
            return Finding("pay_v2_key", WARNING, "no WECHAT_PAY_KEY: refunds made in the merchant platform cannot be "
                           "settled here (WeChat notifies them as v2 XML, encrypted with the v2 key)",
                           "Set WECHAT_PAY_KEY to the merchant's API v2 key (商户平台 > API安全 > API密钥) beside the "
                           "APIv3 key.")
        return Finding("pay_v2_key", SKIPPED, "no WECHAT_PAY_KEY configured")
    try:
        wechat.pay.order_query(out_trade_no=_probe_no())
    except PayError as err:
        if err.code == "ORDERNOTEXIST":
            return Finding("pay_v2_key", OK,
                           "the v2 API key signs what WeChat Pay accepts (order query: ORDERNOTEXIST)")
        if "签名" in err.message or "sign" in err.message.lower() or err.code == "SIGNERROR":
            return Finding("pay_v2_key", ERROR, f"WeChat Pay refused our signature: {err.message}",
                           "WECHAT_PAY_KEY is not the merchant's API key (or WECHAT_SIGN_TYPE is not what it was made "
                           "for): set it again from 商户平台 > 账户中心 > API安全 > API密钥 (32 characters).")
        if "mch_id" in err.message or "appid" in err.message:
            return Finding("pay_v2_key", ERROR, f"WeChat Pay refused the merchant: {err.message}",
                           "Check WECHAT_MCH_ID, and that WECHAT_APPID is bound to that merchant (商户平台 > 产品中心 > "
                           "AppID账号管理).")
        return Finding("pay_v2_key", WARNING, f"the order query answered {err}", "See WeChat Pay's error code.")
    except SignatureError as err:
        return Finding("pay_v2_key", ERROR, f"WeChat Pay's answer does not verify with our key: {err}",
                       "WECHAT_PAY_KEY or WECHAT_SIGN_TYPE is wrong, or WECHAT_PAY_BASE is not WeChat Pay.")
    except WeChatUnavailable as err:
        return _unreachable("pay_v2_key", err)
    return Finding("pay_v2_key", WARNING, "an order query of a made-up trade found one",
                   "Unexpected: report it.")


# -- WeChat Pay v3 ---------------------------------------------------------------------------------

def check_v3() -> list[Finding]:
    """One signed GET (an order query of a trade that does not exist): WeChat's verdict on our signature
    says whether the merchant's key and serial are right; the answer's signature whether WeChat's key is."""
    client = wechat.state.pay_v3
    if client is None:
        return []
    cfg = current_app.config
    findings: list[Finding] = []
    try:
        resp, raw = client._send("GET", f"/v3/pay/transactions/out-trade-no/{_probe_no()}",
                                 {"mchid": client.creds.mchid}, None)
    except WeChatUnavailable as err:
        return [_unreachable("pay_v3_merchant_key", err)]
    serial = resp.headers.get("Wechatpay-Serial", "")
    if resp.status_code >= 500 and not resp.headers.get("Wechatpay-Signature"):
        return [_unreachable("pay_v3_merchant_key", WeChatUnavailable(f"WeChat Pay answered HTTP {resp.status_code}"))]
    try:
        v3signing.verify_answer(resp.headers, raw, client.keys.key_for)
        findings.append(Finding("pay_v3_wechat_key", OK, f"WeChat Pay's answer verifies with {serial}"))
    except SignatureError as err:
        findings.append(_v3_verification_finding(err, serial, client.keys.public_key_id))
    except WeChatError as err:  # the platform certificates' download, needed to verify, failed
        findings.append(Finding("pay_v3_wechat_key", ERROR, f"WeChat Pay's answer could not be verified: {err}",
                                "Check WECHAT_PAY_V3_KEY (it decrypts the platform certificates)."))
    code, message = _v3_error(raw)
    if resp.status_code == 404 or code in ("ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS") or resp.status_code == 200:
        findings.append(Finding("pay_v3_merchant_key", OK,
                                f"WeChat Pay accepts requests signed with WECHAT_MCH_PRIVATE_KEY_PATH as serial "
                                f"{client.creds.serial_no}"))
    elif resp.status_code == 401 or code == "SIGN_ERROR":
        if "序列号" in message or "serial" in message.lower():
            advice = ("WECHAT_MCH_CERT_SERIAL is not the serial of the merchant API certificate: read it from 商户平台 > "
                      "API安全 > 管理证书, or `openssl x509 -in apiclient_cert.pem -noout -serial`.")
        else:
            advice = ("WECHAT_MCH_PRIVATE_KEY_PATH is not the private key of the certificate WECHAT_MCH_CERT_SERIAL "
                      "names (apiclient_key.pem of the same certificate), or the certificate was revoked.")
        findings.append(Finding("pay_v3_merchant_key", ERROR, f"WeChat Pay refused our signature: {message or code}",
                                advice))
    else:
        findings.append(Finding("pay_v3_merchant_key", WARNING, f"the signed GET answered HTTP {resp.status_code} "
                                f"{code or ''} {message}".strip(), "See WeChat Pay's error code."))
    if cfg.get("WECHAT_CERT_PATH") and cfg.get("WECHAT_MCH_CERT_SERIAL"):
        try:
            info = read_certificate(cfg["WECHAT_CERT_PATH"])
            if info.serial_no.upper() != cfg["WECHAT_MCH_CERT_SERIAL"].upper():
                findings.append(Finding("merchant_cert_serial", ERROR,
                                        f"WECHAT_CERT_PATH is certificate {info.serial_no}, WECHAT_MCH_CERT_SERIAL "
                                        f"says {cfg['WECHAT_MCH_CERT_SERIAL']}",
                                        "Use the serial of the certificate whose private key signs (the same "
                                        "apiclient_cert.pem / apiclient_key.pem pair)."))
        except CertificateError:
            pass  # the expiry check says it is unreadable
    return findings


def _v3_error(raw: bytes) -> tuple[str, str]:
    import json

    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return "", ""
    return (str(data.get("code") or ""), str(data.get("message") or "")) if isinstance(data, dict) else ("", "")


def _v3_verification_finding(err: SignatureError, serial: str, public_key_id: str) -> Finding:
    if err.code == "unknown_serial":
        if serial.startswith("PUB_KEY_ID_") and not public_key_id:
            return Finding("pay_v3_wechat_key", ERROR,
                           f"WeChat Pay signs with its public key {serial}, which this shop does not have: the "
                           f"merchant has moved to public-key mode",
                           f"Download the public key (商户平台 > API安全 > 微信支付公钥) and set "
                           f"WECHAT_PAY_PUBLIC_KEY_PATH and WECHAT_PAY_PUBLIC_KEY_ID={serial}.")
        if serial.startswith("PUB_KEY_ID_"):
            return Finding("pay_v3_wechat_key", ERROR,
                           f"WeChat Pay signs with public key {serial}, WECHAT_PAY_PUBLIC_KEY_ID says {public_key_id}",
                           "Set WECHAT_PAY_PUBLIC_KEY_ID (and the key file) to the merchant's current public key.")
        return Finding("pay_v3_wechat_key", ERROR,
                       f"WeChat Pay signs with platform certificate {serial}, which this shop does not know",
                       "Turn on platform certificates (WECHAT_PAY_PLATFORM_CERTS=1) while the merchant migrates, or "
                       "check WECHAT_PAY_V3_KEY (it decrypts them).")
    if err.code == "bad_signature":
        return Finding("pay_v3_wechat_key", ERROR, f"WeChat Pay's answer (signed by {serial}) does not verify",
                       "WECHAT_PAY_PUBLIC_KEY_PATH is not the public key WECHAT_PAY_PUBLIC_KEY_ID names: download it "
                       "again from 商户平台 > API安全.")
    if err.code == "stale_timestamp":
        return Finding("pay_v3_wechat_key", ERROR, "WeChat Pay's answer is more than five minutes off our clock",
                       "Fix this server's clock (NTP): every v3 signature carries the time.")
    return Finding("pay_v3_wechat_key", ERROR, f"WeChat Pay's answer is not signed as WeChat signs: {err}",
                   "Check WECHAT_PAY_BASE: it must be WeChat Pay (or a faithful stand-in).")


def check_platform_certificates() -> list[Finding]:
    client = wechat.state.pay_v3
    if client is None or not client.keys.uses_certificates:
        return []
    try:
        certs = client.keys.refresh(force=True)
    except WeChatUnavailable as err:
        return [_unreachable("platform_certificates", err)]
    except WeChatError as err:
        return [Finding("platform_certificates", ERROR, f"the platform certificates cannot be had: {err}",
                        "Check WECHAT_PAY_V3_KEY (the APIv3 key decrypts them) and the merchant key and serial.")]
    return [Finding("platform_certificates", OK, "platform certificates: " + ", ".join(c.serial_no for c in certs))]


# -- expiry -------------------------------------------------------------------------------------------

def _expiry(check: str, what: str, not_after: datetime, now: datetime, advice: str) -> Finding:
    day = not_after.astimezone(CHINA).date().isoformat()
    if not_after <= now:
        return Finding(check, ERROR, f"{what} expired on {day}", advice)
    if not_after - now <= EXPIRY_WARNING:
        left = (not_after - now).days
        return Finding(check, WARNING, f"{what} expires on {day}, in {left} days", advice)
    return Finding(check, OK, f"{what} is valid until {day}")


def merchant_certificate_findings(now: datetime) -> list[Finding]:
    """The merchant's API certificate at WECHAT_CERT_PATH (a file: no call to anyone)."""
    path = current_app.config.get("WECHAT_CERT_PATH")
    if not path:
        return []
    try:
        info = read_certificate(path)
    except CertificateError as err:
        return [Finding("merchant_certificate", ERROR, f"WECHAT_CERT_PATH: {err}",
                        "Point WECHAT_CERT_PATH at apiclient_cert.pem (PEM).")]
    return [_expiry("merchant_certificate", f"the merchant certificate {info.serial_no}", info.not_after, now,
                    "Renew the API certificate in 商户平台 > API安全 > 申请API证书, then replace WECHAT_CERT_PATH / "
                    "WECHAT_KEY_PATH (and WECHAT_MCH_PRIVATE_KEY_PATH / WECHAT_MCH_CERT_SERIAL for v3).")]


def platform_certificate_findings(now: datetime) -> list[Finding]:
    """WeChat Pay's platform certificates as cached in the store (no call to WeChat)."""
    client = wechat.state.pay_v3
    if client is None or not client.keys.uses_certificates:
        return []
    findings = []
    for cert in client.keys.certificates():
        expires = cert.expires
        if expires is None:
            try:
                expires = certificate_info(cert.pem).not_after.timestamp()
            except CertificateError:
                continue
        findings.append(_expiry("platform_certificate", f"WeChat Pay platform certificate {cert.serial_no}",
                                datetime.fromtimestamp(expires, timezone.utc), now,
                                "WeChat rotates platform certificates itself (the app downloads new ones); if no "
                                "newer one appears, move to public-key mode (WECHAT_PAY_PUBLIC_KEY_PATH/_ID)."))
    return findings


def expiry_findings(now: datetime | None = None) -> list[Finding]:
    now = now or utcnow()
    return merchant_certificate_findings(now) + platform_certificate_findings(now)


def log_expiry_warnings(findings: Iterable[Finding]) -> int:
    """Log every expiry warning or error; how many there were."""
    count = 0
    for f in findings:
        if f.level in (WARNING, ERROR):
            count += 1
            log.warning("%s: %s. %s", f.check, f.message, f.advice)
    return count


def log_expiry_warnings_at_start(app: Flask) -> None:
    """At start: the certificate file now (reading a file cannot hang), the cached platform certificates on a
    thread (the store may be slow or down at start): start-up never waits for them, nor calls WeChat."""
    with app.app_context():
        try:
            log_expiry_warnings(merchant_certificate_findings(utcnow()))
        except Exception as exc:  # noqa: BLE001 - a warning must never stop the app from starting
            log.warning("certificate expiry not checked at start (%s)", type(exc).__name__)
        client = wechat.state.pay_v3
        if client is None or not client.keys.uses_certificates:
            return

    def cached() -> None:
        with app.app_context():
            try:
                log_expiry_warnings(platform_certificate_findings(utcnow()))
            except Exception as exc:  # noqa: BLE001
                log.info("platform certificate expiry not checked at start (%s)", type(exc).__name__)

    threading.Thread(target=cached, name="expiry-warnings", daemon=True).start()


def daily_expiry_warnings(now: datetime) -> bool:
    """Once a China-time day across every instance (a key in the shared store): log the expiry warnings."""
    day = now.astimezone(CHINA).date().isoformat()
    if not store.add(f"doctor:expiry-logged:{day}", "1", ttl=2 * 86400):
        return False
    log_expiry_warnings(expiry_findings(now))
    return True


# -- the URLs WeChat calls ----------------------------------------------------------------------------

def _url_finding(check: str, setting: str, url: str, path: str) -> Finding:
    parts = urlsplit(url)
    if parts.scheme != "https":
        return Finding(check, ERROR, f"{setting} is {url}: not https",
                       f"WeChat calls it over the internet with the payment's details: serve it over https "
                       f"(https://<your host>{path}).")
    if not parts.hostname or parts.hostname in ("localhost", "127.0.0.1") or parts.hostname.endswith(".internal"):
        return Finding(check, ERROR, f"{setting} names {parts.hostname or 'no host'}, which WeChat cannot reach",
                       "Use the public host name of this shop.")
    if parts.query or parts.fragment:
        return Finding(check, ERROR, f"{setting} carries a query string",
                       "WeChat requires a notify URL without parameters: drop the query.")
    if not parts.path.endswith(path):
        return Finding(check, ERROR, f"{setting} ends in {parts.path or '/'}, not {path}",
                       f"Set it to https://{parts.netloc}{path} (with any path prefix your proxy adds before it).")
    return Finding(check, OK, f"{setting} is {url}")


def check_urls() -> list[Finding]:
    cfg = current_app.config
    notify, refund = cfg.get("WECHAT_NOTIFY_URL") or "", cfg.get("WECHAT_REFUND_NOTIFY_URL") or ""
    findings = []
    if notify:
        findings.append(_url_finding("notify_url", "WECHAT_NOTIFY_URL", notify, NOTIFY_PATH))
        refund = refund or notify.replace("/notify", "/refund-notify")
    else:
        level = SKIPPED if cfg.get("WECHAT_SANDBOX") else ERROR
        findings.append(Finding("notify_url", level, "WECHAT_NOTIFY_URL is not set (derived from each request's host)",
                                "Set WECHAT_NOTIFY_URL=https://<your host>/api/pay/notify."))
    if refund:
        findings.append(_url_finding("refund_notify_url", "WECHAT_REFUND_NOTIFY_URL", refund, REFUND_NOTIFY_PATH))
    # The message-push URL lives in the mini-program's console; ours is PUBLIC_BASE_URL's (else the notify URL's
    # origin) /api/wechat/events, and it must be https too.
    base = (cfg.get("PUBLIC_BASE_URL") or "").rstrip("/")
    if not base and notify:
        parts = urlsplit(notify)
        base = f"{parts.scheme}://{parts.netloc}"
    if base:
        found = _url_finding("push_url", "the message-push URL", base + PUSH_PATH, PUSH_PATH)
        if found.level == OK:
            found.message += " (set it as 消息推送 URL in the mini-program's console)"
        findings.append(found)
    else:
        findings.append(Finding("push_url", SKIPPED, "no public origin known (PUBLIC_BASE_URL, WECHAT_NOTIFY_URL)",
                                "The mini-program console's 消息推送 URL must be https://<your host>/api/wechat/events."))
    return findings


# -- trade management -------------------------------------------------------------------------------

def check_trade_management() -> Finding:
    try:
        managed = wechat.access_token.call(wechat.miniapp.is_trade_managed)
    except WeChatUnavailable as err:
        return _unreachable("trade_management", err)
    except WeChatError as err:
        return Finding("trade_management", WARNING, f"is_trade_managed refused: {err}",
                       "Check the appid and secret (above) and that the mini-program has WeChat Pay.")
    if managed:
        return Finding("trade_management", OK,
                       "WeChat manages this mini-program's trades (发货信息管理): settlement waits for shipping info",
                       "Upload the shipping information of every paid order (flask orders ship), or WeChat holds "
                       "the money and may restrict payments.")
    return Finding("trade_management", OK, "trade management is off for this mini-program")


# -- all of it ----------------------------------------------------------------------------------------

def run_doctor(now: datetime | None = None) -> list[Finding]:
    findings = [check_appid_secret()]
    if V2 in wechat.state.gateways or current_app.config.get("WECHAT_PAY_API") == "v3":
        findings.append(check_v2_key())
    findings += check_v3()
    findings += check_platform_certificates()
    findings += expiry_findings(now)
    findings += check_urls()
    findings.append(check_trade_management())
    return findings
