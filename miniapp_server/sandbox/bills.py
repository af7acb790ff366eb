"""The sandbox's daily bills, in WeChat's own format, for the trades and refunds it has seen.

v2: `/pay/downloadbill` (ALL, SUCCESS, REFUND; plain or tar_type GZIP) and `/pay/downloadfundflow`
(HMAC-SHA256 only); v3: `/v3/bill/tradebill` and `/v3/bill/fundflowbill` answer a download_url on
WeChat's own host (the client maps it onto its base, as for any call) with the file's SHA-1, and
`/v3/billdownload/file` serves the file. A day without trades has no bill (`No Bill Exist`, 20002;
v3 `NO_STATEMENT_EXIST`). Unlike WeChat, today's bill is served at once (so that a demo can watch it).

`POST /sandbox/control/bills` makes a bill disagree with the app, as a demo or a test needs:
`{"extra_payment": {"out_trade_no", "total_fee"}}` pays that order at "WeChat" without a notification
(or, for an order the sandbox never saw, adds a line for it), `{"amount_off_by": 1}` changes the first
payment line's amount by that many fen; `{"reset": true}` clears both.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import secrets
from datetime import date, datetime, timezone
from typing import Any

from ..wechat.pay import signing, xmlcodec
from ..wechat.times import CHINA, china_now, parse_wechat_time, wechat_time
from .emulator import ORDER_TTL, Emulator, SandboxError

FEE_RATE_PER_MILLE = 6  # 0.60%, rounded to the fen, as WeChat charges small merchants
DOWNLOAD_TTL = 300

TRADE_COLUMNS = {
    "ALL": "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
           "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
           "手续费,费率,订单金额,申请退款金额,费率备注",
    "SUCCESS": "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
               "应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注",
    "REFUND": "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
              "应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
              "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注",
}
TRADE_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
FUND_COLUMNS = "记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额（元）,账户结余（元）,资金变更提交申请人,备注,业务凭证号"
FUND_SUMMARY = "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额"


def yuan(fen: int, places: int = 2) -> str:
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}{whole}.{part:02d}" + "0" * (places - 2)


def fee_for(fen: int) -> int:
    return (fen * FEE_RATE_PER_MILLE + 500) // 1000


def _line(values: list[str]) -> str:
    return ",".join("`" + v for v in values)


def _time(value: str) -> str:
    dt = parse_wechat_time(value)
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else value


def _day_of(wechat_time_value: str) -> str:
    return (wechat_time_value or "")[:8]


class BillDesk:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    @property
    def _mch(self) -> str:
        return self.emu.merchant.mch_id

    # -- which trades a day has ---------------------------------------------------------------------

    def index(self, out_trade_no: str, when: datetime | None = None) -> None:
        """Remember that `out_trade_no` had a payment or a refund on this China day."""
        key = f"sandbox:{self._mch}:bill-day:{(when or china_now()).astimezone(CHINA):%Y%m%d}"
        with self.emu.store.lock(f"sandbox-bill-index:{self._mch}", timeout=10, wait=10):
            nos = json.loads(self.emu.store.get(key) or "[]")
            if out_trade_no not in nos:
                nos.append(out_trade_no)
                self.emu.store.set(key, json.dumps(nos), ttl=ORDER_TTL)

    def _orders(self, day: str) -> list[dict[str, Any]]:
        nos = json.loads(self.emu.store.get(f"sandbox:{self._mch}:bill-day:{day}") or "[]")
        return [o for o in (self.emu.load_order(no) for no in nos) if o is not None]

    # -- the control knob -----------------------------------------------------------------------------

    def knob(self) -> dict[str, Any]:
        return json.loads(self.emu.store.get(f"sandbox:{self._mch}:bill-knob") or "{}")

    def set_knob(self, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SandboxError(400, "invalid_params", 'send {"extra_payment": {...}, "amount_off_by": 1}')
        knob = {} if body.get("reset") else self.knob()
        off = body.get("amount_off_by")
        if off is not None:
            if not isinstance(off, int) or isinstance(off, bool) or abs(off) > 10_000_000:
                raise SandboxError(400, "invalid_params", "amount_off_by is a whole number of fen")
            knob["amount_off_by"] = off
        extra = body.get("extra_payment")
        if extra is not None:
            extra = extra if isinstance(extra, dict) else {}
            no, fee = extra.get("out_trade_no"), extra.get("total_fee", 1)
            if not isinstance(no, str) or not 0 < len(no) <= 32 or not isinstance(fee, int) or isinstance(fee, bool) \
                    or fee <= 0:
                raise SandboxError(400, "invalid_params", 'extra_payment is {"out_trade_no", "total_fee"}')
            knob.setdefault("extra_lines", []).append(self._extra_payment(no, fee))
        self.emu.store.set(f"sandbox:{self._mch}:bill-knob", json.dumps(knob), ttl=ORDER_TTL)
        return knob

    def _extra_payment(self, no: str, fee: int) -> dict[str, Any]:
        """Pay a known unpaid order without telling the merchant (a notification lost for good), or
        make up a trade the sandbox never saw; either way the bill has it and the app does not."""
        with self.emu._locked(no):
            order = self.emu.load_order(no)
            if order is not None and order["state"] == "NOTPAY":
                order.update(state="SUCCESS", transaction_id=self.emu.transaction_id(),
                             time_end=wechat_time(china_now()), paid_fee=int(order["total_fee"]))
                self.emu.save_order(order)
                self.emu.store.set("sandbox:txn:" + order["transaction_id"], no, ttl=ORDER_TTL)
                self.index(no)
                return {"out_trade_no": no, "transaction_id": order["transaction_id"], "paid_silently": True}
        return {"out_trade_no": no, "total_fee": fee, "time_end": wechat_time(china_now()),
                "transaction_id": self.emu.transaction_id()}

    # -- the bills --------------------------------------------------------------------------------------

    def _events(self, day: str) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], dict[str, Any]]]]:
        """The day's payments (orders paid that day) and refunds (made that day), in time order."""
        paid, refunded = [], []
        for order in self._orders(day):
            if order.get("transaction_id") and _day_of(order.get("time_end", "")) == day:
                paid.append(order)
            for refund in order.get("refunds", []):
                made = datetime.fromtimestamp(refund.get("created") or 0, timezone.utc).astimezone(CHINA)
                if f"{made:%Y%m%d}" == day:
                    refunded.append((order, refund))
        knob = self.knob()
        for extra in knob.get("extra_lines", []):
            if not extra.get("paid_silently") and _day_of(extra["time_end"]) == day:
                paid.append({"out_trade_no": extra["out_trade_no"], "transaction_id": extra["transaction_id"],
                             "time_end": extra["time_end"], "paid_fee": extra["total_fee"], "openid": "",
                             "trade_type": "JSAPI", "body": "", "attach": ""})
        paid.sort(key=lambda o: o["time_end"])
        return paid, refunded

    def trade_bill(self, day: str, bill_type: str = "ALL") -> str | None:
        paid, refunded = self._events(day)
        off = int(self.knob().get("amount_off_by") or 0)
        rows: list[dict[str, str]] = []
        m = self.emu.merchant
        for i, order in enumerate(paid if bill_type in ("ALL", "SUCCESS") else []):
            fen = int(order["paid_fee"]) + (off if i == 0 else 0)
            rows.append({"交易时间": _time(order["time_end"]), "公众账号ID": m.appid, "商户号": m.mch_id, "特约商户号": "0",
                         "设备号": "", "微信订单号": order["transaction_id"], "商户订单号": order["out_trade_no"],
                         "用户标识": order.get("openid") or "", "交易类型": order.get("trade_type") or "JSAPI",
                         "交易状态": "SUCCESS", "付款银行": "OTHERS", "货币种类": "CNY", "应结订单金额": yuan(fen),
                         "代金券金额": "0.00", "微信退款单号": "0", "商户退款单号": "0", "退款金额": "0.00",
                         "充值券退款金额": "0.00", "退款类型": "", "退款状态": "", "商品名称": order.get("body") or "",
                         "商户数据包": order.get("attach") or "", "手续费": yuan(fee_for(fen), 5), "费率": "0.60%",
                         "订单金额": yuan(fen), "申请退款金额": "0.00", "费率备注": "", "_fee": str(fee_for(fen)),
                         "_paid": str(fen), "_refund": "0"})
        for order, refund in (refunded if bill_type in ("ALL", "REFUND") else []):
            fen = int(refund["refund_fee"])
            made = datetime.fromtimestamp(refund.get("created") or 0, timezone.utc).astimezone(CHINA)
            status = {"REFUNDCLOSE": "FAIL"}.get(refund["status"], refund["status"])
            rows.append({"交易时间": f"{made:%Y-%m-%d %H:%M:%S}", "公众账号ID": m.appid, "商户号": m.mch_id,
                         "特约商户号": "0", "设备号": "", "微信订单号": order["transaction_id"],
                         "商户订单号": order["out_trade_no"], "用户标识": order.get("openid") or "",
                         "交易类型": order.get("trade_type") or "JSAPI", "交易状态": "REFUND", "付款银行": "OTHERS",
                         "货币种类": "CNY", "应结订单金额": "0.00", "代金券金额": "0.00",
                         "退款申请时间": f"{made:%Y-%m-%d %H:%M:%S}", "退款成功时间": refund.get("success_time") or "",
                         "微信退款单号": refund["refund_id"], "商户退款单号": refund["out_refund_no"], "退款金额": yuan(fen),
                         "充值券退款金额": "0.00", "退款类型": "ORIGINAL", "退款状态": status,
                         "商品名称": order.get("body") or "", "商户数据包": order.get("attach") or "",
                         "手续费": yuan(-fee_for(fen), 5), "费率": "0.60%", "订单金额": "0.00", "申请退款金额": yuan(fen),
                         "费率备注": "", "_fee": str(-fee_for(fen)), "_paid": "0", "_refund": str(fen)})
        if not rows:
            return None
        columns = TRADE_COLUMNS[bill_type].split(",")
        paid_sum = sum(int(r["_paid"]) for r in rows)
        refund_sum = sum(int(r["_refund"]) for r in rows)
        fees = sum(int(r["_fee"]) for r in rows)
        out = [TRADE_COLUMNS[bill_type]] + [_line([r.get(c, "") for c in columns]) for r in rows]
        out += [TRADE_SUMMARY, _line([str(len(rows)), yuan(paid_sum), yuan(refund_sum), "0.00", yuan(fees, 5),
                                      yuan(paid_sum), yuan(refund_sum)])]
        return "\r\n".join(out) + "\r\n"

    def fund_flow(self, day: str, account_type: str = "Basic") -> str | None:
        if account_type.upper() != "BASIC":
            return None  # the sandbox's merchant has only its basic account
        paid, refunded = self._events(day)
        # (time, WeChat's number, business, business type, income?, fen, voucher)
        moves: list[tuple[str, str, str, str, bool, int, str]] = []
        for order in paid:
            fen = int(order["paid_fee"])
            moves.append((_time(order["time_end"]), order["transaction_id"], "交易", "交易", True, fen,
                          order["out_trade_no"]))
            if fee_for(fen):
                moves.append((_time(order["time_end"]), order["transaction_id"], "交易", "扣除交易手续费", False,
                              fee_for(fen), order["out_trade_no"]))
        for order, refund in refunded:
            if refund["status"] == "SUCCESS":
                made = datetime.fromtimestamp(refund.get("created") or 0, timezone.utc).astimezone(CHINA)
                moves.append((f"{made:%Y-%m-%d %H:%M:%S}", refund["refund_id"], "退款", "退款", False,
                              int(refund["refund_fee"]) - fee_for(int(refund["refund_fee"])), refund["out_refund_no"]))
        if not moves:
            return None
        moves.sort(key=lambda m: m[0])
        balance, lines = 0, [FUND_COLUMNS]
        for when, no, business, kind, income, fen, voucher in moves:
            balance += fen if income else -fen
            flow = hashlib.sha1(f"{no}:{kind}".encode()).hexdigest()[:28]
            lines.append(_line([when, no, flow, business, kind, "收入" if income else "支出", yuan(fen), yuan(balance),
                                "system", "", voucher]))
        incomes = [m for m in moves if m[4]]
        expenses = [m for m in moves if not m[4]]
        lines += [FUND_SUMMARY, _line([str(len(moves)), str(len(incomes)), yuan(sum(m[5] for m in incomes)),
                                       str(len(expenses)), yuan(sum(m[5] for m in expenses))])]
        return "\r\n".join(lines) + "\r\n"

    # -- v2 ---------------------------------------------------------------------------------------------

    def downloadbill(self, body: bytes) -> tuple[bytes, str]:
        self.emu._count("downloadbill")
        data, failure, _ = self.emu._verified(body)
        if failure:
            return failure, "text/xml"
        assert data is not None
        day, bill_type = data.get("bill_date", ""), data.get("bill_type") or "ALL"
        if not (len(day) == 8 and day.isascii() and day.isdigit()) or bill_type not in TRADE_COLUMNS:
            return _v2_error("invalid bill_date or bill_type", "20001"), "text/xml"
        return self._v2_file(self.trade_bill(day, bill_type), data.get("tar_type"))

    def downloadfundflow(self, body: bytes) -> tuple[bytes, str]:
        self.emu._count("downloadfundflow")
        data, failure, sign_type = self.emu._verified(body)
        if failure:
            return failure, "text/xml"
        assert data is not None
        if sign_type != signing.HMAC_SHA256:
            return _v2_error("sign_type must be HMAC-SHA256", "20001"), "text/xml"
        day, account = data.get("bill_date", ""), data.get("account_type", "")
        if not (len(day) == 8 and day.isascii() and day.isdigit()) or account not in ("Basic", "Operation", "Fees"):
            return _v2_error("invalid bill_date or account_type", "20001"), "text/xml"
        return self._v2_file(self.fund_flow(day, account), data.get("tar_type"))

    @staticmethod
    def _v2_file(text: str | None, tar_type: str | None) -> tuple[bytes, str]:
        if text is None:
            return _v2_error("No Bill Exist", "20002"), "text/xml"
        raw = text.encode("utf-8")
        if tar_type == "GZIP":
            return gzip.compress(raw), "application/octet-stream"
        return raw, "text/plain; charset=utf-8"

    # -- v3 ---------------------------------------------------------------------------------------------

    def v3_bill(self, kind: str, args: dict[str, str]) -> tuple[int, dict[str, Any]]:
        from .v3 import V3Error

        self.emu._count("downloadbill")
        day = args.get("bill_date", "")
        try:
            compact = date.fromisoformat(day).strftime("%Y%m%d") if len(day) == 10 else ""
        except ValueError:
            compact = ""
        if not compact:
            raise V3Error(400, "PARAM_ERROR", "bill_date格式错误")
        if kind == "trade":
            bill_type = args.get("bill_type") or "ALL"
            if bill_type not in TRADE_COLUMNS:
                raise V3Error(400, "PARAM_ERROR", "bill_type参数错误")
            text = self.trade_bill(compact, bill_type)
        else:
            account = args.get("account_type") or "BASIC"
            if account not in ("BASIC", "OPERATION", "FEES"):
                raise V3Error(400, "PARAM_ERROR", "account_type参数错误")
            text = self.fund_flow(compact, account)
        if text is None:
            raise V3Error(400, "NO_STATEMENT_EXIST", "账单文件不存在")
        raw = text.encode("utf-8")
        if args.get("tar_type") == "GZIP":
            raw = gzip.compress(raw)
        token = secrets.token_urlsafe(24)
        self.emu.store.set(f"sandbox:{self._mch}:bill-file:{token}", base64.b64encode(raw).decode("ascii"),
                           ttl=DOWNLOAD_TTL)
        return 200, {"hash_type": "SHA1", "hash_value": hashlib.sha1(raw).hexdigest(),
                     "download_url": f"https://api.mch.weixin.qq.com/v3/billdownload/file?token={token}"}

    def v3_file(self, token: str) -> bytes | None:
        raw = self.emu.store.get(f"sandbox:{self._mch}:bill-file:{token}") if token else None
        return base64.b64decode(raw) if raw else None


def _v2_error(message: str, code: str) -> bytes:
    return xmlcodec.dumps({"return_code": "FAIL", "return_msg": message, "error_code": code})
