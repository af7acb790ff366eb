"""One small interface to WeChat Pay, whichever API a merchant has: v2 (XML, MD5/HMAC keys) or v3
(JSON, RSA, AES-GCM). The services speak only this; `WECHAT_PAY_API` picks the implementation.

What crosses it is normalized to one vocabulary, the one the services were written in:
- `prepay()` gives a `Prepay` (prepay_id, code_url); v3 NATIVE has no prepay_id, so a stable marker
  derived from the code_url stands in for it (`native-...`): the same code, the same marker;
- `query()` gives a `TradeState` (trade_state, transaction_id, total_fee in fen, time_end as
  `yyyyMMddHHmmss` China time);
- `refund()` a `RefundAccepted`, `refund_query()` a `RefundState` (refund_status SUCCESS, PROCESSING,
  REFUNDCLOSE or CHANGE; success_time `yyyy-MM-dd HH:mm:ss` China time);
- notifications parse to plain dicts with v2's field names (out_trade_no, transaction_id, total_fee,
  result_code, time_end, attach; for refunds out_refund_no, refund_fee, refund_status, success_time);
- `PayError.code` is v2's err_code (ORDERPAID, ORDERCLOSED, ORDERNOTEXIST, NOTENOUGH, SYSTEMERROR, ...):
  the v3 adapter translates WeChat's v3 codes (ORDER_CLOSED, ORDER_NOT_EXIST, NOT_ENOUGH, ...), keeping
  the original in the error's `raw`.

No Flask here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Mapping, Protocol

from ..errors import PayError
from ..ipaddr import clean_ip
from ..numbers import ascii_uint
from ..times import CHINA, wechat_time
from .bills import BillFile
from .client import PayClient, ack
from .v3.client import PayClientV3, failure_body

V2, V3 = "v2", "v3"
FALLBACK_IP = "127.0.0.1"  # what goes to WeChat for a caller whose address is not a valid IP (WeChat requires one)
APIS = (V2, V3)
TRADE_BILL, FUND_FLOW_BILL = "trade", "fundflow"  # `download_bill`'s kinds: the trade bill (ALL), the fund flow


@dataclass(frozen=True)
class Prepay:
    prepay_id: str
    code_url: str | None = None


@dataclass(frozen=True)
class TradeState:
    """What WeChat's order query says of one trade."""

    trade_state: str  # SUCCESS, REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING, PAYERROR
    transaction_id: str | None = None
    total_fee: int | None = None  # fen; None when WeChat did not say
    time_end: str | None = None  # yyyyMMddHHmmss, China time
    openid: str | None = None  # the payer, as WeChat names them under the appid

    @property
    def paid(self) -> bool:
        return self.trade_state in ("SUCCESS", "REFUND") and bool(self.transaction_id)


@dataclass(frozen=True)
class RefundAccepted:
    refund_id: str | None


@dataclass(frozen=True)
class RefundState:
    out_refund_no: str
    out_trade_no: str
    transaction_id: str
    refund_fee: int | None
    refund_id: str
    refund_status: str  # SUCCESS, PROCESSING, REFUNDCLOSE, CHANGE
    success_time: str = ""  # yyyy-MM-dd HH:mm:ss, China time

    def fields(self) -> dict[str, str]:
        """As a refund notification's fields (what `services.refunds.settle_refund` reads)."""
        return {"out_refund_no": self.out_refund_no, "out_trade_no": self.out_trade_no,
                "transaction_id": self.transaction_id,
                "refund_fee": "" if self.refund_fee is None else str(self.refund_fee),
                "refund_id": self.refund_id, "refund_status": self.refund_status, "success_time": self.success_time}


