"""WeChat's order-shipping management (发货信息管理服务): `/wxa/sec/order/*` on api.weixin.qq.com.

For a trade-managed mini-program the buyer's money stays frozen until the merchant uploads the
order's shipping information (`upload_shipping_info`) and the buyer confirms receipt (or the
trade settles by itself). The bodies here are WeChat's, field by field, as documented at
https://developers.weixin.qq.com/miniprogram/dev/platform-capabilities/business-capabilities/order-shipping/order-shipping.html
(and typed the same way by binarywang/WxJava's `WxMaOrderShippingInfoUploadRequest`):

- `order_key`: `order_number_type` 1 (`mchid` + `out_trade_no`) or 2 (`transaction_id`);
- `logistics_type` 1 express, 2 same-city, 3 virtual, 4 picked up by the buyer;
- `delivery_mode` 1 unified (one package) or 2 split (express only, at most 15 packages per pay
  order; WxJava's comment still says 10, WeChat's page says 15), with `is_all_delivered`;
- `shipping_list`: [{`tracking_no`, `express_company` (express only, each 1..128 bytes),
  `item_desc` (at most 120 characters), `contact` {`consignor_contact`, `receiver_contact`}
  (masked, the last four digits in clear; required by WeChat when the company is SF)}];
- `upload_time` RFC 3339 with offset (`2022-12-15T13:29:35.120+08:00`); `payer` {`openid`}.

WeChat lets a pay order's shipping be changed once (a second upload after shipping finished, or
one that changes the delivery or logistics mode), and only until the buyer confirmed receipt.

Protocol layer: no Flask. Every call takes the access_token; use it through
`AccessTokenManager.call` so that an expired token is refetched once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import WeChatUnavailable
from .miniapp import MiniAppClient
from .times import CHINA

UPLOAD_SHIPPING_INFO = "/wxa/sec/order/upload_shipping_info"
GET_ORDER = "/wxa/sec/order/get_order"
IS_TRADE_MANAGED = "/wxa/sec/order/is_trade_managed"  # MiniAppClient.is_trade_managed
SET_MSG_JUMP_PATH = "/wxa/sec/order/set_msg_jump_path"
NOTIFY_CONFIRM_RECEIVE = "/wxa/sec/order/notify_confirm_receive"

# Our names for WeChat's logistics_type numbers.
LOGISTICS_TYPES = {"express": 1, "same_city": 2, "virtual": 3, "pickup": 4}
UNIFIED, SPLIT = 1, 2
MAX_PACKAGES = 15  # "一笔支付单最多分拆成 15 个包裹" (shipping_list multiplicity [1, 15])
MAX_ITEM_DESC = 120  # characters ("限120个字以内")
MAX_CODE_BYTES = 128  # tracking_no and express_company

# WeChat's order_state in get_order's answer.
ORDER_STATES = {1: "awaiting_shipment", 2: "shipped", 3: "receipt_confirmed", 4: "settled", 5: "refunded"}

# A small table of WeChat's delivery company ids (`express_company`), the codes of the
# 运力 id list that get_delivery_list (/cgi-bin/express/delivery/open_msg/get_delivery_list)
# answers. Sources: WeChat's community thread quoting that list ("SF 顺丰速运, YTO 圆通速递,
# YD 韵达速递, ZTO 中通快递, STO 申通快递", https://developers.weixin.qq.com/community/develop/doc/0008a880fe48c8abffc0dd11361800)
# and WeChat's express-company page (JTSD 极兔, EMS 中国邮政速递物流, JD 京东). The full list has
# some 1500 companies: a shop that ships with another one adds its code with SHIPPING_EXPRESS_CODES.
EXPRESS_COMPANIES = {
    "SF": "顺丰速运",
    "ZTO": "中通快递",
    "YTO": "圆通速递",
    "STO": "申通快递",
    "YD": "韵达速递",
    "JTSD": "极兔速递",
    "EMS": "中国邮政速递物流",
    "JD": "京东物流",
    "DBL": "德邦物流",
    "ZJS": "宅急送",
    "HTKY": "百世快递",
    "YZPY": "邮政快递包裹",
}
SF = "SF"  # WeChat requires a contact (masked phone) for SF Express

_PHONE = re.compile(r"^\+?[0-9*][0-9* \-]{2,22}[0-9]{4}$")


def rfc3339(dt: datetime) -> str:
    """`2022-12-15T13:29:35.120+08:00`: China time, milliseconds, with its offset."""
    return dt.astimezone(CHINA).isoformat(timespec="milliseconds")


def mask_phone(phone: str) -> str:
    """A phone as WeChat wants it in `contact`: masked, the last four digits in clear (139****5678).

    Raises ValueError for something that is not a phone number. An already masked one is kept.
    """
    phone = (phone or "").strip()
    if not _PHONE.match(phone):
        raise ValueError("a phone number (digits, optionally +, - and spaces, ending in four digits)")
    if "*" in phone:
        return phone
    digits = re.sub(r"\D", "", phone)
    if len(digits) == 13 and digits.startswith("861"):  # +86 and a mainland mobile
        digits = digits[2:]
    if len(digits) == 11 and digits.startswith("1"):  # a mainland mobile: 139****5678
        return digits[:3] + "****" + digits[-4:]
    return "*" * max(len(digits) - 4, 4) + digits[-4:]


def valid_code(value: str | None) -> bool:
    return bool(value) and len(value.encode("utf-8")) <= MAX_CODE_BYTES  # type: ignore[union-attr]


@dataclass(frozen=True)
class Package:
    """One entry of `shipping_list`."""

    item_desc: str
    tracking_no: str | None = None
    express_company: str | None = None
    receiver_contact: str | None = None  # masked
    consignor_contact: str | None = None  # masked

    def body(self) -> dict[str, Any]:
        entry: dict[str, Any] = {}
        if self.tracking_no:
            entry["tracking_no"] = self.tracking_no
        if self.express_company:
            entry["express_company"] = self.express_company
        entry["item_desc"] = self.item_desc
        contact = {k: v for k, v in (("consignor_contact", self.consignor_contact),
                                     ("receiver_contact", self.receiver_contact)) if v}
        if contact:
            entry["contact"] = contact
        return entry


def order_key(*, mchid: str | None = None, out_trade_no: str | None = None,
              transaction_id: str | None = None) -> dict[str, Any]:
    """`order_key`: by merchant id and out_trade_no (type 1), or by WeChat's transaction_id (type 2)."""
    if mchid and out_trade_no:
        return {"order_number_type": 1, "mchid": mchid, "out_trade_no": out_trade_no}
    if transaction_id:
        return {"order_number_type": 2, "transaction_id": transaction_id}
    raise ValueError("order_key needs mchid and out_trade_no, or transaction_id")


