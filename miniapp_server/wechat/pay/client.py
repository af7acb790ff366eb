"""The WeChat Pay v2 client (after wechatpy's `pay/__init__.py`): one pooled session,
every request signed, every answer's signature checked, every failure a typed error.

Neither the API key nor the string that is signed is ever logged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import requests

from ..errors import NotificationRejected, PayError, SignatureError, WeChatUnavailable
from . import bills, crypto, signing, xmlcodec

log = logging.getLogger(__name__)

# err_codes after which the same request may succeed later.
RETRYABLE = {"SYSTEMERROR", "BANKERROR", "USERPAYING", "FREQUENCY_LIMITED"}

# Called after every exchange: (path, request fields, answer fields or None, outcome, seconds).
ExchangeHook = Callable[[str, Mapping[str, str], Mapping[str, str] | None, str, float], None]


@dataclass(frozen=True)
class PayCredentials:
    appid: str
    mch_id: str
    api_key: str
    sign_type: str = signing.MD5

    def __repr__(self) -> str:
        return f"PayCredentials(appid={self.appid!r}, mch_id={self.mch_id!r}, sign_type={self.sign_type!r})"


class PayClient:
    def __init__(self, creds: PayCredentials, base: str, session: requests.Session,
                 cert: tuple[str, str] | None = None, on_exchange: ExchangeHook | None = None) -> None:
        if creds.sign_type not in signing.SIGN_TYPES:
            raise ValueError("sign_type must be MD5 or HMAC-SHA256")
        self.creds = creds
        self.base = base.rstrip("/")
        self.http = session
        self.cert = cert
        self.on_exchange = on_exchange

    # -- plumbing -------------------------------------------------------------------------

    def signed(self, params: Mapping[str, Any], sign_type: str | None = None) -> dict[str, str]:
        """`params` with appid, mch_id, nonce_str, sign_type and sign added (`sign_type` overrides the
        configured one for the calls that demand one, such as the fund-flow bill's HMAC-SHA256)."""
        sign_type = sign_type or self.creds.sign_type
        data = {k: str(v) for k, v in params.items() if v is not None and str(v) != ""}
        data.setdefault("appid", self.creds.appid)
        data.setdefault("mch_id", self.creds.mch_id)
        data.setdefault("nonce_str", signing.nonce())
        if sign_type != signing.MD5:
            data["sign_type"] = sign_type
        data["sign"] = signing.sign(data, self.creds.api_key, sign_type)
        return data

    def _request(self, path: str, params: Mapping[str, Any], use_cert: bool = False) -> dict[str, str]:
        data = self.signed(params)
        with self._exchange(path, data) as record:
            try:
                resp = self.http.post(self.base + path, data=xmlcodec.dumps(data),
                                      headers={"Content-Type": "text/xml; charset=utf-8"},
                                      cert=self.cert if use_cert else None)
            except requests.RequestException as exc:
                raise WeChatUnavailable(f"no answer from WeChat Pay ({type(exc).__name__})") from None
            if resp.status_code >= 500:
                raise WeChatUnavailable(f"WeChat Pay answered HTTP {resp.status_code}")
            try:
                record["answer"] = answer = xmlcodec.loads(resp.content)
            except xmlcodec.XMLError as exc:
                raise WeChatUnavailable(f"WeChat Pay answered something unreadable: {exc}") from None
            self._check(answer)
            return answer

    @contextlib.contextmanager
    def _exchange(self, path: str, data: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Times one exchange, logs its outcome and hands it to `on_exchange` (the audit trail), however it ends.

        The caller fills `record["answer"]` (and may set `record["outcome"]`); a typed WeChat error names the outcome.
        """
        started = time.perf_counter()
        record: dict[str, Any] = {"answer": None, "outcome": "ok"}
        try:
            yield record
        except (WeChatUnavailable, PayError, SignatureError) as exc:
            record["outcome"] = f"{type(exc).__name__}:{exc.code or ''}"
            raise
        finally:
            elapsed = time.perf_counter() - started
            log.info("wechat pay %s outcome=%s %.1fms", path, record["outcome"], elapsed * 1000)
            if self.on_exchange:
                self.on_exchange(path, data, record["answer"], record["outcome"], elapsed)

    def _check(self, answer: dict[str, str]) -> None:
        if answer.get("return_code") != "SUCCESS":
            raise PayError(answer.get("return_msg") or "return_code FAIL", answer.get("return_code") or "FAIL", answer)
        # An answer that claims success must prove it came from WeChat.
        if not self._signed_by_us(answer):
            raise SignatureError("WeChat Pay's answer has a bad signature", "SIGNERROR", None)
        if answer.get("result_code") == "FAIL":
            err = PayError(answer.get("err_code_des") or "result_code FAIL", answer.get("err_code") or "FAIL", answer)
            err.should_retry = err.code in RETRYABLE
            raise err

    # -- endpoints ---------------------------------------------------------------------------

    def unified_order(self, *, trade_type: str, body: str, out_trade_no: str, total_fee: int,
                      spbill_create_ip: str, notify_url: str, openid: str | None = None,
                      product_id: str | None = None, time_expire: str | None = None,
                      attach: str | None = None) -> dict[str, str]:
        if not isinstance(total_fee, int) or isinstance(total_fee, bool) or total_fee <= 0:
            raise ValueError("total_fee must be a positive integer in fen")
        return self._request("/pay/unifiedorder", {
            "body": body, "out_trade_no": out_trade_no, "total_fee": total_fee, "fee_type": "CNY",
            "spbill_create_ip": spbill_create_ip, "notify_url": notify_url, "trade_type": trade_type,
            "openid": openid, "product_id": product_id, "time_expire": time_expire, "attach": attach,
        })

    def order_query(self, out_trade_no: str | None = None, transaction_id: str | None = None) -> dict[str, str]:
        if not (out_trade_no or transaction_id):
            raise ValueError("order_query needs out_trade_no or transaction_id")
        return self._request("/pay/orderquery", {"out_trade_no": out_trade_no, "transaction_id": transaction_id})

    def close_order(self, out_trade_no: str) -> dict[str, str]:
        return self._request("/pay/closeorder", {"out_trade_no": out_trade_no})

    def refund(self, *, out_trade_no: str, out_refund_no: str, total_fee: int, refund_fee: int,
               notify_url: str | None = None, refund_desc: str | None = None,
               transaction_id: str | None = None) -> dict[str, str]:
        """Ask for a refund; the same out_refund_no again is the same refund (WeChat is idempotent on it).

        `total_fee` is what the transaction paid; `transaction_id`, when given, names the very
        transaction to refund (an anomalous second payment, say) and WeChat prefers it to out_trade_no.
        """
        for name, fee in (("total_fee", total_fee), ("refund_fee", refund_fee)):
            if not isinstance(fee, int) or isinstance(fee, bool) or fee <= 0:
                raise ValueError(f"{name} must be a positive integer in fen")
        return self._request("/secapi/pay/refund", {
            "transaction_id": transaction_id, "out_trade_no": out_trade_no, "out_refund_no": out_refund_no,
            "total_fee": total_fee, "refund_fee": refund_fee, "notify_url": notify_url, "refund_desc": refund_desc,
        }, use_cert=True)

    def refund_query(self, out_refund_no: str) -> dict[str, str]:
        """One refund's state: the answer's `refund_status_0` is SUCCESS, PROCESSING, REFUNDCLOSE or CHANGE."""
        return self._request("/pay/refundquery", {"out_refund_no": out_refund_no})

    # -- daily bills (the answer is the file itself, or an unsigned XML error) ---------------------------

    def download_bill(self, bill_date: str, bill_type: str = "ALL", tar_type: str | None = "GZIP"
                      ) -> bills.BillFile | None:
        """`/pay/downloadbill` for `bill_date` (yyyyMMdd, China time); None when WeChat has no bill that
        day (`No Bill Exist`, 20002), which is not an error. bill_type ALL, SUCCESS or REFUND."""
        if bill_type not in ("ALL", "SUCCESS", "REFUND", "RECHARGE_REFUND"):
            raise ValueError("bill_type must be ALL, SUCCESS, REFUND or RECHARGE_REFUND")
        return self._download("/pay/downloadbill", {"bill_date": bill_date, "bill_type": bill_type,
                                                    "tar_type": tar_type})

    def download_fund_flow(self, bill_date: str, account_type: str = "Basic", tar_type: str | None = "GZIP"
                           ) -> bills.BillFile | None:
        """`/pay/downloadfundflow`: signed HMAC-SHA256 whatever the configured sign type (WeChat accepts
        nothing else here) and sent with the merchant's client certificate."""
        if account_type not in ("Basic", "Operation", "Fees"):
            raise ValueError("account_type must be Basic, Operation or Fees")
        return self._download("/pay/downloadfundflow", {"bill_date": bill_date, "account_type": account_type,
                                                        "tar_type": tar_type},
                              sign_type=signing.HMAC_SHA256, use_cert=True)

    def _download(self, path: str, params: Mapping[str, Any], sign_type: str | None = None,
                  use_cert: bool = False) -> bills.BillFile | None:
        data = self.signed(params, sign_type)
        with self._exchange(path, data) as record:
            try:
                resp = self.http.post(self.base + path, data=xmlcodec.dumps(data), stream=True,
                                      headers={"Content-Type": "text/xml; charset=utf-8"},
                                      cert=self.cert if use_cert else None)
            except requests.RequestException as exc:
                raise WeChatUnavailable(f"no answer from WeChat Pay ({type(exc).__name__})") from None
            with resp:
                if resp.status_code >= 500:
                    raise WeChatUnavailable(f"WeChat Pay answered HTTP {resp.status_code}")
                chunks = resp.iter_content(bills.CHUNK)  # streamed: a large bill never sits in memory whole
                first = next(chunks, b"")
                if first.lstrip()[:4] == b"<xml":
                    record["answer"] = self._bill_error(first + b"".join(chunks))
                    record["outcome"] = "no_bill"
                    return None
                try:
                    file = bills.BillFile.receive(_chain(first, chunks))
                except Exception as exc:
                    raise WeChatUnavailable(f"the bill download broke off ({type(exc).__name__})") from None
                record["answer"] = {"bill_bytes": str(file.size)}
                return file

    @staticmethod
    def _bill_error(body: bytes) -> dict[str, str]:
        """An XML answer instead of a bill: "no bill that day" returns; anything else raises."""
        try:
            answer = xmlcodec.loads(body[:65536])
        except xmlcodec.XMLError as exc:
            raise WeChatUnavailable(f"WeChat Pay answered something unreadable: {exc}") from None
        message, code = answer.get("return_msg") or "", answer.get("error_code") or answer.get("err_code") or ""
        if code == "20002" or message.lower() == "no bill exist":
            return answer
        if code == "20003" or message.lower() == "bill creating":
            raise bills.BillNotReady("WeChat is still making that day's bill (Bill Creating)", code or "20003",
                                     answer)
        if "签名" in message or "sign" in message.lower():
            raise PayError(message or "signature error", "SIGNERROR", answer)
        raise PayError(message or "the bill download failed", code or answer.get("return_code") or "FAIL", answer)

    # -- what the client and WeChat's callbacks need --------------------------------------------

    def jsapi_params(self, prepay_id: str, timestamp: int | None = None, nonce_str: str | None = None) -> dict[str, str]:
        """The object `wx.requestPayment` takes, signed a second time with the same key and sign type."""
        params = {
            "appId": self.creds.appid,
            "timeStamp": str(timestamp if timestamp is not None else int(time.time())),
            "nonceStr": nonce_str or signing.nonce(),
            "package": f"prepay_id={prepay_id}",
            "signType": self.creds.sign_type,
        }
        params["paySign"] = signing.sign(params, self.creds.api_key, self.creds.sign_type)
        return params

    def app_params(self, prepay_id: str, timestamp: int | None = None, nonce_str: str | None = None) -> dict[str, str]:
        """The parameters the APP SDK's PayReq takes, signed a second time."""
        params = {
            "appid": self.creds.appid,
            "partnerid": self.creds.mch_id,
            "prepayid": prepay_id,
            "package": "Sign=WXPay",
            "noncestr": nonce_str or signing.nonce(),
            "timestamp": str(timestamp if timestamp is not None else int(time.time())),
        }
        params["sign"] = signing.sign(params, self.creds.api_key, self.creds.sign_type)
        return params

    def parse_notification(self, body: bytes) -> dict[str, str]:
        """A payment notification's fields once its signature and merchant check out."""
        data = self._callback(body)
        if not self._signed_by_us(data):
            raise NotificationRejected("signature does not verify", "bad_signature", data)
        self._check_merchant(data)
        return data

    def parse_refund_notification(self, body: bytes) -> dict[str, str]:
        """A refund notification's decrypted `req_info` fields, once it is ours and decrypts with our key."""
        data = self._callback(body)  # unsigned: the encryption with our key is what proves it WeChat's
        self._check_merchant(data)
        try:
            plain = crypto.decrypt_req_info(data.get("req_info", ""), self.creds.api_key)
            fields = xmlcodec.loads(plain, root_name="root")
        except (crypto.DecryptError, xmlcodec.XMLError):
            raise NotificationRejected("req_info does not decrypt with our key", "bad_req_info", data) from None
        return fields

    def _signed_by_us(self, data: Mapping[str, str]) -> bool:
        """Signed with our key in our configured sign type: a document may name its type, but only ours.

        Letting `sign_type` in the body choose would let anyone who can make one MD5 signature pass
        where HMAC-SHA256 was configured (a downgrade); WeChat signs in the type the merchant uses.
        """
        claimed = data.get("sign_type")
        if claimed not in (None, "", self.creds.sign_type):
            return False
        return signing.verify(data, self.creds.api_key, self.creds.sign_type)

    @staticmethod
    def _callback(body: bytes) -> dict[str, str]:
        """A callback's outer fields, if it is a well-formed WeChat document that says SUCCESS."""
        try:
            data = xmlcodec.loads(body)
        except xmlcodec.XMLError as exc:
            raise NotificationRejected(str(exc), "bad_xml") from None
        if data.get("return_code") != "SUCCESS":
            raise NotificationRejected("return_code is not SUCCESS", "return_fail", data)
        return data

    def _check_merchant(self, data: dict[str, str]) -> None:
        if data.get("appid") != self.creds.appid or data.get("mch_id") != self.creds.mch_id:
            raise NotificationRejected("appid or mch_id is not ours", "wrong_merchant", data)


def _chain(first: bytes, rest) -> "Iterator[bytes]":
    yield first
    yield from rest


ACK_SUCCESS = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"


def ack(ok: bool, message: str = "OK") -> bytes:
    """WeChat's answer to a notification: exactly the contract's bytes on success."""
    if ok:
        return ACK_SUCCESS
    return xmlcodec.dumps({"return_code": "FAIL", "return_msg": message})
