"""Small helpers the views share: reading a JSON body and paging arguments, within bounds.

Bodies: `MAX_CONTENT_LENGTH` (the app's setting) bounds every request's body whatever its
encoding: werkzeug refuses a larger Content-Length at once and stops a chunked body the moment it
passes the limit (gunicorn sets `wsgi.input_terminated`), raising 413. A JSON call's body is held
to `MAX_JSON_BODY` the same way. JSON is parsed with a bound on its depth (`wechat.jsonlimits`).
"""

from __future__ import annotations

import re
from typing import Any

from flask import request
from flask.json.provider import DefaultJSONProvider

from .errors import bad_request
from .wechat import jsonlimits
from .wechat.ipaddr import clean_ip

MAX_JSON_BODY = 64 * 1024
_ASCII_INT = re.compile(r"[0-9]{1,10}")


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, but a document nested too deep is a ValueError (a 400), never a RecursionError (a 500).

    Every `request.get_json()` of the app goes through it: views, the sandbox, whatever is added later.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if jsonlimits.too_deep(s):
            raise jsonlimits.JSONTooDeep(f"JSON nested deeper than {jsonlimits.MAX_DEPTH} levels")
        return super().loads(s, **kwargs)


def json_body(required: bool = True) -> dict[str, Any]:
    """The request's JSON object, or a 400 (413 when too large) that says what is wrong with it."""
    if request.max_content_length is None or request.max_content_length > MAX_JSON_BODY:
        request.max_content_length = MAX_JSON_BODY  # Flask 3.1: this request's limit, chunked bodies included
    raw = request.get_data(cache=True)  # 413 past the limit (body_buffer made every body one of known length)
    if not raw.strip():
        if required:
            raise bad_request("missing_body", "a JSON object body is required")
        return {}
    try:
        data = jsonlimits.loads(raw)
    except jsonlimits.JSONTooDeep:
        raise bad_request("json_too_deep", f"the JSON is nested deeper than {jsonlimits.MAX_DEPTH} levels") from None
    except ValueError:  # includes UnicodeDecodeError
        raise bad_request("invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("invalid_json", "the body must be a JSON object")
    return data


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A query argument of ASCII digits within [low, high] (`int()` alone takes '１２', ' 12', '1_2')."""
    raw = request.args.get(name)
    if raw is None:  # given but empty (`?page=`) is not absent: it is no integer
        return default
    if not _ASCII_INT.fullmatch(raw):
        raise bad_request("invalid_argument", f"{name} must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise bad_request("invalid_argument", f"{name} must be between {low} and {high}")
    return value


def client_address() -> str:
    """The caller's address: the socket's peer, or behind PROXY_FIX_HOPS trusted proxies the address they
    forwarded (miniapp_server/proxy.py); always a valid IP (127.0.0.1 when the server cannot tell)."""
    return clean_ip(request.remote_addr) or "127.0.0.1"
