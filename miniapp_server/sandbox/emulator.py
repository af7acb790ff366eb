"""A faithful emulator of WeChat's servers for one mini-program and one merchant.

It keeps its state in the store (so every worker process sees the same orders),
checks signatures as WeChat does and answers WeChat's own codes. It knows nothing
of Flask; the routes in `routes.py` put it on the web.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..store import Store
from ..wechat.numbers import ascii_uint
from ..wechat.pay import signing, xmlcodec
from ..wechat.times import china_now, parse_wechat_time, wechat_time
from .tokens import TokenAuthority

PREPAY_TTL = 7200
CODE_URL_TTL = 7200
ORDER_TTL = 7 * 24 * 3600
# WeChat's current notification schedule after the first attempt, in seconds.
RETRY_SCHEDULE = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
SPECIAL_CODES = {
    "bad-code": (40029, "invalid code"),
    "busy": (-1, "system error"),
    "frequent": (45011, "api minute-quota reach limit mostly 100/min"),
}


@dataclass
class Merchant:
    appid: str
    secret: str
    mch_id: str
    api_key: str
    sign_type: str = signing.MD5

    def __repr__(self) -> str:
        return f"Merchant(appid={self.appid!r}, mch_id={self.mch_id!r})"


class SandboxError(Exception):
    """A control call that cannot be done; `status` and `code` go into the JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# A function that posts `body` to `url` and gives back (HTTP status, answer body).
Sender = Callable[[str, bytes], tuple[int, bytes]]
# One delivery attempt of a prepared notification, and the reading of the merchant's answer.
Post = Callable[[], tuple[int, bytes]]
Acknowledged = Callable[[int, bytes], bool]


def v2_acknowledged(status: int, answer: bytes) -> bool:
    """WeChat Pay v2 stops retrying once the merchant answers `return_code` SUCCESS."""
    try:
        return status == 200 and xmlcodec.loads(answer).get("return_code") == "SUCCESS"
    except xmlcodec.XMLError:
        return False


