"""The WeChat Pay v3 client: JSON calls signed with the merchant's RSA key, every answer verified.

One pooled session (shared with the v2 client), the Authorization header over
exactly the bytes sent, and `Wechatpay-Signature` checked over exactly the bytes
received, before any of them is believed, on success and error answers alike (a
forged "ORDER_CLOSED" must not close an order). Errors land in the same tree as
v2's: `PayError` carries WeChat's v3 `code`, `WeChatUnavailable` a missing or
unreadable answer, `SignatureError` one we must not believe.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlencode

import requests
from Crypto.PublicKey.RSA import RsaKey

from ...errors import NotificationRejected, PayError, SignatureError, WeChatError, WeChatUnavailable
from ... import jsonlimits
from .. import bills
from . import crypto, signing
from .keys import WeChatPayKeys

log = logging.getLogger(__name__)

# WeChat's v3 codes after which the same request may succeed later.
RETRYABLE = {"SYSTEM_ERROR", "SYSTEMERROR", "FREQUENCY_LIMITED", "BANK_ERROR", "USERPAYING", "ORDER_IN_PROCESSING",
             "RESOURCE_ALREADY_EXISTS_BUT_PROCESSING"}

ExchangeHook = Callable[[str, Mapping[str, Any], Mapping[str, Any] | None, str, float], None]

JSON = "application/json"
OFFICIAL_ORIGIN = "https://api.mch.weixin.qq.com"


@dataclass(frozen=True)
class V3Credentials:
    appid: str
    mchid: str
    serial_no: str  # the serial of the merchant's API certificate, whose private key signs
    private_key: RsaKey
    apiv3_key: str

    def __repr__(self) -> str:
        return f"V3Credentials(appid={self.appid!r}, mchid={self.mchid!r}, serial_no={self.serial_no!r})"


def for_answer(status: int, answer: Any) -> WeChatError:
    """A v3 error answer as our error tree: WeChat's `code` and `message` kept, retry advice added."""
    code = answer.get("code") if isinstance(answer, Mapping) else None
    message = answer.get("message") if isinstance(answer, Mapping) else None
    if not code:
        return WeChatUnavailable(f"WeChat Pay answered HTTP {status}", status, answer)
    err = PayError(str(message or code), str(code), answer)
    err.should_retry = status >= 500 or status == 429 or code in RETRYABLE
    return err