@dataclass(frozen=True)
class NotificationAnswer:
    status: int
    body: bytes
    mimetype: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class PayGateway(Protocol):
    api: str

    def prepay(self, *, trade_type: str, description: str, out_trade_no: str, total_fee: int, notify_url: str,
               client_ip: str, openid: str | None = None, product_id: str | None = None,
               expires_at: datetime | None = None, attach: str | None = None) -> Prepay: ...
    def query(self, out_trade_no: str) -> TradeState: ...
    def close(self, out_trade_no: str) -> None: ...
    def refund(self, *, out_trade_no: str, out_refund_no: str, total_fee: int, refund_fee: int,
               notify_url: str | None = None, reason: str | None = None,
               transaction_id: str | None = None) -> RefundAccepted: ...
    def refund_query(self, out_refund_no: str) -> RefundState | None: ...
    def parse_payment_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]: ...
    def parse_refund_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]: ...
    def notification_answer(self, ok: bool, message: str) -> NotificationAnswer: ...
    def jsapi_params(self, prepay_id: str) -> dict[str, str]: ...
    def app_params(self, prepay_id: str) -> dict[str, str]: ...
    def download_bill(self, kind: str, day: date) -> BillFile | None: ...


def _fee(value: Any) -> int | None:
    return ascii_uint(value)  # fen: v2's ASCII digits, v3's JSON integers; anything else is no amount


# -- v2 -----------------------------------------------------------------------------------------------

class V2Gateway:
    api = V2

    def __init__(self, client: PayClient) -> None:
        self.client = client

    def prepay(self, *, trade_type: str, description: str, out_trade_no: str, total_fee: int, notify_url: str,
               client_ip: str, openid: str | None = None, product_id: str | None = None,
               expires_at: datetime | None = None, attach: str | None = None) -> Prepay:
        answer = self.client.unified_order(
            trade_type=trade_type, body=description, out_trade_no=out_trade_no, total_fee=total_fee,
            spbill_create_ip=clean_ip(client_ip) or FALLBACK_IP, notify_url=notify_url, openid=openid, product_id=product_id,
            time_expire=wechat_time(expires_at) if expires_at else None, attach=attach)
        return Prepay(answer.get("prepay_id") or "", answer.get("code_url") or None)

    def query(self, out_trade_no: str) -> TradeState:
        answer = self.client.order_query(out_trade_no=out_trade_no)
        return TradeState(answer.get("trade_state") or "", answer.get("transaction_id") or None,
                          _fee(answer.get("total_fee")), answer.get("time_end") or None, answer.get("openid") or None)

    def close(self, out_trade_no: str) -> None:
        self.client.close_order(out_trade_no)

    def refund(self, *, out_trade_no: str, out_refund_no: str, total_fee: int, refund_fee: int,
               notify_url: str | None = None, reason: str | None = None,
               transaction_id: str | None = None) -> RefundAccepted:
        answer = self.client.refund(out_trade_no=out_trade_no, out_refund_no=out_refund_no, total_fee=total_fee,
                                    refund_fee=refund_fee, notify_url=notify_url, refund_desc=reason,
                                    transaction_id=transaction_id)
        return RefundAccepted(answer.get("refund_id") or None)

    def refund_query(self, out_refund_no: str) -> RefundState | None:
        answer = self.client.refund_query(out_refund_no)
        count = ascii_uint(answer.get("refund_count"), max_digits=2)  # WeChat lists at most 20 refunds here
        for n in range(count or 0):
            if answer.get(f"out_refund_no_{n}") == out_refund_no:
                return RefundState(out_refund_no, answer.get("out_trade_no", ""), answer.get("transaction_id", ""),
                                   _fee(answer.get(f"refund_fee_{n}")), answer.get(f"refund_id_{n}", ""),
                                   answer.get(f"refund_status_{n}", ""), answer.get(f"refund_success_time_{n}", ""))
        return None

    def parse_payment_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        return self.client.parse_notification(body)

    def parse_refund_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        return self.client.parse_refund_notification(body)

    def notification_answer(self, ok: bool, message: str) -> NotificationAnswer:
        return notification_answer(V2, ok, message)

    def download_bill(self, kind: str, day: date) -> BillFile | None:
        """The day's (China time) trade bill (ALL) or Basic account fund flow, gzip; None: no bill that day."""
        if kind == FUND_FLOW_BILL:
            return self.client.download_fund_flow(day.strftime("%Y%m%d"))
        return self.client.download_bill(day.strftime("%Y%m%d"), "ALL")

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        return self.client.jsapi_params(prepay_id)

    def app_params(self, prepay_id: str) -> dict[str, str]:
        return self.client.app_params(prepay_id)


# -- v3 -----------------------------------------------------------------------------------------------

