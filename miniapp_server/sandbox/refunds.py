"""The emulator's refund desk: `secapi/pay/refund`, `pay/refundquery`, and the encrypted refund notification.

As WeChat does: the request's signature is checked, the amounts too (`total_fee`
must be what the transaction paid, refunds never exceed it), and the same
`out_refund_no` again is the same refund (with other amounts, a refusal). An
accepted refund is PROCESSING until it settles; it then becomes SUCCESS and the
notification, its fields encrypted in `req_info` (AES-256-ECB, key = MD5 of the
API key), goes to the `notify_url` the request named, retried on WeChat's
schedule until acknowledged. No Flask here; `routes.py` puts it on the web.

Control knobs (`behaviour`): `hold_notifications` keeps refunds PROCESSING until
`settle()` is called (so a test sees the answer before the notification), and
`fail_next` makes the next refund answer that err_code (NOTENOUGH, SYSTEMERROR, ...).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..wechat.numbers import ascii_uint
from ..wechat.pay import crypto, signing, xmlcodec
from ..wechat.times import china_now
from .emulator import ORDER_TTL, Emulator, SandboxError, v2_acknowledged

ERR_DESCRIPTIONS = {
    "NOTENOUGH": "基本账户余额不足，请充值后重新发起",
    "SYSTEMERROR": "系统超时",
    "BIZERR_NEED_RETRY": "并发情况下，业务被拒绝，商户重试即可解决",
    "FREQUENCY_LIMITED": "频率限制",
    "TRADE_OVERDUE": "订单已经超过可退款的最大期限(支付后一年内可退款)",
    "USER_ACCOUNT_ABNORMAL": "退款请求失败",
}


class RefundDesk:
    def __init__(self, emu: Emulator, deliver_in_background: bool = False) -> None:
        self.emu = emu
        # A sandbox in its own process answers the refund first and notifies afterwards, from a thread:
        # the backend's worker that asked must not wait on a second worker to take the notification.
        self.deliver_in_background = deliver_in_background

    @property
    def _mch(self) -> str:
        return self.emu.merchant.mch_id

    def _refund_key(self, out_refund_no: str) -> str:
        return f"sandbox:{self._mch}:refund:{out_refund_no}"

    # -- control ----------------------------------------------------------------------------------

    def behaviour(self) -> dict[str, Any]:
        return json.loads(self.emu.store.get(f"sandbox:{self._mch}:refund-behaviour") or "{}")

    def set_behaviour(self, changes: object) -> dict[str, Any]:
        if not isinstance(changes, dict):
            raise SandboxError(400, "invalid_params", 'send {"hold_notifications": bool, "fail_next": "ERR_CODE"}')
        current = self.behaviour()
        if "hold_notifications" in changes:
            current["hold_notifications"] = bool(changes["hold_notifications"])
        if "fail_next" in changes:
            code = changes["fail_next"]
            if code is not None and (not isinstance(code, str) or not code.isupper()):
                raise SandboxError(400, "invalid_params", "fail_next is one of WeChat's err_codes, or null")
            current["fail_next"] = code
        self.emu.store.set(f"sandbox:{self._mch}:refund-behaviour", json.dumps(current))
        return current

    def _take_failure(self) -> str | None:
        with self.emu.store.lock(f"sandbox-refund-behaviour:{self._mch}", timeout=10, wait=10):
            current = self.behaviour()
            code = current.pop("fail_next", None)
            if code:
                self.emu.store.set(f"sandbox:{self._mch}:refund-behaviour", json.dumps(current))
            return code

    # -- api.mch.weixin.qq.com ----------------------------------------------------------------------

    def refund(self, body: bytes) -> bytes:
        emu = self.emu
        emu._count("refund")
        data, failure, sign_type = emu._verified(body)
        if failure:
            return failure
        assert data is not None
        failing = self._take_failure()
        if failing:
            return emu._result_fail(failing, ERR_DESCRIPTIONS.get(failing, "退款失败"), sign_type)
        for name in ("out_refund_no", "total_fee", "refund_fee"):
            if not data.get(name):
                return emu._result_fail("PARAM_ERROR", f"缺少参数{name}", sign_type)
        if not data.get("transaction_id") and not data.get("out_trade_no"):
            return emu._result_fail("PARAM_ERROR", "transaction_id和out_trade_no必须填一个", sign_type)
        if ascii_uint(data["total_fee"], max_digits=10) is None or not ascii_uint(data["refund_fee"], max_digits=10):
            return emu._result_fail("PARAM_ERROR", "total_fee或refund_fee参数错误", sign_type)
        if len(data["out_refund_no"]) > 64:
            return emu._result_fail("PARAM_ERROR", "out_refund_no参数长度有误", sign_type)
        no = data.get("out_trade_no") or ""
        if data.get("transaction_id"):
            no = emu.store.get("sandbox:txn:" + data["transaction_id"]) or ""
            if not no:
                return emu._result_fail("INVALID_TRANSACTIONID", "无效transaction_id", sign_type)
        total, fee = int(data["total_fee"]), int(data["refund_fee"])
        with emu._locked(no):
            order = emu.load_order(no)
            if order is None:
                return emu._result_fail("ORDERNOTEXIST", "订单不存在", sign_type)
            if order["state"] not in ("SUCCESS", "REFUND"):
                return emu._result_fail("ERROR", "订单未支付，不能退款", sign_type)
            paid = int(order["paid_fee"])
            refunds = order.setdefault("refunds", [])
            existing = next((r for r in refunds if r["out_refund_no"] == data["out_refund_no"]), None)
            if existing is not None:  # the same refund again: the same answer, nothing new happens
                if existing["refund_fee"] != fee or total != paid:
                    return emu._result_fail("INVALID_REQUEST", "订单金额或退款金额与之前请求不一致，请核实后再试",
                                            sign_type)
                return emu._answer(self._accepted_fields(order, existing), sign_type)
            if total != paid:
                return emu._result_fail("INVALID_REQUEST", "订单金额与实际支付金额不一致", sign_type)
            refunded = sum(r["refund_fee"] for r in refunds if r["status"] != "REFUNDCLOSE")
            if fee > paid - refunded:
                return emu._result_fail("ERROR", "申请退款金额超过订单可退金额", sign_type)
            refund = {"out_refund_no": data["out_refund_no"], "refund_fee": fee, "status": "PROCESSING",
                      "refund_id": emu.refund_id(),
                      "notify_url": data.get("notify_url", ""), "success_time": "", "created": time.time()}
            refunds.append(refund)
            order["state"] = "REFUND"
            emu.save_order(order)
            emu.store.set(self._refund_key(refund["out_refund_no"]), no, ttl=ORDER_TTL)
        emu.bills.index(no)
        answer = emu._answer(self._accepted_fields(order, refund), sign_type)
        if not self.behaviour().get("hold_notifications"):
            if self.deliver_in_background:
                emu.spawn(self.settle, refund["out_refund_no"], name=f"sandbox-refund-{refund['out_refund_no']}")
            else:
                self.settle(refund["out_refund_no"])
        return answer

    @staticmethod
    def _accepted_fields(order: dict[str, Any], refund: dict[str, Any]) -> dict[str, Any]:
        return {"result_code": "SUCCESS", "transaction_id": order["transaction_id"],
                "out_trade_no": order["out_trade_no"], "out_refund_no": refund["out_refund_no"],
                "refund_id": refund["refund_id"], "refund_fee": refund["refund_fee"], "total_fee": order["paid_fee"],
                "cash_fee": order["paid_fee"], "cash_refund_fee": refund["refund_fee"], "refund_channel": ""}

    def refundquery(self, body: bytes) -> bytes:
        emu = self.emu
        emu._count("refundquery")
        data, failure, sign_type = emu._verified(body)
        if failure:
            return failure
        assert data is not None
        found = self._find(data.get("out_refund_no", ""))
        if found is None:
            return emu._result_fail("REFUNDNOTEXIST", "退款订单查询失败", sign_type)
        order, refund = found
        fields = {"result_code": "SUCCESS", "transaction_id": order["transaction_id"],
                  "out_trade_no": order["out_trade_no"], "total_fee": order["paid_fee"], "cash_fee": order["paid_fee"],
                  "refund_count": 1, "out_refund_no_0": refund["out_refund_no"], "refund_id_0": refund["refund_id"],
                  "refund_fee_0": refund["refund_fee"], "refund_status_0": refund["status"],
                  "refund_channel_0": "ORIGINAL", "refund_recv_accout_0": "支付用户的零钱"}
        if refund["success_time"]:
            fields["refund_success_time_0"] = refund["success_time"]
        return emu._answer(fields, sign_type)

    def _find(self, out_refund_no: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        no = self.emu.store.get(self._refund_key(out_refund_no)) if out_refund_no else None
        order = self.emu.load_order(no) if no else None
        if order is None:
            return None
        refund = next((r for r in order.get("refunds", []) if r["out_refund_no"] == out_refund_no), None)
        return (order, refund) if refund is not None else None

    # -- the money moves, and WeChat tells the merchant -----------------------------------------------

    def settle(self, out_refund_no: str, deliver: bool = True) -> dict[str, Any]:
        """Make a PROCESSING refund SUCCESS, then (unless `deliver` is false: a lost notification) notify."""
        found = self._find(out_refund_no)
        if found is None:
            raise SandboxError(404, "refund_not_found", "no such refund at the sandbox")
        no = found[0]["out_trade_no"]
        with self.emu._locked(no):
            order, refund = self._find(out_refund_no) or found
            if refund["status"] == "PROCESSING":
                refund["status"] = "SUCCESS"
                refund["success_time"] = china_now().strftime("%Y-%m-%d %H:%M:%S")
                self.emu.save_order(order)
        if not deliver:
            return {"out_refund_no": out_refund_no, "status": refund["status"], "notification": None}
        return {"out_refund_no": out_refund_no, "status": refund["status"], "notification": self.deliver(order, refund)}

    def notification_for(self, order: dict[str, Any], refund: dict[str, Any]) -> bytes:
        inner = {
            "out_refund_no": refund["out_refund_no"], "out_trade_no": order["out_trade_no"],
            "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS", "refund_fee": str(refund["refund_fee"]),
            "refund_id": refund["refund_id"], "refund_recv_accout": "支付用户的零钱",
            "refund_request_source": "API", "refund_status": refund["status"],
            "settlement_refund_fee": str(refund["refund_fee"]), "settlement_total_fee": str(order["paid_fee"]),
            "success_time": refund["success_time"], "total_fee": str(order["paid_fee"]),
            "transaction_id": order["transaction_id"],
        }
        plain = xmlcodec.dumps(inner, root_name="root")
        merchant = self.emu.merchant
        return xmlcodec.dumps({"return_code": "SUCCESS", "appid": merchant.appid, "mch_id": merchant.mch_id,
                               "nonce_str": signing.nonce(),
                               "req_info": crypto.encrypt_req_info(plain, merchant.api_key)})

    def deliver(self, order: dict[str, Any], refund: dict[str, Any]) -> dict[str, Any]:
        tags = {"out_trade_no": order["out_trade_no"], "out_refund_no": refund["out_refund_no"], "kind": "refund"}
        url = refund.get("notify_url") or ""
        if not url:  # WeChat would use the merchant platform's setting; the sandbox has none
            return self.emu.log_attempt(url, tags, 1, time.time(), 0, False, "no notify_url in the refund request")
        body = self.notification_for(order, refund)
        return self.emu.deliver_with_retries(url, tags, lambda: self.emu.sender(url, body), v2_acknowledged)
