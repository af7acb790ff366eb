"""Small helpers the views share: reading a JSON body and paging arguments."""

from __future__ import annotations

from typing import Any

from flask import request

from .errors import bad_request

MAX_JSON_BODY = 64 * 1024


def json_body(required: bool = True) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    if request.content_length and request.content_length > MAX_JSON_BODY:
        raise bad_request("body_too_large", "the request body is too large")
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise bad_request("missing_body", "a JSON object body is required")
        return {}
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise bad_request("invalid_json", "the body is not valid JSON")
    if not isinstance(data, dict):
        raise bad_request("invalid_json", "the body must be a JSON object")
    return data


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request("invalid_argument", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise bad_request("invalid_argument", f"{name} must be between {low} and {high}")
    return value