# WeChat's v3 codes in the v2 vocabulary the services speak.
V3_CODES = {
    "ORDER_NOT_EXIST": "ORDERNOTEXIST", "ORDER_CLOSED": "ORDERCLOSED", "ORDER_PAID": "ORDERPAID",
    "ORDERPAID": "ORDERPAID", "NOT_ENOUGH": "NOTENOUGH", "SYSTEM_ERROR": "SYSTEMERROR", "SIGN_ERROR": "SIGNERROR",
    "BANK_ERROR": "BANKERROR", "OUT_TRADE_NO_USED": "OUT_TRADE_NO_USED", "INVALID_REQUEST": "INVALID_REQUEST",
    "FREQUENCY_LIMITED": "FREQUENCY_LIMITED", "PARAM_ERROR": "PARAM_ERROR", "NO_AUTH": "NOAUTH",
    "APPID_MCHID_NOT_MATCH": "APPID_MCHID_NOT_MATCH", "MCH_NOT_EXISTS": "MCHID_NOT_EXIST",
}
V3_REFUND_STATUS = {"SUCCESS": "SUCCESS", "PROCESSING": "PROCESSING", "CLOSED": "REFUNDCLOSE", "ABNORMAL": "CHANGE"}


def _translated(err: PayError, not_found: str = "ORDERNOTEXIST") -> PayError:
    code = str(err.code or "")
    mapped = not_found if code == "RESOURCE_NOT_EXISTS" else V3_CODES.get(code, code)
    out = PayError(err.message, mapped, err.raw)
    out.should_retry = err.should_retry
    return out


def _v2_time(rfc3339: Any) -> str | None:
    try:
        return wechat_time(datetime.fromisoformat(str(rfc3339)))
    except (TypeError, ValueError):
        return None


def _v2_refund_time(rfc3339: Any) -> str:
    try:
        return datetime.fromisoformat(str(rfc3339)).astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return ""


def native_marker(code_url: str) -> str:
    """v3 NATIVE gives no prepay_id; orders keep this in its place (the same code, the same marker)."""
    return "native-" + hashlib.sha256(code_url.encode("utf-8")).hexdigest()[:40]


