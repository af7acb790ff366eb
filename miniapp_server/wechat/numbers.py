"""Numbers as WeChat sends them: ASCII digits only.

`str.isdigit()` is true for '²', '①' and full-width '１８００' (and `int()` takes the last), so a
check built on it either crashes later or reads a number WeChat never sent. Every amount, count
and timestamp that comes from WeChat (notifications of both APIs, answers, the gateway) goes
through `ascii_uint`. No Flask here.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")  # fullmatch: no sign, no spaces, no '_', no trailing newline

FEN_DIGITS = 9  # 9 digits of fen: up to 9,999,999.99 yuan, more than any single WeChat Pay payment


def ascii_uint(value: object, max_digits: int = FEN_DIGITS) -> int | None:
    """`value` as a non-negative int if it is ASCII digits (or a JSON int) of at most `max_digits`; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10 ** max_digits else None
    if isinstance(value, str) and len(value) <= max_digits and _DIGITS.fullmatch(value):
        return int(value)
    return None
