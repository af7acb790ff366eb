"""JSON from outside, parsed with a bound on its nesting.

Python's parser recurses once per level: some hundred `[` (2 KB) exhaust the interpreter's
recursion limit and raise RecursionError, which is no ValueError and so slips past every
`except ValueError` around a parse. `loads` refuses a document nested deeper than `MAX_DEPTH`
before parsing it, with `JSONTooDeep`, a ValueError: callers that refuse bad JSON refuse this too.
Nothing WeChat or the mini-program sends is nested more than a few levels. No Flask here.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)  # brackets inside strings do not nest
_INNERMOST = re.compile(rb"[\[{][^\[\]{}]*[\]}]")  # an array or object with nothing nested inside


class JSONTooDeep(ValueError):
    """The document nests arrays and objects deeper than we parse."""


def too_deep(raw: bytes | str, max_depth: int = MAX_DEPTH) -> bool:
    """Does `raw` nest deeper than `max_depth`? Linear passes in C (re), at most `max_depth` of them."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # the common case, decided by two counts
    data = _STRING.sub(b'""', data)
    for _ in range(max_depth):
        data, removed = _INNERMOST.subn(b"", data)
        if not removed:
            return False
    return b"[" in data or b"{" in data


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, refusing (JSONTooDeep) what nests deeper than `max_depth`."""
    if too_deep(raw, max_depth):
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(raw)
