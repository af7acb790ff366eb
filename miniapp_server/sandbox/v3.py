"""The emulator's WeChat Pay v3 half: signed JSON calls, signed answers, encrypted notifications.

As WeChat does in public-key mode (the default here): every request's Authorization
header is checked (the merchant, its certificate serial, a timestamp within five
minutes, the SHA256withRSA signature over `METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`);
every answer, error answers included, is signed with WeChat Pay's key (its public key,
or the platform certificate while `signer` says so, to rehearse a migration);
notifications carry their transaction or refund AES-256-GCM-encrypted with the APIv3
key in `resource`, are signed the same way (afresh on every retry, so the five-minute
window holds), and count as acknowledged on HTTP 200 or 204.

v3 orders live beside v2 ones in the emulator's store (marked `"api": "v3"`), so the
control calls (`/sandbox/control/pay` with `signType=RSA` parameters, `/sandbox/control/scan`,
the refund knobs) work for both: `SandboxEmulator` and `SandboxRefundDesk` only send a
v3 order's notifications the v3 way. Calls are counted under the v2 names
(`unifiedorder`, `orderquery`, ...) so that `/sandbox/control/calls` reads the same in both modes.
No Flask here; `v3_routes.py` puts it on the web.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from Crypto.PublicKey.RSA import RsaKey

from ..config import SANDBOX_PAY_V3_KEY
from ..wechat.pay.v3 import crypto as v3crypto
from ..wechat.pay.v3 import signing as v3signing
from ..wechat.times import CHINA, china_now, parse_wechat_time
from .emulator import ORDER_TTL, Emulator, SandboxError
from .refunds import ERR_DESCRIPTIONS, RefundDesk
from .v3_keys import SandboxV3Keys

SANDBOX_V3_KEY = SANDBOX_PAY_V3_KEY  # the APIv3 key the sandbox assumes unless WECHAT_PAY_V3_KEY says otherwise
PUBLIC_KEY, PLATFORM_CERTIFICATE = "public_key", "platform_certificate"
SIGNERS = (PUBLIC_KEY, PLATFORM_CERTIFICATE)

_OUT_TRADE_NO = re.compile(r"^[0-9A-Za-z_\-|*]{6,32}$")
_V3_STATE = {"SUCCESS": "SUCCESS", "PROCESSING": "PROCESSING", "REFUNDCLOSE": "CLOSED", "CHANGE": "ABNORMAL"}
_REFUND_EVENT = {"SUCCESS": "REFUND.SUCCESS", "REFUNDCLOSE": "REFUND.CLOSED", "CHANGE": "REFUND.ABNORMAL"}
# fail_next takes WeChat's v2 err_codes (the refund desk's knob); here is how v3 says them.
_V3_FAILURE = {"NOTENOUGH": (403, "NOT_ENOUGH"), "SYSTEMERROR": (500, "SYSTEM_ERROR"),
               "FREQUENCY_LIMITED": (429, "FREQUENCY_LIMITED"), "BIZERR_NEED_RETRY": (500, "SYSTEM_ERROR"),
               "USER_ACCOUNT_ABNORMAL": (403, "USER_ACCOUNT_ABNORMAL"), "TRADE_OVERDUE": (400, "INVALID_REQUEST")}

# Posts `body` with `headers` to `url`: (HTTP status, answer body).
V3Sender = Callable[[str, bytes, Mapping[str, str]], "tuple[int, bytes]"]


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(CHINA).isoformat(timespec="seconds")


class V3Error(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class V3Answer:
    status: int
    body: bytes
    headers: dict[str, str]


class V3Desk:
    def __init__(self, emu: Emulator, refunds: RefundDesk, keys: SandboxV3Keys, apiv3_key: str,
                 merchant_public_key: RsaKey, merchant_serial: str, send: V3Sender,
                 deliver_in_background: bool = False) -> None:
        v3crypto.check_key(apiv3_key)
        self.emu, self.refunds, self.keys = emu, refunds, keys
        self.apiv3_key = apiv3_key
        self.merchant_public_key = merchant_public_key.public_key()
        self.merchant_serial = merchant_serial
        self.send = send
        self.deliver_in_background = deliver_in_background

    @property
    def merchant(self):
        return self.emu.merchant

    # -- which key signs ------------------------------------------------------------------------------

    def signer(self) -> str:
        return self.emu.store.get(f"sandbox:{self.merchant.mch_id}:v3-signer") or PUBLIC_KEY

    def set_signer(self, body: object) -> dict[str, str]:
        signer = body.get("signer") if isinstance(body, dict) else None
        if signer not in SIGNERS:
            raise SandboxError(400, "invalid_params", 'send {"signer": "public_key"|"platform_certificate"}')
        self.emu.store.set(f"sandbox:{self.merchant.mch_id}:v3-signer", signer)
        return self.describe()

    def describe(self) -> dict[str, str]:
        """What a merchant downloads from the platform: ids and public halves, never a private key."""
        return {"signer": self.signer(), "public_key_id": self.keys.public_key_id,
                "public_key_pem": self.keys.public_key_private.public_key().export_key("PEM").decode("ascii"),
                "platform_serial": self.keys.platform_serial, "merchant_serial": self.merchant_serial}

    def _signing_key(self, signer: str | None = None) -> tuple[RsaKey, str]:
        if (signer or self.signer()) == PLATFORM_CERTIFICATE:
            return self.keys.platform_private, self.keys.platform_serial
        return self.keys.public_key_private, self.keys.public_key_id

    def _signed(self, status: int, payload: Mapping[str, Any] | None, signer: str | None = None) -> V3Answer:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8") if payload is not None \
            else b""
        key, serial = self._signing_key(signer)
        headers = v3signing.answer_headers(body, key, serial)
        headers["Request-ID"] = secrets.token_hex(16)
        if payload is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        return V3Answer(status, body, headers)

    # -- every call: WeChat's checks, then the handler, then a signed answer ------------------------------

    def call(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
             handler: Callable[[dict[str, Any]], tuple[int, Mapping[str, Any] | None]], signer: str | None = None
             ) -> V3Answer:
        try:
            self._check_request(method, url, headers, body)
            data: dict[str, Any] = {}
            if body:
                try:
                    data = json.loads(body)
                except ValueError:
                    raise V3Error(400, "PARAM_ERROR", "请求体不是合法的JSON") from None
                if not isinstance(data, dict):
                    raise V3Error(400, "PARAM_ERROR", "请求体不是JSON对象")
            status, payload = handler(data)
        except V3Error as err:
            status, payload = err.status, {"code": err.code, "message": err.message}
        return self._signed(status, payload, signer)

    def _check_request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> None:
        auth = v3signing.parse_authorization(headers.get("Authorization"))
        if auth is None:
            raise V3Error(401, "SIGN_ERROR", "Authorization头格式错误或缺失")
        if not v3signing.same(auth.mchid, self.merchant.mch_id):
            raise V3Error(401, "SIGN_ERROR", "商户号与签名不匹配")
        if not v3signing.same(auth.serial_no.upper(), self.merchant_serial.upper()):
            raise V3Error(401, "SIGN_ERROR", "商户证书序列号有误")
        if not v3signing.fresh(auth.timestamp):
            raise V3Error(401, "SIGN_ERROR", "请求时间戳与当前时间相差超过5分钟")
        message = v3signing.request_message(method, url, auth.timestamp, auth.nonce_str, body)
        if not v3signing.verify(message, auth.signature, self.merchant_public_key):
            raise V3Error(401, "SIGN_ERROR", "签名错误")

    # -- /v3/pay/transactions ------------------------------------------------------------------------------

    def _ours(self, data: Mapping[str, Any], check_appid: bool = True) -> None:
        if data.get("mchid") != self.merchant.mch_id:
            raise V3Error(400, "MCH_NOT_EXISTS", "商户号不存在或与请求不符")
        if check_appid and data.get("appid") != self.merchant.appid:
            raise V3Error(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")

    def prepay(self, kind: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        emu = self.emu
        emu._count("unifiedorder")
        self._ours(data)
        description, no = data.get("description"), data.get("out_trade_no")
        amount, notify_url = data.get("amount"), data.get("notify_url")
        if not isinstance(description, str) or not description or len(description) > 127:
            raise V3Error(400, "PARAM_ERROR", "description参数错误")
        if not isinstance(no, str) or not _OUT_TRADE_NO.match(no):
            raise V3Error(400, "PARAM_ERROR", "out_trade_no参数错误")
        if not isinstance(notify_url, str) or not notify_url.startswith(("https://", "http://")):
            raise V3Error(400, "PARAM_ERROR", "notify_url参数错误")
        total = amount.get("total") if isinstance(amount, dict) else None
        if not isinstance(total, int) or isinstance(total, bool) or total <= 0 \
                or amount.get("currency", "CNY") != "CNY":
            raise V3Error(400, "PARAM_ERROR", "amount参数错误")
        payer = data.get("payer") if isinstance(data.get("payer"), dict) else {}
        openid = payer.get("openid") if kind == "jsapi" else ""
        if kind == "jsapi" and (not isinstance(openid, str) or not openid):
            raise V3Error(400, "PARAM_ERROR", "JSAPI下单必须传payer.openid")
        attach = data.get("attach") or ""
        if not isinstance(attach, str) or len(attach) > 128:
            raise V3Error(400, "PARAM_ERROR", "attach参数错误")
        expire = None
        if data.get("time_expire") is not None:
            try:
                expire = datetime.fromisoformat(str(data["time_expire"]))
            except ValueError:
                raise V3Error(400, "PARAM_ERROR", "time_expire格式错误，应为RFC3339") from None
            if expire.tzinfo is None or expire < china_now() + timedelta(minutes=1):
                raise V3Error(400, "PARAM_ERROR", "time_expire时间过短")
        trade_type = kind.upper()
        with emu._locked(no):
            order = emu.load_order(no)
            if order is not None:
                emu._expire_if_due(order)
                if order["state"] in ("SUCCESS", "REFUND"):
                    raise V3Error(400, "ORDERPAID", "该订单已支付")
                if order["state"] == "CLOSED":
                    raise V3Error(400, "ORDER_CLOSED", "订单已关闭")
                mine = {"total_fee": str(total), "trade_type": trade_type, "openid": openid or "",
                        "body": description, "product_id": ""}
                if any(order.get(k, "") != v for k, v in mine.items()):
                    raise V3Error(403, "OUT_TRADE_NO_USED", "商户订单号重复")
                if order["prepay_expires"] > time.time():
                    return 200, self._prepay_answer(order)
            now = china_now()
            order = {
                "out_trade_no": no, "total_fee": str(total), "trade_type": trade_type, "openid": openid or "",
                "body": description, "notify_url": notify_url, "product_id": "", "attach": attach,
                "state": "NOTPAY", "transaction_id": "", "time_end": "",
                "prepay_id": "wx" + now.strftime("%d%H%M%S") + secrets.token_hex(13),
                "prepay_expires": time.time() + emu.prepay_ttl, "code_url": "",
                "time_expire": expire.timestamp() if expire else None, "created": time.time(), "refunds": [],
                "sign_type": "RSA", "api": "v3",
            }
            if trade_type == "NATIVE":
                order["code_url"] = "weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(9)
                emu.store.set("sandbox:codeurl:" + order["code_url"], no, ttl=min(7200, emu.prepay_ttl))
            emu.store.set("sandbox:prepay:" + order["prepay_id"], no, ttl=emu.prepay_ttl)
            emu.save_order(order)
        return 200, self._prepay_answer(order)

    @staticmethod
    def _prepay_answer(order: dict[str, Any]) -> dict[str, Any]:
        # v3 NATIVE answers only the code_url; its prepay_id stays WeChat's own business.
        return {"code_url": order["code_url"]} if order["trade_type"] == "NATIVE" else {"prepay_id": order["prepay_id"]}

    def transaction(self, order: dict[str, Any]) -> dict[str, Any]:
        """An order as v3's query answer and payment notification describe it."""
        state = order["state"]
        out: dict[str, Any] = {
            "appid": self.merchant.appid, "mchid": self.merchant.mch_id, "out_trade_no": order["out_trade_no"],
            "trade_type": order["trade_type"], "trade_state": state,
            "trade_state_desc": {"SUCCESS": "支付成功", "REFUND": "转入退款", "NOTPAY": "未支付",
                                 "CLOSED": "已关闭"}.get(state, ""),
            "attach": order.get("attach", ""),
            "amount": {"total": int(order["total_fee"]), "currency": "CNY"},
        }
        payer = self.emu.payer_openid(order)
        if payer:  # a NATIVE or APP order has a payer only once someone paid it
            out["payer"] = {"openid": payer}
        if state in ("SUCCESS", "REFUND"):
            paid = int(order["paid_fee"])
            ended = parse_wechat_time(order["time_end"]) or china_now()
            out.update(transaction_id=order["transaction_id"], bank_type="OTHERS", success_time=rfc3339(ended))
            out["amount"] = {"total": paid, "payer_total": paid, "currency": "CNY", "payer_currency": "CNY"}
        return out

    def query(self, data: dict[str, Any], mchid: str, out_trade_no: str = "", transaction_id: str = ""
              ) -> tuple[int, dict[str, Any]]:
        emu = self.emu
        emu._count("orderquery")
        if mchid != self.merchant.mch_id:
            raise V3Error(400, "PARAM_ERROR", "mchid参数错误")
        no = out_trade_no or (emu.store.get("sandbox:txn:" + transaction_id) if transaction_id else "")
        order = emu.load_order(no) if no else None
        if order is None:
            raise V3Error(404, "ORDER_NOT_EXIST", "订单不存在")
        emu._expire_if_due(order)
        return 200, self.transaction(order)

    def close(self, out_trade_no: str, data: dict[str, Any]) -> tuple[int, None]:
        emu = self.emu
        emu._count("closeorder")
        self._ours(data, check_appid=False)
        with emu._locked(out_trade_no):
            order = emu.load_order(out_trade_no)
            if order is None:
                raise V3Error(404, "ORDER_NOT_EXIST", "订单不存在")
            if order["state"] in ("SUCCESS", "REFUND"):
                raise V3Error(400, "ORDERPAID", "订单已支付，不能关单")
            order["state"] = "CLOSED"
            emu.save_order(order)
        return 204, None

    # -- /v3/refund/domestic/refunds ---------------------------------------------------------------------

    def refund(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        emu = self.emu
        emu._count("refund")
        failing = self.refunds._take_failure()
        if failing:
            status, code = _V3_FAILURE.get(failing, (400, failing))
            raise V3Error(status, code, ERR_DESCRIPTIONS.get(failing, "退款失败"))
        out_refund_no, amount = data.get("out_refund_no"), data.get("amount")
        if not isinstance(out_refund_no, str) or not out_refund_no or len(out_refund_no) > 64:
            raise V3Error(400, "PARAM_ERROR", "out_refund_no参数错误")
        fee = amount.get("refund") if isinstance(amount, dict) else None
        total = amount.get("total") if isinstance(amount, dict) else None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (fee, total)) \
                or amount.get("currency") != "CNY":
            raise V3Error(400, "PARAM_ERROR", "amount参数错误")
        no = data.get("out_trade_no") or ""
        if data.get("transaction_id"):
            no = emu.store.get("sandbox:txn:" + str(data["transaction_id"])) or ""
            if not no:
                raise V3Error(400, "INVALID_REQUEST", "无效的transaction_id")
        if not no:
            raise V3Error(400, "PARAM_ERROR", "transaction_id和out_trade_no必须填一个")
        with emu._locked(no):
            order = emu.load_order(no)
            if order is None:
                raise V3Error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
            if order["state"] not in ("SUCCESS", "REFUND"):
                raise V3Error(400, "INVALID_REQUEST", "订单未支付，不能退款")
            paid = int(order["paid_fee"])
            refunds = order.setdefault("refunds", [])
            existing = next((r for r in refunds if r["out_refund_no"] == out_refund_no), None)
            if existing is not None:  # the same refund again: the same answer, nothing new happens
                if existing["refund_fee"] != fee or total != paid:
                    raise V3Error(400, "INVALID_REQUEST", "订单金额或退款金额与之前请求不一致")
                return 200, self.refund_view(order, existing)
            if total != paid:
                raise V3Error(400, "INVALID_REQUEST", "订单金额与实际支付金额不一致")
            refunded = sum(r["refund_fee"] for r in refunds if r["status"] != "REFUNDCLOSE")
            if fee > paid - refunded:
                raise V3Error(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
            refund = {"out_refund_no": out_refund_no, "refund_fee": fee, "status": "PROCESSING",
                      "refund_id": emu.refund_id(),
                      "notify_url": data.get("notify_url") or "", "success_time": "", "created": time.time(),
                      "api": "v3"}
            refunds.append(refund)
            order["state"] = "REFUND"
            emu.save_order(order)
            emu.store.set(self.refunds._refund_key(out_refund_no), no, ttl=ORDER_TTL)
        emu.bills.index(no)
        answer = self.refund_view(order, refund)
        if not self.refunds.behaviour().get("hold_notifications"):
            if self.deliver_in_background:
                emu.spawn(self.refunds.settle, out_refund_no, name=f"sandbox-v3-refund-{out_refund_no}")
            else:
                self.refunds.settle(out_refund_no)
        return 200, answer

    def refund_view(self, order: dict[str, Any], refund: dict[str, Any]) -> dict[str, Any]:
        paid, fee = int(order["paid_fee"]), int(refund["refund_fee"])
        out: dict[str, Any] = {
            "refund_id": refund["refund_id"], "out_refund_no": refund["out_refund_no"],
            "transaction_id": order["transaction_id"], "out_trade_no": order["out_trade_no"], "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": rfc3339(datetime.fromtimestamp(refund.get("created") or time.time(), timezone.utc)),
            "status": _V3_STATE.get(refund["status"], "PROCESSING"), "funds_account": "AVAILABLE",
            "amount": {"total": paid, "refund": fee, "payer_total": paid, "payer_refund": fee,
                       "settlement_total": paid, "settlement_refund": fee, "discount_refund": 0, "currency": "CNY"},
        }
        if refund.get("success_time"):
            out["success_time"] = _refund_time(refund["success_time"])
        return out

    def refund_query(self, out_refund_no: str) -> tuple[int, dict[str, Any]]:
        self.emu._count("refundquery")
        found = self.refunds._find(out_refund_no)
        if found is None:
            raise V3Error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return 200, self.refund_view(*found)

    # -- /v3/certificates ------------------------------------------------------------------------------

    def certificates(self) -> tuple[int, dict[str, Any]]:
        encrypted = v3crypto.encrypt_resource(self.keys.platform_cert_pem.encode("ascii"), self.apiv3_key,
                                              "certificate")
        return 200, {"data": [{"serial_no": self.keys.platform_serial,
                               "effective_time": rfc3339(self.keys.platform_not_before),
                               "expire_time": rfc3339(self.keys.platform_not_after),
                               "encrypt_certificate": encrypted}]}

    # -- the person holding the phone ------------------------------------------------------------------

    def pay_with_params(self, params: dict[str, Any]) -> dict[str, Any]:
        if "paySign" in params:  # JSAPI: wx.requestPayment with signType RSA
            names = ("appId", "timeStamp", "nonceStr", "package")
            given, trade_type = params.get("paySign"), "JSAPI"
        else:  # APP: the SDK's PayReq, v3 rule
            names = ("appid", "timestamp", "noncestr", "prepayid")
            given, trade_type = params.get("sign"), "APP"
        fields = {k: params.get(k) for k in names}
        if trade_type == "JSAPI":  # wx.requestPayment is not given appId: the mini-program's own is signed
            fields["appId"] = fields["appId"] or self.merchant.appid
        if any(not isinstance(v, (str, int)) or v == "" for v in fields.values()) or not isinstance(given, str):
            raise SandboxError(400, "invalid_params", "every field of the pay parameters is required")
        message = "".join(f"{fields[k]}\n" for k in names).encode("utf-8")
        if not v3signing.verify(message, given, self.merchant_public_key):
            raise SandboxError(400, "bad_pay_sign", "the pay parameters' signature does not verify")
        if trade_type == "JSAPI":
            package = str(fields["package"])
            prepay_id = package[len("prepay_id="):] if package.startswith("prepay_id=") else ""
            ours = fields["appId"] == self.merchant.appid
        else:
            prepay_id = str(fields["prepayid"])
            ours = fields["appid"] == self.merchant.appid and params.get("partnerid") == self.merchant.mch_id \
                and params.get("package") == "Sign=WXPay"
        if not ours:
            raise SandboxError(400, "invalid_params", "appid, partnerid or package is not this merchant's")
        no = self.emu.store.get("sandbox:prepay:" + prepay_id)
        if not no:
            raise SandboxError(400, "prepay_expired", "this prepay_id is unknown or has expired")
        return self.emu.pay_order(no, presented=("prepay_id", prepay_id, trade_type))

    # -- notifications ------------------------------------------------------------------------------------

    def _envelope(self, event_type: str, summary: str, original_type: str, plain: Mapping[str, Any]) -> bytes:
        resource = v3crypto.encrypt_resource(json.dumps(plain, ensure_ascii=False).encode("utf-8"), self.apiv3_key,
                                             original_type, original_type)
        return json.dumps({"id": str(uuid.uuid4()), "create_time": rfc3339(china_now()),
                           "resource_type": "encrypt-resource", "event_type": event_type, "summary": summary,
                           "resource": resource}, ensure_ascii=False).encode("utf-8")

    def payment_notification(self, order: dict[str, Any]) -> bytes:
        return self._envelope("TRANSACTION.SUCCESS", "支付成功", "transaction", self.transaction(order))

    def refund_notification(self, order: dict[str, Any], refund: dict[str, Any]) -> bytes:
        view = self.refund_view(order, refund)
        plain = {"mchid": self.merchant.mch_id, "out_trade_no": order["out_trade_no"],
                 "transaction_id": order["transaction_id"], "out_refund_no": refund["out_refund_no"],
                 "refund_id": refund["refund_id"], "refund_status": view["status"],
                 "user_received_account": view["user_received_account"],
                 "amount": {k: view["amount"][k] for k in ("total", "refund", "payer_total", "payer_refund")}}
        if "success_time" in view:
            plain["success_time"] = view["success_time"]
        event = _REFUND_EVENT.get(refund["status"], "REFUND.ABNORMAL")
        return self._envelope(event, "退款状态变更", "refund", plain)

    def deliver_payment(self, order: dict[str, Any]) -> dict[str, Any]:
        body = self.payment_notification(order)
        return self._deliver(order["notify_url"], body, {"out_trade_no": order["out_trade_no"], "kind": "payment"})

    def deliver_refund(self, order: dict[str, Any], refund: dict[str, Any]) -> dict[str, Any]:
        tags = {"out_trade_no": order["out_trade_no"], "out_refund_no": refund["out_refund_no"], "kind": "refund"}
        url = refund.get("notify_url") or ""
        if not url:  # WeChat would use the merchant platform's setting; the sandbox has none
            return self.emu.log_attempt(url, {**tags, "api": "v3"}, 1, time.time(), 0, False,
                                        "no notify_url in the refund request")
        return self._deliver(url, self.refund_notification(order, refund), tags)

    def _deliver(self, url: str, body: bytes, tags: dict[str, str]) -> dict[str, Any]:
        def post() -> tuple[int, bytes]:
            key, serial = self._signing_key()  # signed afresh each attempt: v3 signatures age out in 5 minutes
            headers = {"Content-Type": "application/json", **v3signing.answer_headers(body, key, serial)}
            return self.send(url, body, headers)

        return self.emu.deliver_with_retries(url, {**tags, "api": "v3"}, post,
                                             lambda status, _answer: status in (200, 204))


def _refund_time(value: str) -> str:
    try:
        return rfc3339(datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA))
    except ValueError:
        return value


