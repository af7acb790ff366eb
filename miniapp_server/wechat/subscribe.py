"""Subscribe messages (订阅消息): the field kinds of a template and WeChat's limit for each.

A template's field keys name their kind: `thing3` is a `thing`, `character_string1` a
`character_string`, `amount2` an `amount`. WeChat refuses a send (47003, "argument invalid!
data.thing3.value invalid") when a value breaks its kind's rule, as its `subscribeMessage.send`
documentation lists them (https://developers.weixin.qq.com/miniprogram/dev/server/API/
mp-message-management/subscribe-message/api_sendmessage.html, 订阅消息参数值内容限制说明):

| kind | rule |
|---|---|
| thing | up to 20 characters: Chinese, digits, letters or symbols |
| number | up to 32 digits, a decimal point allowed |
| letter | up to 32 letters |
| symbol | up to 5 symbols |
| character_string | up to 32 digits, letters or symbols |
| time | a 24-hour time, optionally with its date (15:01, 2019年10月1日 15:01); a span joined by ~ |
| date | a date, optionally with a 24-hour time (2019年10月1日, 2019年10月1日 15:01); a span joined by ~ |
| amount | one currency symbol and up to 10 digits, decimals allowed, may end in 元 |
| phone_number | up to 17 digits and symbols (+86-0766-66888866) |
| car_number | up to 8: first and last may be Chinese, the rest letters or digits (粤A8Z888挂) |
| name | up to 10 Chinese characters, or up to 20 letters or symbols; mixed counts as Chinese |
| phrase | up to 5 Chinese characters only (配送中) |

`fit` turns what we have (text, a datetime, an amount in fen) into a value within its kind's
rule, cutting what is too long, so that a long product name never makes a send fail;
`valid` says whether a value keeps the rule (the sandbox answers 47003 when not). No Flask here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# Longest names first: `character_string1` is not a `thing`-like prefix match of anything shorter.
KINDS = ("character_string", "phone_number", "car_number", "thing", "number", "letter", "symbol", "time", "date",
         "amount", "name", "phrase")
_KEY = re.compile(r"^(" + "|".join(KINDS) + r")(\d{1,3})$")

CHINA = timezone(timedelta(hours=8))  # WeChat shows times as China time
ELLIPSIS = "…"  # one character, itself a symbol: allowed in a thing
CURRENCY = "¥"

# WeChat's answers to subscribe/send (its documented errcodes, and the ones worth another try).
NO_CREDIT = 43101  # the person did not accept (or no longer has an accept left for this template)
BAD_OPENID = 40003
BAD_TEMPLATE = 40037
BAD_DATA = 47003
BAD_PAGE = 41030
RETRYABLE_CODES = frozenset({-1, 45009, 45011})  # system busy, daily quota, minute quota: later it may work


@dataclass(frozen=True)
class Fen:
    """An amount of money in fen, to be shown in yuan."""

    value: int

    def yuan(self) -> str:
        sign = "-" if self.value < 0 else ""
        fen = abs(self.value)
        return f"{sign}{fen // 100}.{fen % 100:02d}"


def kind_of(key: str) -> str | None:
    """The kind a template field key names (`thing3` -> `thing`), or None if it names none we know."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def _is_symbol(ch: str) -> bool:
    return not ch.isalnum() and not ch.isspace()


def _printable_ascii(ch: str) -> bool:
    return "!" <= ch <= "~"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())  # line breaks, tabs and runs of spaces become one space


def _cut(text: str, size: int, mark: str = "") -> str:
    return text if len(text) <= size else text[: size - len(mark)] + mark


