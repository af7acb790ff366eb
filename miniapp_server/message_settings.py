"""The subscribe messages a shop sends (paid, shipped, refunded), read from the environment.

Per event, in upper case (`PAID`, `SHIPPED`, `REFUNDED`):

    WECHAT_MSG_PAID_TEMPLATE=<the template id from the mini-program console>   (or `off`)
    WECHAT_MSG_PAID_FIELDS=character_string1:out_trade_no,amount2:amount,thing3:item,time4:paid_at
    WECHAT_MSG_PAID_PAGE=pages/order-detail/order-detail?out_trade_no={out_trade_no}   (the default)

`FIELDS` maps each of the template's keys (as its console shows them: `thing3` for
{{thing3.DATA}}) to what we fill it with; the key's kind must be able to show that (an
order number is no `phrase`). An event without a template is simply not sent. In sandbox
mode every event has the sandbox's own template unless set (or `off`).

`WECHAT_MSG_STATE` (developer | trial | formal; `developer` in the sandbox, else `formal`)
says which version of the mini-program a message opens, `WECHAT_MSG_LANG` its language.
Errors are ConfigError naming the setting, never its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from .wechat.subscribe import kind_of

EVENTS = ("paid", "shipped", "refunded")
STATES = ("developer", "trial", "formal")
LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
DEFAULT_PAGE = "pages/order-detail/order-detail?out_trade_no={out_trade_no}"
OFF = ("off", "none", "0")

# What we can fill a field with, and the kinds of field that can show it.
_TEXT_ID = ("character_string", "thing")
_MONEY = ("amount", "number", "thing", "character_string")
_TIME = ("time", "date", "thing", "character_string")
SOURCES: dict[str, tuple[str, ...]] = {
    "out_trade_no": _TEXT_ID,  # the order number (32 letters and digits)
    "item": ("thing",),  # what was bought, as WeChat Pay showed it (`拿铁咖啡 Latte 等2件商品`)
    "amount": _MONEY,  # the order's total, in yuan
    "paid_at": _TIME,
    "status": ("phrase", "thing"),  # 已支付 / 已发货 / 已退款
    "shipped_at": _TIME,
    "express_company": ("thing", "phrase"),
    "tracking_no": _TEXT_ID,
    "refund_amount": _MONEY,  # this refund's amount, in yuan
    "refunded_at": _TIME,
}
_COMMON = ("out_trade_no", "item", "amount", "paid_at", "status")
EVENT_SOURCES: dict[str, tuple[str, ...]] = {
    "paid": _COMMON,
    "shipped": _COMMON + ("shipped_at", "express_company", "tracking_no"),
    "refunded": _COMMON + ("refund_amount", "refunded_at"),
}
STATUS_TEXT = {"paid": "已支付", "shipped": "已发货", "refunded": "已退款"}

# The sandbox's own templates, known to its emulator of WeChat (sandbox/messages.py): used in sandbox
# mode for every event not set, so that the whole journey works out of the box.
SANDBOX_TEMPLATES: dict[str, tuple[str, str]] = {
    # event: (template id, fields): an order paid (订单支付成功通知), shipped (订单发货通知), refunded (退款成功通知)
    "paid": ("sandboxPaidNoticeTmpl-00000000000000000001",
             "character_string1:out_trade_no,amount2:amount,thing3:item,time4:paid_at"),
    "shipped": ("sandboxShippedNoticeTmpl-0000000000000002",
                "character_string1:out_trade_no,thing2:item,thing3:express_company,character_string4:tracking_no,"
                "time5:shipped_at"),
    "refunded": ("sandboxRefundedNoticeTmpl-000000000000003",
                 "character_string1:out_trade_no,amount2:refund_amount,thing3:item,time4:refunded_at"),
}

_TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PAGE = re.compile(r"^[A-Za-z0-9_\-./?=&%{}]{1,256}$")


class MessageConfigError(ValueError):
    """Raised with the setting's name; config.py turns it into a ConfigError."""