class Emulator:
    def __init__(self, store: Store, merchant: Merchant, sender: Sender, time_scale: float = 1.0,
                 prepay_ttl: float = PREPAY_TTL) -> None:
        self.store = store
        self.merchant = merchant
        self.sender = sender
        self.time_scale = time_scale
        self.sleep = self._pause  # between retries; tests watch it
        # Retry and settlement threads: `close()` stops them, so none outlives its app (a test's teardown,
        # a process that stops) and writes into whatever database comes next.
        self._closing = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        # WeChat's prepay_id and NATIVE code_url live two hours; tests shorten it to watch a renewal.
        self.prepay_ttl = prepay_ttl
        # Whether a notify URL names the app this emulator lives in: those are handed to the app in-process
        # (first attempt at once); any other host gets its notification over HTTP from a background thread.
        self.names_app: Callable[[str], bool] = lambda url: False

    # -- background work ----------------------------------------------------------------------

    def spawn(self, target: Callable[..., Any], *args: Any, name: str) -> None:
        """Run `target(*args)` on a daemon thread that `close()` waits for."""
        if self._closing.is_set():
            return

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._threads_lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, daemon=True, name=name)
        with self._threads_lock:
            self._threads.add(thread)
        thread.start()

    def _pause(self, seconds: float) -> None:
        self._closing.wait(seconds)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def close(self, timeout: float = 10.0) -> list[str]:
        """Stop retrying: wake every sleeping retry thread, let each finish the attempt it is in, and wait
        for them. Returns the names of threads still running after `timeout` (none, normally)."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]

    # -- api.weixin.qq.com ----------------------------------------------------------------------

    def openid_for(self, code: str) -> str:
        # "alice#1" and "alice#2" are two logins of one person; any other code is its own person.
        who = code.split("#", 1)[0]
        digest = hashlib.sha256(f"{self.merchant.appid}:{who}".encode()).digest()
        return "o" + base64.urlsafe_b64encode(digest).decode()[:27]

    def jscode2session(self, args: dict[str, str]) -> dict[str, Any]:
        self._count("jscode2session")
        if args.get("appid") != self.merchant.appid:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if not secrets.compare_digest(args.get("secret", "").encode(), self.merchant.secret.encode()):
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        if args.get("grant_type") != "authorization_code":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        code = args.get("js_code", "")
        if not code:
            return {"errcode": 41008, "errmsg": "missing code"}
        if code in SPECIAL_CODES:
            errcode, errmsg = SPECIAL_CODES[code]
            return {"errcode": errcode, "errmsg": errmsg}
        openid = self.openid_for(code)
        self.store.set(self._user_key(openid), "1", ttl=ORDER_TTL)  # WeChat knows its users: subscribe/send checks
        return {"openid": openid, "session_key": base64.b64encode(secrets.token_bytes(16)).decode()}

    def _user_key(self, openid: str) -> str:
        return f"sandbox:{self.merchant.appid}:user:{openid}"

    def is_user(self, openid: str) -> bool:
        """Has this openid logged in to the mini-program (so WeChat would know it)?"""
        return bool(openid) and self.store.get(self._user_key(openid)) is not None

    def meet(self, openid: str) -> None:
        self.store.set(self._user_key(openid), "1", ttl=ORDER_TTL)

    @property
    def bills(self):
        """The daily bills of this merchant's trades (sandbox/bills.py)."""
        from .bills import BillDesk

        return BillDesk(self)

    # Access tokens and the calls that need one live in tokens.py.
    @property
    def tokens(self) -> TokenAuthority:
        return TokenAuthority(self.store, self.merchant.appid, self.merchant.secret, self._count)

    def access_token(self, args: dict[str, str]) -> dict[str, Any]:
        return self.tokens.token(args)

    def stable_token(self, body: object) -> dict[str, Any]:
        return self.tokens.stable_token(body)

    def getuserphonenumber(self, access_token: str, body: object) -> dict[str, Any]:
        return self.tokens.getuserphonenumber(access_token, body)

    def _count(self, name: str) -> None:
        self.store.incr(f"sandbox:calls:{name}", ttl=ORDER_TTL)

    def call_count(self, name: str) -> int:
        return int(self.store.get(f"sandbox:calls:{name}") or 0)

    # -- api.mch.weixin.qq.com ------------------------------------------------------------------

    def _answer(self, fields: dict[str, Any], sign_type: str) -> bytes:
        data = {"return_code": "SUCCESS", "return_msg": "OK", "appid": self.merchant.appid,
                "mch_id": self.merchant.mch_id, "nonce_str": signing.nonce(), **fields}
        if sign_type != signing.MD5:
            data["sign_type"] = sign_type
        data["sign"] = signing.sign(data, self.merchant.api_key, sign_type)
        return xmlcodec.dumps(data)

    @staticmethod
    def _fail(message: str) -> bytes:
        return xmlcodec.dumps({"return_code": "FAIL", "return_msg": message})

    def _result_fail(self, err_code: str, des: str, sign_type: str) -> bytes:
        return self._answer({"result_code": "FAIL", "err_code": err_code, "err_code_des": des}, sign_type)

    def _verified(self, body: bytes) -> tuple[dict[str, str] | None, bytes | None, str]:
        """The request's fields if WeChat would accept them, else the answer WeChat would give."""
        try:
            data = xmlcodec.loads(body)
        except xmlcodec.XMLError:
            return None, self._fail("XML格式错误"), signing.MD5
        sign_type = data.get("sign_type") or signing.MD5
        if sign_type not in signing.SIGN_TYPES:
            return None, self._fail("sign_type参数错误"), signing.MD5
        if data.get("mch_id") != self.merchant.mch_id:
            return None, self._fail("mch_id参数格式错误"), sign_type
        if data.get("appid") != self.merchant.appid:
            return None, self._fail("appid和mch_id不匹配"), sign_type
        if not data.get("nonce_str"):
            return None, self._fail("缺少参数nonce_str"), sign_type
        if not signing.verify(data, self.merchant.api_key, sign_type):
            return None, self._fail("签名错误"), sign_type
        return data, None, sign_type

    def _order_key(self, out_trade_no: str) -> str:
        return f"sandbox:{self.merchant.mch_id}:order:{out_trade_no}"

    def load_order(self, out_trade_no: str) -> dict[str, Any] | None:
        raw = self.store.get(self._order_key(out_trade_no))
        return json.loads(raw) if raw else None

    def save_order(self, order: dict[str, Any]) -> None:
        self.store.set(self._order_key(order["out_trade_no"]), json.dumps(order), ttl=ORDER_TTL)

    def _locked(self, out_trade_no: str):
        return self.store.lock(f"sandbox-order:{self.merchant.mch_id}:{out_trade_no}", timeout=30, wait=15)

    def unifiedorder(self, body: bytes) -> bytes:
        self._count("unifiedorder")
        data, failure, sign_type = self._verified(body)
        if failure:
            return failure
        assert data is not None
        for name in ("body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type"):
            if not data.get(name):
                return self._result_fail("PARAM_ERROR", f"缺少参数{name}", sign_type)
        trade_type = data["trade_type"]
        if trade_type not in ("JSAPI", "NATIVE", "APP", "MWEB"):
            return self._result_fail("PARAM_ERROR", "trade_type参数错误", sign_type)
        if trade_type == "JSAPI" and not data.get("openid"):
            return self._result_fail("PARAM_ERROR", "JSAPI支付必须传openid", sign_type)
        if trade_type == "NATIVE" and not data.get("product_id"):
            return self._result_fail("PARAM_ERROR", "NATIVE支付必须传product_id", sign_type)
        if not ascii_uint(data["total_fee"], max_digits=10):  # WeChat: an integer of fen, more than 0
            return self._result_fail("PARAM_ERROR", "total_fee参数错误", sign_type)
        if len(data["out_trade_no"]) > 32:
            return self._result_fail("PARAM_ERROR", "out_trade_no参数长度有误", sign_type)
        now = china_now()
        expire = parse_wechat_time(data.get("time_expire", "")) if data.get("time_expire") else None
        if data.get("time_expire") and (expire is None or expire < now + timedelta(minutes=1)):
            return self._result_fail("PARAM_ERROR", "time_expire时间过短，刷卡至少1分钟，其他5分钟", sign_type)
        no = data["out_trade_no"]
        with self._locked(no):
            order = self.load_order(no)
            if order is not None:
                self._expire_if_due(order)  # past its time_expire the trade is closed, not renewable
                if order["state"] == "SUCCESS" or order["state"] == "REFUND":
                    return self._result_fail("ORDERPAID", "该订单已支付", sign_type)
                if order["state"] == "CLOSED":
                    return self._result_fail("ORDERCLOSED", "该订单已关", sign_type)
                same = all(order.get(k, "") == data.get(k, "")
                           for k in ("total_fee", "trade_type", "openid", "body", "product_id"))
                if not same:
                    return self._result_fail("INVALID_REQUEST", "201 商户订单号重复", sign_type)
                if order["prepay_expires"] > time.time():  # the same order again: the same prepay
                    return self._answer(self._prepay_fields(order), sign_type)
                # The prepay (and code_url) expired but the trade is still open: the same trade gets a
                # new prepay_id and code_url; the old ones stay dead. Still one trade, one payment.
            order = {
                "out_trade_no": no, "total_fee": data["total_fee"], "trade_type": trade_type,
                "openid": data.get("openid", "") or "", "body": data["body"], "notify_url": data["notify_url"],
                "product_id": data.get("product_id", "") or "",
                "attach": data.get("attach", ""), "state": "NOTPAY", "transaction_id": "", "time_end": "",
                "prepay_id": "wx" + now.strftime("%d%H%M%S") + secrets.token_hex(13),
                "prepay_expires": time.time() + self.prepay_ttl,
                "code_url": "", "time_expire": expire.timestamp() if expire else None,
                "created": time.time(), "refunds": [], "sign_type": sign_type,
            }
            if trade_type == "NATIVE":
                order["code_url"] = "weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(9)
                self.store.set("sandbox:codeurl:" + order["code_url"], no, ttl=min(CODE_URL_TTL, self.prepay_ttl))
            self.store.set("sandbox:prepay:" + order["prepay_id"], no, ttl=self.prepay_ttl)
            self.save_order(order)
        return self._answer(self._prepay_fields(order), sign_type)

    @staticmethod
    def _prepay_fields(order: dict[str, Any]) -> dict[str, Any]:
        fields = {"result_code": "SUCCESS", "trade_type": order["trade_type"], "prepay_id": order["prepay_id"]}
        if order["code_url"]:
            fields["code_url"] = order["code_url"]
        return fields

    def orderquery(self, body: bytes) -> bytes:
        self._count("orderquery")
        data, failure, sign_type = self._verified(body)
        if failure:
            return failure
        assert data is not None
        order = self.load_order(data.get("out_trade_no", "")) if data.get("out_trade_no") else None
        if order is None and data.get("transaction_id"):
            no = self.store.get("sandbox:txn:" + data["transaction_id"])
            order = self.load_order(no) if no else None
        if order is None:
            return self._result_fail("ORDERNOTEXIST", "此交易订单号不存在", sign_type)
        self._expire_if_due(order)
        fields: dict[str, Any] = {"result_code": "SUCCESS", "out_trade_no": order["out_trade_no"],
                                  "trade_state": order["state"], "trade_type": order["trade_type"],
                                  "openid": self.payer_openid(order), "attach": order["attach"]}
        if order["state"] in ("SUCCESS", "REFUND"):
            fields.update(transaction_id=order["transaction_id"], time_end=order["time_end"], total_fee=order["paid_fee"],
                          cash_fee=order["paid_fee"], fee_type="CNY", bank_type="OTHERS", is_subscribe="N")
            fields["trade_state_desc"] = "支付成功" if order["state"] == "SUCCESS" else "转入退款"
        else:
            fields["total_fee"] = order["total_fee"]
            fields["trade_state_desc"] = {"NOTPAY": "订单未支付", "CLOSED": "订单已关闭"}.get(order["state"], "")
        return self._answer(fields, sign_type)

    def _expire_if_due(self, order: dict[str, Any]) -> None:
        # WeChat closes an unpaid order itself once its time_expire has passed.
        if order["state"] == "NOTPAY" and order.get("time_expire") and order["time_expire"] < time.time():
            order["state"] = "CLOSED"
            self.save_order(order)

    def closeorder(self, body: bytes) -> bytes:
        self._count("closeorder")
        data, failure, sign_type = self._verified(body)
        if failure:
            return failure
        assert data is not None
        no = data.get("out_trade_no", "")
        with self._locked(no):
            order = self.load_order(no)
            if order is None:
                return self._result_fail("ORDERNOTEXIST", "订单不存在", sign_type)
            if order["state"] in ("SUCCESS", "REFUND"):
                return self._result_fail("ORDERPAID", "订单已支付，不能发起关单", sign_type)
            order["state"] = "CLOSED"
            self.save_order(order)
        return self._answer({"result_code": "SUCCESS"}, sign_type)

    # -- the person holding the phone -------------------------------------------------------------

    def pay_with_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Pay as `wx.requestPayment` would with these parameters (JSAPI or APP)."""
        if not isinstance(params, dict):
            raise SandboxError(400, "invalid_params", "send the object given to wx.requestPayment")
        if "paySign" in params:  # JSAPI: wx.requestPayment
            fields = {k: params.get(k) for k in ("appId", "timeStamp", "nonceStr", "package", "signType")}
            fields["appId"] = fields["appId"] or self.merchant.appid
            given, sign_type = params.get("paySign"), params.get("signType") or signing.MD5
            package = str(params.get("package") or "")
            prepay_id = package[len("prepay_id="):] if package.startswith("prepay_id=") else ""
            trade_type, ours = "JSAPI", fields["appId"] == self.merchant.appid
        elif "sign" in params and "prepayid" in params:  # APP: the SDK's PayReq
            fields = {k: params.get(k) for k in ("appid", "partnerid", "prepayid", "package", "noncestr", "timestamp")}
            given, sign_type, prepay_id = params.get("sign"), self.merchant.sign_type, str(params.get("prepayid"))
            trade_type = "APP"
            ours = fields["appid"] == self.merchant.appid and fields["partnerid"] == self.merchant.mch_id \
                and fields["package"] == "Sign=WXPay"
        else:
            raise SandboxError(400, "invalid_params", "missing paySign (JSAPI) or sign and prepayid (APP)")
        if any(not isinstance(v, (str, int)) or v == "" for v in fields.values()):
            raise SandboxError(400, "invalid_params", "every field of the pay parameters is required")
        if sign_type not in signing.SIGN_TYPES or not signing.verify({**fields, "sign": given},
                                                                    self.merchant.api_key, sign_type):
            raise SandboxError(400, "bad_pay_sign", "the pay parameters' signature does not verify")
        if not ours:
            raise SandboxError(400, "invalid_params", "appid, partnerid or package is not this merchant's")
        no = self.store.get("sandbox:prepay:" + prepay_id)
        if not no:
            raise SandboxError(400, "prepay_expired", "this prepay_id is unknown or has expired")
        return self.pay_order(no, presented=("prepay_id", prepay_id, trade_type))

    def pay_code_url(self, code_url: object, payer: object = None) -> dict[str, Any]:
        """Pay a NATIVE order as the person who scans its code would; `payer` names that person the way a
        wx.login code does (the same name, the same openid), by default the sandbox's one scanner."""
        if not isinstance(code_url, str) or not code_url:
            raise SandboxError(400, "invalid_params", "send {\"code_url\": ...}")
        if payer is not None and (not isinstance(payer, str) or not payer or len(payer) > 64):
            raise SandboxError(400, "invalid_params", "payer: a name of 1 to 64 characters, like a wx.login code")
        no = self.store.get("sandbox:codeurl:" + code_url)
        if not no:
            raise SandboxError(400, "code_url_expired", "this code_url is unknown or has expired")
        return self.pay_order(no, presented=("code_url", code_url, "NATIVE"), payer=payer)

    @staticmethod
    def transaction_id() -> str:
        # WeChat's are 28 digits: 4200 and six more, the day (yyyymmdd), ten more ("4200000483202001042069747825").
        return f"4200{secrets.randbelow(10 ** 6):06d}{china_now():%Y%m%d}{secrets.randbelow(10 ** 10):010d}"

    @staticmethod
    def refund_id() -> str:
        # WeChat's are 29 digits: 50 and eight more, the day, eleven more ("50300103182020010413419046597").
        return f"50{secrets.randbelow(10 ** 8):08d}{china_now():%Y%m%d}{secrets.randbelow(10 ** 11):011d}"

    @staticmethod
    def payer_openid(order: dict[str, Any]) -> str:
        """Who paid: the JSAPI order's openid, or the person who scanned or paid in the app."""
        return order.get("payer_openid") or order.get("openid") or ""

    def pay_order(self, out_trade_no: str, fee: int | None = None,
                  presented: tuple[str, str, str] | None = None, payer: str | None = None) -> dict[str, Any]:
        """Mark the order paid at 'WeChat', then notify the merchant (first attempt now, retries later).

        `presented` is what the phone holds, (field, value, trade_type): it must be the trade's
        current prepay_id or code_url, and of the trade's type, as at WeChat.
        """
        with self._locked(out_trade_no):
            order = self.load_order(out_trade_no)
            if order is None:
                raise SandboxError(404, "order_not_found", "no such order at the sandbox")
            if presented is not None:
                field, value, trade_type = presented
                if order.get(field) != value:
                    raise SandboxError(400, f"{field.replace('_id', '')}_expired",
                                       f"this {field} was replaced by a newer one; it cannot pay any more")
                if order["trade_type"] != trade_type:
                    raise SandboxError(400, "trade_type_mismatch",
                                       f"this is a {order['trade_type']} order; it cannot be paid as {trade_type}")
            self._expire_if_due(order)
            if order["state"] in ("SUCCESS", "REFUND"):
                raise SandboxError(409, "order_paid", "this order is already paid")
            if order["state"] == "CLOSED":
                raise SandboxError(409, "order_closed", "this order is closed")
            order.update(state="SUCCESS", transaction_id=self.transaction_id(),
                         time_end=wechat_time(china_now()), paid_fee=int(fee if fee is not None else order["total_fee"]))
            if not order["openid"]:  # NATIVE, APP: the person holding the phone, a stable openid of this appid
                order["payer_openid"] = self.openid_for(payer or "sandbox-scanner")
            self.save_order(order)
            self.store.set("sandbox:txn:" + order["transaction_id"], out_trade_no, ttl=ORDER_TTL)
        self.bills.index(out_trade_no)  # the day's bill has it
        first = self.deliver(order)
        return {"out_trade_no": out_trade_no, "transaction_id": order["transaction_id"],
                "notification": first}

    def notification_for(self, order: dict[str, Any]) -> bytes:
        fields = {
            "return_code": "SUCCESS", "result_code": "SUCCESS", "appid": self.merchant.appid,
            "mch_id": self.merchant.mch_id, "nonce_str": signing.nonce(), "openid": self.payer_openid(order),
            "is_subscribe": "N", "trade_type": order["trade_type"], "bank_type": "OTHERS",
            "total_fee": str(order["paid_fee"]), "cash_fee": str(order["paid_fee"]), "fee_type": "CNY",
            "transaction_id": order["transaction_id"], "out_trade_no": order["out_trade_no"],
            "time_end": order["time_end"], "attach": order.get("attach", ""),
        }
        sign_type = order.get("sign_type") or self.merchant.sign_type
        if sign_type != signing.MD5:
            fields["sign_type"] = sign_type
        fields["sign"] = signing.sign(fields, self.merchant.api_key, sign_type)
        return xmlcodec.dumps(fields)

    def deliver(self, order: dict[str, Any]) -> dict[str, Any]:
        """Deliver the payment notification once now; if not acknowledged, keep trying in the background."""
        body = self.notification_for(order)
        return self.deliver_with_retries(
            order["notify_url"], {"out_trade_no": order["out_trade_no"], "kind": "payment"},
            lambda: self.sender(order["notify_url"], body), v2_acknowledged)

    def deliver_with_retries(self, url: str, tags: dict[str, str], post: Post, acknowledged: Acknowledged) -> dict[str, Any]:
        """One delivery now, then WeChat's retry schedule on a thread until the merchant acknowledges.

        `post` sends the notification (v3 signs each attempt afresh, its signatures age); `acknowledged`
        reads the merchant's answer; `tags` go into every entry of /sandbox/control/notifications.
        """
        name = f"sandbox-notify-{tags.get('out_refund_no') or tags.get('out_trade_no')}"
        if not self.names_app(url):
            # Another host: over HTTP, never on the request path (a server that hangs, or that is this very
            # process behind another name, must not hold the control call); attempt 1 goes at once.
            self.spawn(self._retry, url, tags, post, acknowledged, 1, name=name)
            return {**tags, "url": url, "attempt": 1, "queued": True, "acknowledged": False}
        first = self._attempt(url, tags, post, acknowledged, 1)
        if not first["acknowledged"]:
            self.spawn(self._retry, url, tags, post, acknowledged, name=name)
        return first

    def _retry(self, url: str, tags: dict[str, str], post: Post, acknowledged: Acknowledged, first: int = 2) -> None:
        if first == 1 and self._attempt(url, tags, post, acknowledged, 1)["acknowledged"]:
            return
        for attempt, delay in enumerate(RETRY_SCHEDULE, start=2):
            self.sleep(delay * self.time_scale)
            if self.closing:
                return
            if self._attempt(url, tags, post, acknowledged, attempt)["acknowledged"]:
                return

    def _attempt(self, url: str, tags: dict[str, str], post: Post, acknowledged: Acknowledged,
                 attempt: int) -> dict[str, Any]:
        started = time.time()
        try:
            status, answer = post()
            ok = acknowledged(status, answer)
            outcome = answer[:200].decode("utf-8", "replace")
        except Exception as exc:  # the merchant's server is down: WeChat just tries again later
            status, ok, outcome = 0, False, type(exc).__name__
        return self.log_attempt(url, tags, attempt, started, status, ok, outcome)

    def log_attempt(self, url: str, tags: dict[str, str], attempt: int, started: float, status: int,
                    acknowledged: bool, answer: str) -> dict[str, Any]:
        entry = {**tags, "url": url, "attempt": attempt, "at": datetime.fromtimestamp(started, timezone.utc).isoformat(),
                 "status": status, "acknowledged": acknowledged, "answer": answer}
        self._log(entry)
        return entry

    def _log(self, entry: dict[str, Any]) -> None:
        with self.store.lock("sandbox-notifications", timeout=10, wait=10):
            entries = json.loads(self.store.get("sandbox:notifications") or "[]")
            entries.append(entry)
            self.store.set("sandbox:notifications", json.dumps(entries[-500:]))

    def notifications(self) -> list[dict[str, Any]]:
        return json.loads(self.store.get("sandbox:notifications") or "[]")