class PayClientV3:
    def __init__(self, creds: V3Credentials, base: str, session: requests.Session, keys: WeChatPayKeys,
                 on_exchange: ExchangeHook | None = None) -> None:
        crypto.check_key(creds.apiv3_key)
        self.creds = creds
        self.base = base.rstrip("/")
        self.http = session
        self.keys = keys
        self.on_exchange = on_exchange

    @classmethod
    def build(cls, creds: V3Credentials, base: str, session: requests.Session, *, public_key: RsaKey | None = None,
              public_key_id: str = "", platform_certificates: bool = False, store: Any = None,
              on_exchange: ExchangeHook | None = None) -> "PayClientV3":
        """A client whose keys are WeChat's public key, its platform certificates (downloaded with this
        very client), or both while a merchant migrates."""
        client = cls.__new__(cls)
        keys = WeChatPayKeys(mchid=creds.mchid, apiv3_key=creds.apiv3_key, public_key=public_key,
                             public_key_id=public_key_id, store=store,
                             fetch_certificates=client.fetch_certificates if platform_certificates else None)
        cls.__init__(client, creds, base, session, keys, on_exchange)
        return client

    # -- plumbing -------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, query: Mapping[str, str] | None, body: Mapping[str, Any] | None
              ) -> tuple[requests.Response, bytes]:
        # What is signed is WeChat's own path and query, whatever base (a proxy, the sandbox) stands before it.
        url = path + ("?" + urlencode(query) if query else "")
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") if body is not None else b""
        headers = {
            "Authorization": signing.authorization(mchid=self.creds.mchid, serial_no=self.creds.serial_no,
                                                   private_key=self.creds.private_key, method=method,
                                                   url=url, body=raw),
            "Accept": JSON,
            **self._serial_header(),
        }
        if body is not None:
            headers["Content-Type"] = JSON
        try:
            resp = self.http.request(method, self.base + url, data=raw if body is not None else None, headers=headers)
        except requests.RequestException as exc:
            raise WeChatUnavailable(f"no answer from WeChat Pay ({type(exc).__name__})") from None
        return resp, resp.content

    def _serial_header(self) -> dict[str, str]:
        """`Wechatpay-Serial` on every request: which of WeChat's keys we would encrypt sensitive fields
        with (and verify with). WeChat demands it in public-key mode; a platform certificate's serial
        otherwise, once one is known (the very first /v3/certificates call goes without)."""
        serial = self.keys.request_serial()
        return {"Wechatpay-Serial": serial} if serial else {}

    def _request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                 body: Mapping[str, Any] | None = None, audit: Mapping[str, Any] | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        answer: dict[str, Any] | None = None
        outcome = "ok"
        try:
            resp, raw = self._send(method, path, query, body)
            if resp.status_code >= 500 and not resp.headers.get("Wechatpay-Signature"):
                raise WeChatUnavailable(f"WeChat Pay answered HTTP {resp.status_code}", resp.status_code)
            # Believe nothing before the signature: not the status, not the body.
            signing.verify_answer(resp.headers, raw, self.keys.key_for)
            if raw:
                try:
                    answer = jsonlimits.loads(raw)
                except ValueError:
                    raise WeChatUnavailable("WeChat Pay answered something unreadable") from None
                if not isinstance(answer, dict):
                    raise WeChatUnavailable("WeChat Pay answered something unreadable")
            else:
                answer = {}
            if resp.status_code >= 300:
                raise for_answer(resp.status_code, answer)
            return answer
        except WeChatError as exc:
            outcome = f"{type(exc).__name__}:{exc.code or ''}"
            raise
        finally:
            elapsed = time.perf_counter() - started
            log.info("wechat pay v3 %s %s outcome=%s %.1fms", method, path, outcome, elapsed * 1000)
            if self.on_exchange:
                self.on_exchange(path, {**(audit or {}), **(body or {})}, answer, outcome, elapsed)

    def fetch_certificates(self) -> tuple[Mapping[str, str], bytes]:
        """`GET /v3/certificates` unverified: the key ring verifies it with the certificates inside."""
        resp, raw = self._send("GET", "/v3/certificates", None, None)
        if resp.status_code != 200:
            raise WeChatUnavailable(f"WeChat Pay answered HTTP {resp.status_code} to /v3/certificates",
                                    resp.status_code)
        return resp.headers, raw

    # -- endpoints ------------------------------------------------------------------------------------

    def prepay(self, *, trade_type: str, description: str, out_trade_no: str, total: int, notify_url: str,
               openid: str | None = None, time_expire: str | None = None, attach: str | None = None,
               payer_client_ip: str | None = None) -> dict[str, Any]:
        """`POST /v3/pay/transactions/{jsapi|native|app}`: `{"prepay_id"}`, or `{"code_url"}` for NATIVE.

        `time_expire` is RFC 3339 (`2018-06-08T10:34:56+08:00`).
        """
        if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
            raise ValueError("total must be a positive integer in fen")
        kind = trade_type.lower()
        if kind not in ("jsapi", "native", "app"):
            raise ValueError("trade_type must be JSAPI, NATIVE or APP")
        if kind == "jsapi" and not openid:
            raise ValueError("JSAPI needs the payer's openid")
        body: dict[str, Any] = {"appid": self.creds.appid, "mchid": self.creds.mchid, "description": description,
                                "out_trade_no": out_trade_no, "notify_url": notify_url,
                                "amount": {"total": total, "currency": "CNY"}}
        if time_expire:
            body["time_expire"] = time_expire
        if attach:
            body["attach"] = attach
        if openid and kind == "jsapi":
            body["payer"] = {"openid": openid}
        if payer_client_ip:
            body["scene_info"] = {"payer_client_ip": payer_client_ip}
        return self._request("POST", f"/v3/pay/transactions/{kind}", body=body)

    def query(self, out_trade_no: str | None = None, transaction_id: str | None = None) -> dict[str, Any]:
        """The transaction: `trade_state`, `transaction_id`, `amount.total`, `success_time`, ..."""
        if out_trade_no:
            path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}"
        elif transaction_id:
            path = f"/v3/pay/transactions/id/{quote(transaction_id, safe='')}"
        else:
            raise ValueError("query needs out_trade_no or transaction_id")
        return self._request("GET", path, query={"mchid": self.creds.mchid},
                             audit={"out_trade_no": out_trade_no, "transaction_id": transaction_id})

    def close(self, out_trade_no: str) -> None:
        """`POST .../out-trade-no/{no}/close`: 204 and no body when closed."""
        self._request("POST", f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close",
                      body={"mchid": self.creds.mchid}, audit={"out_trade_no": out_trade_no})

    def refund(self, *, out_refund_no: str, total: int, refund: int, out_trade_no: str | None = None,
               transaction_id: str | None = None, reason: str | None = None, notify_url: str | None = None
               ) -> dict[str, Any]:
        """`POST /v3/refund/domestic/refunds`; the same out_refund_no again is the same refund."""
        for name, fee in (("total", total), ("refund", refund)):
            if not isinstance(fee, int) or isinstance(fee, bool) or fee <= 0:
                raise ValueError(f"{name} must be a positive integer in fen")
        if not (out_trade_no or transaction_id):
            raise ValueError("refund needs out_trade_no or transaction_id")
        body: dict[str, Any] = {"out_refund_no": out_refund_no,
                                "amount": {"refund": refund, "total": total, "currency": "CNY"}}
        if transaction_id:
            body["transaction_id"] = transaction_id
        else:
            body["out_trade_no"] = out_trade_no
        if reason:
            body["reason"] = reason[:80]
        if notify_url:
            body["notify_url"] = notify_url
        return self._request("POST", "/v3/refund/domestic/refunds", body=body,
                             audit={"out_trade_no": out_trade_no} if out_trade_no else None)

    def refund_query(self, out_refund_no: str) -> dict[str, Any]:
        """One refund: `status` is SUCCESS, CLOSED, PROCESSING or ABNORMAL."""
        return self._request("GET", f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}",
                             audit={"out_refund_no": out_refund_no})

    # -- daily bills: a signed answer names the file and its SHA-1, then the file itself --------------------

    def trade_bill(self, bill_date: str, bill_type: str = "ALL", tar_type: str | None = "GZIP"
                   ) -> bills.BillFile | None:
        """`GET /v3/bill/tradebill` for `bill_date` (yyyy-MM-dd), then the file; None: no bill that day."""
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise ValueError("bill_type must be ALL, SUCCESS or REFUND")
        query = {"bill_date": bill_date, "bill_type": bill_type, **({"tar_type": tar_type} if tar_type else {})}
        return self._bill("/v3/bill/tradebill", query)

    def fund_flow_bill(self, bill_date: str, account_type: str = "BASIC", tar_type: str | None = "GZIP"
                       ) -> bills.BillFile | None:
        """`GET /v3/bill/fundflowbill` (account_type BASIC, OPERATION or FEES), then the file."""
        if account_type not in ("BASIC", "OPERATION", "FEES"):
            raise ValueError("account_type must be BASIC, OPERATION or FEES")
        query = {"bill_date": bill_date, "account_type": account_type,
                 **({"tar_type": tar_type} if tar_type else {})}
        return self._bill("/v3/bill/fundflowbill", query)

    def _bill(self, path: str, query: Mapping[str, str]) -> bills.BillFile | None:
        try:
            answer = self._request("GET", path, query=query)
        except PayError as err:
            if err.code == "NO_STATEMENT_EXIST":
                return None  # no trade, no refund, no money moved that day: not an error
            if err.code == "STATEMENT_CREATING":
                raise bills.BillNotReady("WeChat is still making that day's bill", err.code, err.raw) from None
            raise
        if str(answer.get("hash_type") or "").upper() != "SHA1" or not answer.get("hash_value"):
            raise WeChatUnavailable("WeChat Pay's bill answer has no SHA1 hash_value")
        return self.download(str(answer.get("download_url") or ""), str(answer["hash_value"]))

    def _download_target(self, download_url: str) -> str:
        """The path and query to GET (and sign) for a download_url, refused unless it is WeChat Pay's own.

        WeChat names its own host; a base that stands in for it (a proxy, the sandbox) takes its place,
        exactly as for every other call. A URL anywhere else never gets our Authorization header.
        """
        for origin in (OFFICIAL_ORIGIN, self.base):
            if download_url.startswith(origin + "/v3/billdownload/"):
                return download_url[len(origin):]
        raise SignatureError("the bill's download_url is not on WeChat Pay's host", "bad_download_url")

    def download(self, download_url: str, sha1: str) -> bills.BillFile:
        """GET a bill file, signed like any v3 call; its SHA-1 is checked on the bytes as they stream in
        (the answer itself is not signed: the hash, from a signed answer, is what vouches for it)."""
        url = self._download_target(download_url)
        started = time.perf_counter()
        outcome = "ok"
        headers = {"Authorization": signing.authorization(mchid=self.creds.mchid, serial_no=self.creds.serial_no,
                                                          private_key=self.creds.private_key, method="GET",
                                                          url=url, body=b""),
                   **self._serial_header()}
        try:
            try:
                resp = self.http.get(self.base + url, headers=headers, stream=True)
            except requests.RequestException as exc:
                raise WeChatUnavailable(f"no answer from WeChat Pay ({type(exc).__name__})") from None
            with resp:
                if resp.status_code != 200:
                    raise WeChatUnavailable(f"WeChat Pay answered HTTP {resp.status_code} to the bill download",
                                            resp.status_code)
                try:
                    return bills.BillFile.receive(resp.iter_content(bills.CHUNK), expected_sha1=sha1)
                except requests.RequestException as exc:
                    raise WeChatUnavailable(f"the bill download broke off ({type(exc).__name__})") from None
        except WeChatError as exc:
            outcome = f"{type(exc).__name__}:{exc.code or ''}"
            raise
        finally:
            elapsed = time.perf_counter() - started
            log.info("wechat pay v3 GET /v3/billdownload/file outcome=%s %.1fms", outcome, elapsed * 1000)
            if self.on_exchange:
                self.on_exchange("/v3/billdownload/file", {}, None, outcome, elapsed)

    # -- what the client and WeChat's callbacks need --------------------------------------------------

    def jsapi_params(self, prepay_id: str, timestamp: int | None = None, nonce_str: str | None = None
                     ) -> dict[str, str]:
        """The object `wx.requestPayment` takes: signType RSA, paySign over appId, timeStamp, nonceStr, package."""
        params = {"appId": self.creds.appid, "timeStamp": str(timestamp if timestamp is not None else int(time.time())),
                  "nonceStr": nonce_str or signing.nonce(), "package": f"prepay_id={prepay_id}", "signType": "RSA"}
        params["paySign"] = signing.jsapi_pay_sign(params["appId"], params["timeStamp"], params["nonceStr"],
                                                   params["package"], self.creds.private_key)
        return params

    def app_params(self, prepay_id: str, timestamp: int | None = None, nonce_str: str | None = None
                   ) -> dict[str, str]:
        """The APP SDK's PayReq, signed by the v3 rule over appid, timestamp, noncestr, prepayid."""
        params = {"appid": self.creds.appid, "partnerid": self.creds.mchid, "prepayid": prepay_id,
                  "package": "Sign=WXPay", "noncestr": nonce_str or signing.nonce(),
                  "timestamp": str(timestamp if timestamp is not None else int(time.time()))}
        params["sign"] = signing.app_pay_sign(params["appid"], params["timestamp"], params["noncestr"],
                                              params["prepayid"], self.creds.private_key)
        return params

    def _open(self, headers: Mapping[str, str], body: bytes, event_prefix: str) -> dict[str, Any]:
        """A notification's decrypted resource: headers checked on the raw body first, then the envelope."""
        if signing.is_probe(headers):
            # WeChat's own test that we verify: refused at once, before any key lookup (an unknown serial
            # would start a certificate download) and before reading the body.
            raise NotificationRejected("a signature probe from WeChat (WECHATPAY/SIGNTEST_): refused, as expected",
                                       "signature_probe")
        try:
            signing.verify_answer(headers, body, self.keys.key_for)
        except SignatureError as err:
            raise NotificationRejected(err.message, err.code) from None
        try:
            envelope = jsonlimits.loads(body)
        except ValueError:
            raise NotificationRejected("the notification is not JSON", "bad_json") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("resource"), dict):
            raise NotificationRejected("the notification has no resource", "bad_json")
        event = str(envelope.get("event_type") or "")
        if not event.startswith(event_prefix):
            raise NotificationRejected(f"unexpected event_type {event[:40]!r}", "wrong_event", {"event_type": event})
        try:
            data = crypto.decrypt_json(envelope["resource"], self.creds.apiv3_key)
        except crypto.DecryptError as err:
            raise NotificationRejected(f"resource: {err}", "bad_resource") from None
        data["event_type"] = event
        return data

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """A payment notification's transaction (decrypted), once it is signed by WeChat and ours."""
        data = self._open(headers, body, "TRANSACTION.")
        if data.get("appid") != self.creds.appid or data.get("mchid") != self.creds.mchid:
            raise NotificationRejected("appid or mchid is not ours", "wrong_merchant", data)
        return data

    def parse_refund_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """A refund notification's refund (decrypted): REFUND.SUCCESS, REFUND.ABNORMAL or REFUND.CLOSED."""
        data = self._open(headers, body, "REFUND.")
        if data.get("mchid") != self.creds.mchid:
            raise NotificationRejected("mchid is not ours", "wrong_merchant", data)
        return data


def failure_body(message: str) -> dict[str, str]:
    """What we answer WeChat when a notification is not recorded (with a 4xx/5xx status)."""
    return {"code": "FAIL", "message": message}