def china_minute(moment: datetime) -> str:
    """`2019-12-25 09:42`: the form of WeChat's own example for a date with a time."""
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def fit(kind: str, value: object) -> str:
    """`value` as a `kind` field WeChat accepts: cut to its length, stripped of what it may not hold.

    Text that has nothing left becomes a placeholder of the kind ("-", or "无" where a symbol is not allowed).
    A datetime or an amount (`Fen`) in a kind that cannot show one is a ValueError: the
    settings (message_settings.py) never map them so.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown field kind {kind!r}")
    if isinstance(value, datetime):
        if kind in ("time", "date", "thing", "character_string"):
            return china_minute(value)
        raise ValueError(f"a time cannot fill a {kind} field")
    if isinstance(value, Fen):
        if kind == "amount":
            return CURRENCY + value.yuan()
        if kind in ("number", "character_string"):
            return value.yuan()
        if kind == "thing":
            return value.yuan() + "元"
        raise ValueError(f"an amount cannot fill a {kind} field")
    if kind in ("time", "date", "amount"):
        text = _one_line(str(value))
        if valid(kind, text):
            return text
        raise ValueError(f"{text!r} is not a {kind}")
    return _fit_text(kind, _one_line(str(value)))


def _fit_text(kind: str, text: str) -> str:
    if kind == "thing":
        return _cut(text, 20, ELLIPSIS) or "-"
    if kind == "character_string":
        return "".join(ch for ch in text if _printable_ascii(ch))[:32] or "-"
    if kind == "number":
        match = re.search(r"-?\d+(?:\.\d+)?", text)
        return match.group()[:32].rstrip(".") if match else "0"
    if kind == "letter":
        return "".join(ch for ch in text if ch.isascii() and ch.isalpha())[:32] or "N"
    if kind == "symbol":
        return "".join(ch for ch in text if _is_symbol(ch))[:5] or "-"
    if kind == "phone_number":
        return "".join(ch for ch in text if ch.isdigit() or ch in "+-()")[:17] or "-"
    if kind == "car_number":
        kept = "".join(ch for ch in text if is_cjk(ch) or (ch.isascii() and ch.isalnum()))
        if len(kept) > 8:
            kept = kept[:8]
        # Only the first and the last may be Chinese.
        kept = "".join(ch for i, ch in enumerate(kept) if not is_cjk(ch) or i in (0, len(kept) - 1))
        return kept or "无"
    if kind == "name":
        kept = "".join(ch for ch in text if is_cjk(ch) or ch.isascii() and (ch.isalpha() or ch in " .-") or ch == "·")
        kept = kept.strip()
        return (kept[:10] if any(is_cjk(ch) for ch in kept) else kept[:20]) or "-"
    if kind == "phrase":
        return "".join(ch for ch in text if is_cjk(ch))[:5] or "无"
    raise ValueError(f"unknown field kind {kind!r}")  # pragma: no cover - KINDS is checked above


# -- WeChat's rules, as a check ----------------------------------------------------------------------

_DATE = r"(?:\d{4}年\d{1,2}月\d{1,2}日|\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2})"
_CLOCK = r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?"
_TIME_POINT = rf"(?:{_DATE}\s?)?{_CLOCK}"
_DATE_POINT = rf"{_DATE}(?:\s?{_CLOCK})?"
_TIME = re.compile(rf"{_TIME_POINT}(?:\s?~\s?{_TIME_POINT})?")
_DATE_RE = re.compile(rf"{_DATE_POINT}(?:\s?~\s?{_DATE_POINT})?")
_AMOUNT = re.compile(r"[¥￥$€£]?(-?\d+(?:\.\d+)?)元?")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def valid(kind: str, value: str) -> bool:
    """Does `value` keep WeChat's rule for `kind` (the table above)? Empty is never valid."""
    if not isinstance(value, str) or not value:
        return False
    if kind == "thing":
        return len(value) <= 20
    if kind == "number":
        return len(value) <= 32 and bool(_NUMBER.fullmatch(value))
    if kind == "letter":
        return len(value) <= 32 and all(ch.isascii() and ch.isalpha() for ch in value)
    if kind == "symbol":
        return len(value) <= 5 and all(_is_symbol(ch) for ch in value)
    if kind == "character_string":
        return len(value) <= 32 and all(_printable_ascii(ch) for ch in value)
    if kind == "time":
        return bool(_TIME.fullmatch(value))
    if kind == "date":
        return bool(_DATE_RE.fullmatch(value))
    if kind == "amount":
        match = _AMOUNT.fullmatch(value)
        return bool(match) and sum(ch.isdigit() for ch in match.group(1)) <= 10
    if kind == "phone_number":
        return len(value) <= 17 and all(ch.isdigit() or (_is_symbol(ch) and ch.isascii()) for ch in value)
    if kind == "car_number":
        if len(value) > 8:
            return False
        inner = value[1:-1] if len(value) > 2 else ""
        ends = [value[0], value[-1]]
        return all(ch.isascii() and ch.isalnum() for ch in inner) and \
            all(is_cjk(ch) or (ch.isascii() and ch.isalnum()) for ch in ends)
    if kind == "name":
        if any(ch.isdigit() for ch in value):
            return False
        return len(value) <= (10 if any(is_cjk(ch) for ch in value) else 20)
    if kind == "phrase":
        return len(value) <= 5 and all(is_cjk(ch) for ch in value)
    return False