class SandboxEmulator(Emulator):
    """The emulator, with v3 orders paid by RSA-signed parameters and notified the v3 way.

    `v3_factory` builds the v3 desk on first need (in any worker: the order may have been
    made by another one), so that v2-only use never generates keys.
    """

    v3_factory: Callable[[], V3Desk] | None = None
    _v3: V3Desk | None = None
    _v3_lock = threading.Lock()

    @property
    def v3(self) -> V3Desk | None:
        if self._v3 is None and self.v3_factory is not None:
            with self._v3_lock:
                if self._v3 is None:
                    self._v3 = self.v3_factory()
        return self._v3

    def pay_with_params(self, params: dict[str, Any]) -> dict[str, Any]:
        if isinstance(params, dict) and self.v3_factory is not None and self._is_v3(params):
            assert self.v3 is not None
            return self.v3.pay_with_params(params)
        return super().pay_with_params(params)

    def _is_v3(self, params: dict[str, Any]) -> bool:
        """signType RSA (JSAPI), or the APP prepayid of a v3 order."""
        if "paySign" in params:
            return params.get("signType") == "RSA"
        if "prepayid" in params:
            no = self.store.get("sandbox:prepay:" + str(params.get("prepayid")))
            order = self.load_order(no) if no else None
            return bool(order and order.get("api") == "v3")
        return False

    def deliver(self, order: dict[str, Any]) -> dict[str, Any]:
        if order.get("api") == "v3" and self.v3 is not None:
            return self.v3.deliver_payment(order)
        return super().deliver(order)


class SandboxRefundDesk(RefundDesk):
    """The refund desk, with v3 refunds notified the v3 way."""

    def deliver(self, order: dict[str, Any], refund: dict[str, Any]) -> dict[str, Any]:
        v3 = getattr(self.emu, "v3", None)
        if refund.get("api") == "v3" and v3 is not None:
            return v3.deliver_refund(order, refund)
        return super().deliver(order, refund)