class V3Gateway:
    api = V3

    def __init__(self, client: PayClientV3) -> None:
        self.client = client

    def prepay(self, *, trade_type: str, description: str, out_trade_no: str, total_fee: int, notify_url: str,
               client_ip: str, openid: str | None = None, product_id: str | None = None,
               expires_at: datetime | None = None, attach: str | None = None) -> Prepay:
        try:
            answer = self.client.prepay(
                trade_type=trade_type, description=description[:127], out_trade_no=out_trade_no, total=total_fee,
                notify_url=notify_url, openid=openid,
                time_expire=expires_at.astimezone(CHINA).isoformat(timespec="seconds") if expires_at else None,
                attach=attach, payer_client_ip=clean_ip(client_ip) or FALLBACK_IP)
        except PayError as err:
            raise _translated(err) from None
        code_url = answer.get("code_url") or None
        prepay_id = answer.get("prepay_id") or (native_marker(code_url) if code_url else "")
        return Prepay(str(prepay_id), code_url)

    def query(self, out_trade_no: str) -> TradeState:
        try:
            answer = self.client.query(out_trade_no=out_trade_no)
        except PayError as err:
            raise _translated(err) from None
        amount = answer.get("amount") if isinstance(answer.get("amount"), dict) else {}
        payer = answer.get("payer") if isinstance(answer.get("payer"), dict) else {}
        return TradeState(str(answer.get("trade_state") or ""), answer.get("transaction_id") or None,
                          _fee(amount.get("total")), _v2_time(answer.get("success_time")),
                          payer.get("openid") or None)

    def close(self, out_trade_no: str) -> None:
        try:
            self.client.close(out_trade_no)
        except PayError as err:
            raise _translated(err) from None

    def refund(self, *, out_trade_no: str, out_refund_no: str, total_fee: int, refund_fee: int,
               notify_url: str | None = None, reason: str | None = None,
               transaction_id: str | None = None) -> RefundAccepted:
        try:
            answer = self.client.refund(out_refund_no=out_refund_no, total=total_fee, refund=refund_fee,
                                        out_trade_no=out_trade_no, transaction_id=transaction_id, reason=reason,
                                        notify_url=notify_url)
        except PayError as err:
            raise _translated(err) from None
        return RefundAccepted(answer.get("refund_id") or None)

    def refund_query(self, out_refund_no: str) -> RefundState | None:
        try:
            answer = self.client.refund_query(out_refund_no)
        except PayError as err:
            raise _translated(err, not_found="REFUNDNOTEXIST") from None
        return self._refund_state(answer, "status")

    @staticmethod
    def _refund_state(data: Mapping[str, Any], status_name: str) -> RefundState:
        amount = data.get("amount") if isinstance(data.get("amount"), dict) else {}
        return RefundState(
            str(data.get("out_refund_no") or ""), str(data.get("out_trade_no") or ""),
            str(data.get("transaction_id") or ""), _fee(amount.get("refund")), str(data.get("refund_id") or ""),
            V3_REFUND_STATUS.get(str(data.get(status_name) or ""), str(data.get(status_name) or "")),
            _v2_refund_time(data.get("success_time")) if data.get("success_time") else "")

    def parse_payment_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        data = self.client.parse_notification(headers, body)
        amount = data.get("amount") if isinstance(data.get("amount"), dict) else {}
        payer = data.get("payer") if isinstance(data.get("payer"), dict) else {}
        total = _fee(amount.get("total"))
        state = str(data.get("trade_state") or "")
        return {
            "appid": data.get("appid"), "mch_id": data.get("mchid"), "out_trade_no": data.get("out_trade_no") or "",
            "transaction_id": data.get("transaction_id") or "", "total_fee": "" if total is None else str(total),
            "result_code": "SUCCESS" if state == "SUCCESS" else "FAIL", "err_code": "" if state == "SUCCESS" else state,
            "time_end": _v2_time(data.get("success_time")) or "", "attach": data.get("attach") or "",
            "trade_type": data.get("trade_type"), "trade_state": state, "openid": payer.get("openid"),
            "event_type": data.get("event_type"),
        }

    def parse_refund_notification(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        data = self.client.parse_refund_notification(headers, body)
        fields = self._refund_state(data, "refund_status").fields()
        amount = data.get("amount") if isinstance(data.get("amount"), dict) else {}
        total = _fee(amount.get("total"))
        fields["total_fee"] = "" if total is None else str(total)
        fields["event_type"] = str(data.get("event_type") or "")
        return fields

    def notification_answer(self, ok: bool, message: str) -> NotificationAnswer:
        return notification_answer(V3, ok, message)

    def download_bill(self, kind: str, day: date) -> BillFile | None:
        if kind == FUND_FLOW_BILL:
            return self.client.fund_flow_bill(day.isoformat())
        return self.client.trade_bill(day.isoformat(), "ALL")

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        return self.client.jsapi_params(prepay_id)

    def app_params(self, prepay_id: str) -> dict[str, str]:
        return self.client.app_params(prepay_id)


def notification_answer(api: str, ok: bool, message: str, probe: bool = False) -> NotificationAnswer:
    """What WeChat expects back from a notification in each API (a v3 signature probe: a plain 401)."""
    if api == V3 and probe:
        return NotificationAnswer(401, json.dumps(failure_body("signature verification failed")).encode("utf-8"),
                                  "application/json")
    if api == V3:
        # v3: 204 once recorded; otherwise a 4xx/5xx with {"code": "FAIL", "message"}, and WeChat tries again.
        # A notification refused for what it is (unsigned, forged, not ours, of an API not configured here)
        # is the sender's fault: 400. A failure of ours raises and is answered apart.
        if ok:
            return NotificationAnswer(204, b"")
        return NotificationAnswer(400, json.dumps(failure_body(message), ensure_ascii=False).encode("utf-8"),
                                  "application/json")
    # v2: always HTTP 200; the XML's return_code says whether WeChat should stop.
    return NotificationAnswer(200, ack(ok, message), "text/xml")


def is_signature_probe(headers: Mapping[str, str]) -> bool:
    from .v3.signing import is_probe

    return is_probe(headers)


def is_v3_notification(headers: Mapping[str, str]) -> bool:
    """v3 notifications are JSON signed in `Wechatpay-*` headers; v2 ones are XML signed inside."""
    return any(k.lower() == "wechatpay-signature" for k in headers.keys())