@dataclass(frozen=True)
class MessageTemplate:
    event: str
    template_id: str
    fields: tuple[tuple[str, str], ...]  # (the template's key, our source), in the template's order
    page: str  # may hold {out_trade_no}

    def page_for(self, out_trade_no: str) -> str:
        return self.page.replace("{out_trade_no}", out_trade_no)


def parse_fields(setting: str, raw: str, event: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for part in raw.split(","):
        key, sep, source = (s.strip() for s in part.partition(":"))
        if not sep or not key or not source:
            raise MessageConfigError(f"{setting} must be key:source pairs separated by commas "
                                     "(e.g. character_string1:out_trade_no,thing3:item)")
        kind = kind_of(key)
        if kind is None:
            raise MessageConfigError(f"{setting}: {key!r} is not a template field key WeChat makes "
                                     "(thing3, amount2, character_string1, time4, ...)")
        if source not in SOURCES:
            raise MessageConfigError(f"{setting}: unknown source {source!r}; one of " + ", ".join(SOURCES))
        if source not in EVENT_SOURCES[event]:
            raise MessageConfigError(f"{setting}: {source!r} is not known when an order is {event}; "
                                     "one of " + ", ".join(EVENT_SOURCES[event]))
        if kind not in SOURCES[source]:
            raise MessageConfigError(f"{setting}: a {kind} field cannot show {source}; it fits "
                                     + ", ".join(SOURCES[source]))
        if any(key == k for k, _ in pairs):
            raise MessageConfigError(f"{setting}: {key} is given twice")
        pairs.append((key, source))
    return tuple(pairs)


def from_env(env: Mapping[str, str], sandbox: bool) -> dict[str, MessageTemplate]:
    """The configured message of each event (events with none are absent)."""
    templates: dict[str, MessageTemplate] = {}
    for event in EVENTS:
        prefix = f"WECHAT_MSG_{event.upper()}_"
        template_id = (env.get(prefix + "TEMPLATE") or "").strip()
        fields_raw = (env.get(prefix + "FIELDS") or "").strip()
        page = (env.get(prefix + "PAGE") or "").strip() or DEFAULT_PAGE
        if template_id.lower() in OFF:
            continue
        if not template_id:
            if fields_raw:
                raise MessageConfigError(f"{prefix}FIELDS is set but {prefix}TEMPLATE is not")
            if not sandbox:
                continue
            template_id, fields_raw = SANDBOX_TEMPLATES[event]
        elif not fields_raw:
            raise MessageConfigError(f"{prefix}TEMPLATE needs {prefix}FIELDS (the template's keys: key:source,...)")
        if not _TEMPLATE_ID.match(template_id):
            raise MessageConfigError(f"{prefix}TEMPLATE is not a template id (letters, digits, - and _)")
        if not _PAGE.match(page) or re.sub(r"\{out_trade_no\}", "", page).count("{") \
                or re.sub(r"\{out_trade_no\}", "", page).count("}"):
            raise MessageConfigError(f"{prefix}PAGE must be a page path of the mini-program, with "
                                     "{out_trade_no} as its only placeholder")
        templates[event] = MessageTemplate(event, template_id, parse_fields(prefix + "FIELDS", fields_raw, event),
                                           page)
    return templates


def state_from_env(env: Mapping[str, str], sandbox: bool) -> str:
    state = (env.get("WECHAT_MSG_STATE") or "").strip() or ("developer" if sandbox else "formal")
    if state not in STATES:
        raise MessageConfigError("WECHAT_MSG_STATE must be developer, trial or formal")
    return state


def lang_from_env(env: Mapping[str, str]) -> str:
    lang = (env.get("WECHAT_MSG_LANG") or "").strip() or "zh_CN"
    if lang not in LANGS:
        raise MessageConfigError("WECHAT_MSG_LANG must be one of " + ", ".join(LANGS))
    return lang
