"""The emulator's message push: the buyer confirms receipt, WeChat pushes `trade_manage_order_settlement`.

`confirm_receipt` stands in for the buyer tapping 确认收货 in WeChat's own confirmation page
(`wx.openBusinessView` with `businessType: 'weappOrderConfirm'`): WeChat refuses an order it never saw
shipped, else it records the receipt (the shipping desk's state 3) and pushes the settlement event to
the mini-program's message-push URL, signed with the Token and, in safe mode, encrypted with the
EncodingAESKey, exactly as `wechat/push.py` reads it. Each attempt is sealed afresh (a new timestamp and
nonce: a retry hours later must still be within the receiver's window) and retried on the
notification schedule until the backend answers `success` (or an empty body), as WeChat does.

`estimated: true` pushes the other variant instead: the one WeChat sends when shipping is complete,
with only `estimated_settlement_time`.

No Flask here; `push_routes.py` puts it on the web.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, Callable, Protocol
from urllib.parse import urlencode, urlsplit

from ..wechat import push
from .emulator import Emulator, SandboxError

# Shipping desk order states (sandbox/shipping.py, WeChat's get_order order_state).
AWAITING, SHIPPED, CONFIRMED, SETTLED, REFUNDED = 1, 2, 3, 4, 5
SETTLEMENT_DELAY = 10 * 86400  # WeChat settles by itself some days after shipping; the estimate says when
EVENTS_PATH = "/api/wechat/events"
MANUAL_CONFIRM = 2  # confirm_receive_method, as documented: 1 automatic, 2 the buyer confirmed

# Posts (url with query, body, content type) and gives back (status, answer body).
PushSender = Callable[[str, bytes, str], tuple[int, bytes]]


class ShippingState(Protocol):
    def order_state(self, out_trade_no: str | None = None, transaction_id: str | None = None) -> int | None: ...
    def mark_receipt_confirmed(self, out_trade_no: str | None = None, transaction_id: str | None = None
                               ) -> dict[str, Any] | None: ...


def push_acknowledged(status: int, answer: bytes) -> bool:
    """WeChat wants `success` (or an empty body) once the push is handled."""
    return status == 200 and answer.strip() in (b"success", b"")


class PushDesk:
    def __init__(self, emu: Emulator, shipping: ShippingState, sender: PushSender, token: str, aes_key: str,
                 push_url: str = "", data_format: str = "json") -> None:
        self.emu, self.shipping, self.sender = emu, shipping, sender
        self.token, self.aes_key, self.push_url, self.data_format = token, aes_key, push_url, data_format

    @property
    def original_id(self) -> str:
        """The mini-program's original id (gh_...), ToUserName of every push."""
        return "gh_" + hashlib.sha256(self.emu.merchant.appid.encode()).hexdigest()[:12]

    def confirm_receipt(self, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SandboxError(400, "invalid_params", 'send {"out_trade_no": "..."} or {"transaction_id": "..."}')
        no, txn = body.get("out_trade_no"), body.get("transaction_id")
        if not any(isinstance(v, str) and v for v in (no, txn)) or any(
                v is not None and not isinstance(v, str) for v in (no, txn)):
            raise SandboxError(400, "invalid_params", 'send {"out_trade_no": "..."} or {"transaction_id": "..."}')
        data_format = body.get("format", self.data_format)
        if data_format not in ("json", "xml"):
            raise SandboxError(400, "invalid_params", 'format is "json" or "xml"')
        if not self.token:
            raise SandboxError(409, "push_not_configured", "no WECHAT_PUSH_TOKEN: WeChat has no push URL to call")
        pay = self._paid_order(no or None, txn or None)
        state = self.shipping.order_state(out_trade_no=pay["out_trade_no"])
        if body.get("estimated"):
            if state != SHIPPED:
                raise self._refusal(state)
            message = self._message(pay, estimated_settlement_time=int(time.time()) + SETTLEMENT_DELAY)
        else:
            if state != SHIPPED:  # WeChat's page offers no confirmation twice, nor before shipping
                raise self._refusal(state)
            view = self.shipping.mark_receipt_confirmed(out_trade_no=pay["out_trade_no"])
            if view is None:
                raise self._refusal(self.shipping.order_state(out_trade_no=pay["out_trade_no"]))
            confirmed = int(view.get("confirm_receive_time") or time.time())
            packages = (view.get("shipping") or {}).get("shipping_list") or [{}]
            # Confirming receipt settles the trade: both times come together.
            message = self._message(pay, confirm_receive_method=MANUAL_CONFIRM, confirm_receive_time=confirmed,
                                    settlement_time=confirmed)
            message["shipped_time"] = int(packages[-1].get("upload_time") or message["shipped_time"])
        first = self.deliver(pay, message, data_format)
        return {"out_trade_no": pay["out_trade_no"], "transaction_id": pay["transaction_id"],
                "order_state": self.shipping.order_state(out_trade_no=pay["out_trade_no"]),
                "event": message, "push": first}

    def _paid_order(self, no: str | None, txn: str | None) -> dict[str, Any]:
        if not no and txn:
            no = self.emu.store.get("sandbox:txn:" + txn)
        pay = self.emu.load_order(no) if no else None
        if pay is None or (txn and pay.get("transaction_id") != txn):
            raise SandboxError(404, "order_not_found", "WeChat knows no such paid order")
        if pay["state"] not in ("SUCCESS", "REFUND") or not pay.get("transaction_id"):
            raise SandboxError(409, "order_not_paid", "this order is not paid: there is nothing to receive")
        return pay

    @staticmethod
    def _refusal(state: int | None) -> SandboxError:
        # What WeChat's confirmation page says, as an error the caller can read.
        if state == AWAITING or state is None:
            return SandboxError(409, "order_not_shipped", "订单未发货: WeChat has no shipping information for it yet")
        if state in (CONFIRMED, SETTLED):
            return SandboxError(409, "order_already_confirmed", "订单已确认收货: receipt was already confirmed")
        if state == REFUNDED:
            return SandboxError(409, "order_refunded", "订单已退款: a refunded order cannot be received")
        return SandboxError(409, "order_not_confirmable", f"order state {state} cannot be confirmed")

    def _message(self, pay: dict[str, Any], **times: int) -> dict[str, Any]:
        now = int(time.time())
        return {"ToUserName": self.original_id, "FromUserName": pay.get("openid") or "sandbox-openid",
                "CreateTime": now, "MsgType": "event", "Event": "trade_manage_order_settlement",
                "transaction_id": pay["transaction_id"], "merchant_id": self.emu.merchant.mch_id,
                "sub_merchant_id": "", "merchant_trade_no": pay["out_trade_no"],
                "pay_time": int(pay.get("created") or now), "shipped_time": now, **times}

    def url_for(self, pay: dict[str, Any]) -> str:
        """The message-push URL: the configured one, else the backend that gave this order's notify_url."""
        if self.push_url:
            return self.push_url
        parts = urlsplit(pay.get("notify_url") or "")
        if not parts.scheme or not parts.netloc:
            raise SandboxError(409, "no_push_url", "no push URL: set SANDBOX_PUSH_URL")
        return f"{parts.scheme}://{parts.netloc}{EVENTS_PATH}"

    def deliver(self, pay: dict[str, Any], message: dict[str, Any], data_format: str) -> dict[str, Any]:
        url = self.url_for(pay)
        cipher = push.PushCipher(self.aes_key, self.emu.merchant.appid) if self.aes_key else None
        content_type = "application/json" if data_format == "json" else "text/xml"

        def post() -> tuple[int, bytes]:
            # Sealed afresh each time: the receiver's timestamp window and nonce memory see a new push.
            query, body = push.seal_push(message, data_format, self.token, cipher, int(time.time()),
                                         str(secrets.randbelow(9 * 10 ** 9) + 10 ** 9))
            return self.sender(f"{url}?{urlencode(query)}", body, content_type)

        variant = "confirm" if message.get("confirm_receive_time") else "estimated"
        tags = {"out_trade_no": pay["out_trade_no"], "kind": f"push:{message['Event']}:{variant}"}
        return self.emu.deliver_with_retries(url, tags, post, push_acknowledged)
