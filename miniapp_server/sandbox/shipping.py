"""The emulator's order-shipping management: `/wxa/sec/order/upload_shipping_info`, `get_order`,
`is_trade_managed`, `set_msg_jump_path`, as WeChat documents them (see `wechat/shipping.py`).

As WeChat does: the access_token is checked first (40001/42001/41001, like the other wxa calls);
the order must exist at the sandbox's pay side (10060001) and be paid and not refunded (10060004);
`payer.openid` must be the payer's (10060031); the body must have WeChat's shape and limits
(47001 "data format error" otherwise: shipping_list an array of 1..15, split only for express,
`is_all_delivered` in split mode, item_desc 1..120 characters, tracking number and company for
express, a masked contact for SF); `upload_time` must be RFC 3339 and newer than the last one
(268485216). An order's shipping may be changed once after it was shipped (10060003 after that),
and never once receipt was confirmed or the trade settled (10060004).

An order's state at WeChat's side (`order_state`): 1 awaiting shipment, 2 shipped, 3 receipt
confirmed, 4 settled, 5 refunded. For the message-push half of the sandbox: `order_state()` tells
it, and `mark_receipt_confirmed()` moves an order to 3 (the buyer confirmed receipt in WeChat).

Control knobs (`set_behaviour`): `fail_next` makes the next upload answer that errcode (-1 is
WeChat busy: transient; 10060003 and the like: permanent); `lose_next_answer` applies the next
upload but answers -1, as when WeChat's answer is lost on the way; `trade_managed` is what
is_trade_managed answers (default true). Every upload is kept with its verdict (`uploads()`).

No Flask here; `routes.py` puts it on the web.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from .emulator import ORDER_TTL, Emulator

ERRORS = {
    47001: "data format error",
    10060001: "支付单不存在",
    10060003: "支付单已使用重新发货机会",
    10060004: "支付单处于不可发货的状态",
    10060031: "该笔支付单不属于 openid 所指定的用户",
    268485216: "上传时间非法，请按照 RFC 3339 格式填写",
    -1: "system error",
}
AWAITING, SHIPPED, CONFIRMED, SETTLED, REFUNDED = 1, 2, 3, 4, 5
MAX_PACKAGES = 15
MAX_ITEM_DESC = 120
MAX_UPLOADS_KEPT = 500


def _error(errcode: int, detail: str | None = None) -> dict[str, Any]:
    message = ERRORS.get(errcode, "error")
    return {"errcode": errcode, "errmsg": f"{message}: {detail}" if detail else message}


def _ok(**fields: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **fields}


class ShippingDesk:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.store = emu.store

    @property
    def _mch(self) -> str:
        return self.emu.merchant.mch_id

    def _key(self, out_trade_no: str) -> str:
        return f"sandbox:{self._mch}:shipping:{out_trade_no}"

    def _locked(self, out_trade_no: str):
        return self.store.lock(f"sandbox-shipping:{self._mch}:{out_trade_no}", timeout=30, wait=15)

    def _load(self, out_trade_no: str) -> dict[str, Any]:
        raw = self.store.get(self._key(out_trade_no))
        return json.loads(raw) if raw else {"order_state": AWAITING, "shipping_list": [], "changed": False,
                                            "finish_shipping": False, "uploads": 0}

    def _save(self, out_trade_no: str, state: dict[str, Any]) -> None:
        self.store.set(self._key(out_trade_no), json.dumps(state), ttl=ORDER_TTL)

    # -- control --------------------------------------------------------------------------------

    def behaviour(self) -> dict[str, Any]:
        return json.loads(self.store.get(f"sandbox:{self._mch}:shipping-behaviour") or "{}")

    def set_behaviour(self, changes: object) -> dict[str, Any]:
        from .emulator import SandboxError

        if not isinstance(changes, dict):
            raise SandboxError(400, "invalid_params",
                               'send {"fail_next": errcode|null, "lose_next_answer": bool, "trade_managed": bool}')
        current = self.behaviour()
        if "fail_next" in changes:
            code = changes["fail_next"]
            if code is not None and (not isinstance(code, int) or isinstance(code, bool) or code == 0):
                raise SandboxError(400, "invalid_params", "fail_next is one of WeChat's errcodes (e.g. -1), or null")
            current["fail_next"] = code
        for flag in ("lose_next_answer", "trade_managed"):
            if flag in changes:
                current[flag] = bool(changes[flag])
        self.store.set(f"sandbox:{self._mch}:shipping-behaviour", json.dumps(current))
        return current

    def _take(self, name: str) -> Any:
        with self.store.lock(f"sandbox-shipping-behaviour:{self._mch}", timeout=10, wait=10):
            current = self.behaviour()
            value = current.pop(name, None)
            if value:
                self.store.set(f"sandbox:{self._mch}:shipping-behaviour", json.dumps(current))
            return value

    def uploads(self, out_trade_no: str | None = None) -> list[dict[str, Any]]:
        items = json.loads(self.store.get(f"sandbox:{self._mch}:shipping-uploads") or "[]")
        return [i for i in items if i.get("out_trade_no") == out_trade_no] if out_trade_no else items

    def _log(self, body: object, out_trade_no: str | None, answer: dict[str, Any]) -> None:
        entry = {"at": datetime.now(timezone.utc).isoformat(), "out_trade_no": out_trade_no,
                 "verdict": "ok" if answer.get("errcode") == 0 else answer.get("errcode"),
                 "errmsg": answer.get("errmsg"), "body": body}
        with self.store.lock(f"sandbox-shipping-uploads:{self._mch}", timeout=10, wait=10):
            items = self.uploads()
            items.append(entry)
            self.store.set(f"sandbox:{self._mch}:shipping-uploads", json.dumps(items[-MAX_UPLOADS_KEPT:]))

    # -- for the message-push half of the sandbox ------------------------------------------------

    def _resolve(self, out_trade_no: str | None, transaction_id: str | None) -> str | None:
        if out_trade_no:
            return out_trade_no if self.emu.load_order(out_trade_no) else None
        if transaction_id:
            return self.store.get("sandbox:txn:" + transaction_id)
        return None

    def order_state(self, out_trade_no: str | None = None, transaction_id: str | None = None) -> int | None:
        """WeChat's order_state of a paid order (1 awaiting shipment ... 5 refunded), or None if unknown/unpaid."""
        no = self._resolve(out_trade_no, transaction_id)
        pay = self.emu.load_order(no) if no else None
        if pay is None or pay["state"] not in ("SUCCESS", "REFUND"):
            return None
        return self._state_of(no, pay)  # type: ignore[arg-type]

    def _state_of(self, no: str, pay: dict[str, Any]) -> int:
        if self._refunded(pay):
            return REFUNDED
        return int(self._load(no)["order_state"])

    @staticmethod
    def _refunded(pay: dict[str, Any]) -> bool:
        if pay.get("state") != "REFUND":
            return False
        back = sum(int(r.get("refund_fee", 0)) for r in pay.get("refunds") or [] if r.get("status") == "SUCCESS")
        return back >= int(pay.get("paid_fee") or 0) > 0

    def mark_receipt_confirmed(self, out_trade_no: str | None = None, transaction_id: str | None = None
                               ) -> dict[str, Any] | None:
        """The buyer confirms receipt in WeChat: a shipped order becomes 3. Returns get_order's `order`
        (with `confirm_receive_time`), or None when the order is unknown or not shipped (state 2)."""
        no = self._resolve(out_trade_no, transaction_id)
        pay = self.emu.load_order(no) if no else None
        if pay is None:
            return None
        with self._locked(no):  # type: ignore[arg-type]
            state = self._load(no)  # type: ignore[arg-type]
            if state["order_state"] == SHIPPED:
                state["order_state"] = CONFIRMED
                state["confirm_receive_time"] = int(time.time())
                self._save(no, state)  # type: ignore[arg-type]
            elif state["order_state"] != CONFIRMED:
                return None
        return self.view(no, pay)  # type: ignore[arg-type]

    def view(self, no: str, pay: dict[str, Any]) -> dict[str, Any]:
        """get_order's `order`."""
        state = self._load(no)
        shipping = {"delivery_mode": state.get("delivery_mode", 1), "logistics_type": state.get("logistics_type"),
                    "finish_shipping": state["finish_shipping"], "finish_shipping_count": state["uploads"],
                    "shipping_list": state["shipping_list"]}
        order = {
            "transaction_id": pay.get("transaction_id", ""), "merchant_id": self._mch, "sub_merchant_id": "",
            "merchant_trade_no": no, "description": pay.get("body", ""), "paid_amount": int(pay.get("paid_fee") or 0),
            "openid": self.emu.payer_openid(pay), "trade_create_time": int(pay.get("created", 0)),
            "pay_time": int(pay.get("created", 0)), "order_state": self._state_of(no, pay), "in_complaint": False,
            "shipping": shipping,
        }
        if state.get("confirm_receive_time"):
            order["confirm_receive_time"] = state["confirm_receive_time"]
        return order

    # -- WeChat's calls ---------------------------------------------------------------------------

    def upload_shipping_info(self, access_token: str, body: object) -> dict[str, Any]:
        self.emu._count("upload_shipping_info")
        refused = self.emu.tokens.refusal(access_token)
        if refused:
            return refused
        no = None
        if isinstance(body, dict) and isinstance(body.get("order_key"), dict):
            no = self._order_no(body["order_key"])
        forced = self._take("fail_next")
        if forced:
            answer = _error(int(forced), "(the sandbox's fail_next)")
        else:
            answer = self._upload(body)
            if answer.get("errcode") == 0 and self._take("lose_next_answer"):
                answer = _error(-1, "(the sandbox's lose_next_answer: applied, answer lost)")
        self._log(body, no, answer)
        return answer

    def _order_no(self, key: dict[str, Any]) -> str | None:
        kind = key.get("order_number_type")
        if kind == 1:
            if key.get("mchid") != self._mch or not isinstance(key.get("out_trade_no"), str):
                return None
            return key["out_trade_no"] if self.emu.load_order(key["out_trade_no"]) else None
        if kind == 2 and isinstance(key.get("transaction_id"), str):
            return self.store.get("sandbox:txn:" + key["transaction_id"])
        return None

    def _upload(self, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            return _error(47001)
        key = body.get("order_key")
        if not isinstance(key, dict) or key.get("order_number_type") not in (1, 2):
            return _error(47001, "order_key")
        if key["order_number_type"] == 1 and not (key.get("mchid") and key.get("out_trade_no")):
            return _error(47001, "order_key needs mchid and out_trade_no")
        if key["order_number_type"] == 2 and not key.get("transaction_id"):
            return _error(47001, "order_key needs transaction_id")
        shape = self._shape_error(body)
        if shape:
            return _error(47001, shape)
        upload_time = _rfc3339(body.get("upload_time"))
        if upload_time is None:
            return _error(268485216)
        no = self._order_no(key)
        pay = self.emu.load_order(no) if no else None
        if pay is None or pay["state"] not in ("SUCCESS", "REFUND"):
            return _error(10060001)
        payer = body.get("payer")
        openid = payer.get("openid") if isinstance(payer, dict) else None
        if not isinstance(openid, str) or not openid:
            return _error(47001, "payer.openid")
        payer_openid = self.emu.payer_openid(pay)
        if payer_openid and openid != payer_openid:
            return _error(10060031)
        with self._locked(no):  # type: ignore[arg-type]
            state = self._load(no)  # type: ignore[arg-type]
            current = self._state_of(no, pay)  # type: ignore[arg-type]
            if current in (CONFIRMED, SETTLED, REFUNDED):
                return _error(10060004)
            if state.get("last_upload_time") and upload_time <= state["last_upload_time"]:
                return _error(268485216, "upload_time must be newer than the last upload's")
            split = body["delivery_mode"] == 2
            packages = [self._package(p, upload_time) for p in body["shipping_list"]]
            if current == SHIPPED:
                changes_mode = body["delivery_mode"] != state.get("delivery_mode") or \
                    body["logistics_type"] != state.get("logistics_type")
                if state["finish_shipping"] or changes_mode:  # re-shipping: once per pay order
                    if state["changed"]:
                        return _error(10060003)
                    state["changed"] = True
                    state["shipping_list"] = []
            if split and not state["finish_shipping"] and state.get("delivery_mode") == 2:
                if len(state["shipping_list"]) + len(packages) > MAX_PACKAGES:
                    return _error(47001, f"at most {MAX_PACKAGES} packages")
                state["shipping_list"] = state["shipping_list"] + packages
            else:
                state["shipping_list"] = packages
            state.update(delivery_mode=body["delivery_mode"], logistics_type=body["logistics_type"],
                         last_upload_time=upload_time, uploads=state["uploads"] + 1)
            if not split or body.get("is_all_delivered"):
                state["finish_shipping"] = True
                state["order_state"] = SHIPPED
            self._save(no, state)  # type: ignore[arg-type]
        return _ok()

    @staticmethod
    def _shape_error(body: dict[str, Any]) -> str | None:
        logistics, mode, items = body.get("logistics_type"), body.get("delivery_mode"), body.get("shipping_list")
        if logistics not in (1, 2, 3, 4) or isinstance(logistics, bool):
            return "logistics_type"
        if mode not in (1, 2) or isinstance(mode, bool):
            return "delivery_mode"
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_PACKAGES:
            return "shipping_list must be an array of 1 to 15"
        if mode == 1 and len(items) != 1:
            return "unified delivery has one package"
        if mode == 2 and logistics != 1:
            return "分拆发货仅支持使用物流快递发货"
        if mode == 2 and not isinstance(body.get("is_all_delivered"), bool):
            return "is_all_delivered is required in split mode"
        for item in items:
            if not isinstance(item, dict):
                return "shipping_list entries are objects"
            desc = item.get("item_desc")
            if not isinstance(desc, str) or not desc or len(desc) > MAX_ITEM_DESC:
                return "item_desc is 1 to 120 characters"
            if logistics == 1:
                for name in ("tracking_no", "express_company"):
                    value = item.get(name)
                    if not isinstance(value, str) or not value or len(value.encode()) > 128:
                        return f"{name} is required for express (1 to 128 bytes)"
                contact = item.get("contact")
                if contact is not None and not isinstance(contact, dict):
                    return "contact is an object"
                contact = contact or {}
                for name in ("consignor_contact", "receiver_contact"):
                    value = contact.get(name)
                    if value and (not isinstance(value, str) or "*" not in value or not value[-4:].isdigit()):
                        return f"{name} must be masked, its last four digits in clear"
                if item["express_company"] == "SF" and not (contact.get("consignor_contact")
                                                            or contact.get("receiver_contact")):
                    return "SF Express needs contact.receiver_contact or contact.consignor_contact"
        return None

    @staticmethod
    def _package(item: dict[str, Any], upload_time: float) -> dict[str, Any]:
        out = {"tracking_no": item.get("tracking_no", ""), "express_company": item.get("express_company", ""),
               "goods_desc": item["item_desc"], "upload_time": int(upload_time)}
        if item.get("contact"):
            out["contact"] = item["contact"]
        return out

    def get_order(self, access_token: str, body: object) -> dict[str, Any]:
        self.emu._count("get_order")
        refused = self.emu.tokens.refusal(access_token)
        if refused:
            return refused
        if not isinstance(body, dict):
            return _error(47001)
        if body.get("transaction_id"):
            no = self.store.get("sandbox:txn:" + str(body["transaction_id"]))
        elif body.get("merchant_id") == self._mch and body.get("merchant_trade_no"):
            no = str(body["merchant_trade_no"])
        elif body.get("merchant_id") or body.get("merchant_trade_no"):
            no = None
        else:
            return _error(47001, "transaction_id, or merchant_id and merchant_trade_no")
        pay = self.emu.load_order(no) if no else None
        if pay is None or pay["state"] not in ("SUCCESS", "REFUND"):
            return _error(10060001)
        return _ok(order=self.view(no, pay))  # type: ignore[arg-type]

    def is_trade_managed(self, access_token: str, body: object) -> dict[str, Any]:
        self.emu._count("is_trade_managed")
        refused = self.emu.tokens.refusal(access_token)
        if refused:
            return refused
        if not isinstance(body, dict) or not isinstance(body.get("appid"), str):
            return _error(47001, "appid")
        if body["appid"] != self.emu.merchant.appid:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        return _ok(is_trade_managed=self.behaviour().get("trade_managed", True))

    def set_msg_jump_path(self, access_token: str, body: object) -> dict[str, Any]:
        self.emu._count("set_msg_jump_path")
        refused = self.emu.tokens.refusal(access_token)
        if refused:
            return refused
        if not isinstance(body, dict) or not isinstance(body.get("path"), str):
            return _error(47001, "path")
        self.store.set(f"sandbox:{self._mch}:msg-jump-path", body["path"])
        return _ok()

    def jump_path(self) -> str | None:
        return self.store.get(f"sandbox:{self._mch}:msg-jump-path")


def _rfc3339(value: object) -> float | None:
    """A timestamp for an RFC 3339 time with an offset (`2022-12-15T13:29:35.120+08:00`), else None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None