def upload_body(*, key: dict[str, Any], logistics_type: str, packages: list[Package], openid: str,
                upload_time: datetime, split: bool = False, all_delivered: bool = True) -> dict[str, Any]:
    """The body of `upload_shipping_info`, exactly as WeChat documents it."""
    if logistics_type not in LOGISTICS_TYPES:
        raise ValueError(f"logistics_type must be one of {sorted(LOGISTICS_TYPES)}")
    if not 1 <= len(packages) <= MAX_PACKAGES:
        raise ValueError(f"shipping_list holds 1 to {MAX_PACKAGES} packages")
    body: dict[str, Any] = {
        "order_key": key,
        "logistics_type": LOGISTICS_TYPES[logistics_type],
        "delivery_mode": SPLIT if split else UNIFIED,
    }
    if split:
        body["is_all_delivered"] = bool(all_delivered)  # required in split mode
    body["shipping_list"] = [p.body() for p in packages]
    body["upload_time"] = rfc3339(upload_time)
    body["payer"] = {"openid": openid}
    return body


class ShippingAPI:
    """The `/wxa/sec/order/*` calls (is_trade_managed is `MiniAppClient.is_trade_managed`); each raises the error tree's errors (`for_errcode`) on an errcode."""

    def __init__(self, miniapp: MiniAppClient) -> None:
        self.miniapp = miniapp

    def _post(self, path: str, access_token: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.miniapp.post_json(path, body, access_token=access_token)

    def upload_shipping_info(self, access_token: str, body: dict[str, Any]) -> None:
        self._post(UPLOAD_SHIPPING_INFO, access_token, body)

    def get_order(self, access_token: str, *, transaction_id: str | None = None, merchant_id: str | None = None,
                  merchant_trade_no: str | None = None) -> dict[str, Any]:
        """The pay order as WeChat's shipping management sees it (`order`: order_state, shipping, ...)."""
        if transaction_id:
            body: dict[str, Any] = {"transaction_id": transaction_id}
        elif merchant_id and merchant_trade_no:
            body = {"merchant_id": merchant_id, "merchant_trade_no": merchant_trade_no}
        else:
            raise ValueError("get_order needs transaction_id, or merchant_id and merchant_trade_no")
        answer = self._post(GET_ORDER, access_token, body)
        order = answer.get("order")
        if not isinstance(order, dict):
            raise WeChatUnavailable("get_order answered without an order")
        return order

    def set_msg_jump_path(self, access_token: str, path: str) -> None:
        """Where WeChat's shipping and confirm-receipt messages open the mini-program. WeChat adds
        `transaction_id`, `merchant_id` and `merchant_trade_no` to the path's query by itself."""
        self._post(SET_MSG_JUMP_PATH, access_token, {"path": path})

    def notify_confirm_receive(self, access_token: str, *, received_time: int, transaction_id: str | None = None,
                               merchant_id: str | None = None, merchant_trade_no: str | None = None) -> None:
        """Remind the buyer to confirm receipt (once per order), when the carrier says it was signed for."""
        body: dict[str, Any] = {"received_time": int(received_time)}
        if transaction_id:
            body["transaction_id"] = transaction_id
        else:
            body.update(merchant_id=merchant_id, merchant_trade_no=merchant_trade_no)
        self._post(NOTIFY_CONFIRM_RECEIVE, access_token, body)
