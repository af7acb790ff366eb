"""The API as a document: OpenAPI 3.1 (openapi.yaml, read once), served at GET /api/openapi.json."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from flask import Blueprint

bp = Blueprint("apidoc", __name__)
DOCUMENT = Path(__file__).with_name("openapi.yaml")
# Routes that are not ours to describe: WeChat's API as the sandbox emulates it, and static files.
UNDESCRIBED_PREFIXES = ("/sandbox/", "/static/", "/pay/static/")


@functools.cache
def document() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))


@functools.cache
def document_json() -> bytes:
    return json.dumps(document(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def openapi_path(rule: str) -> str:
    """A Flask URL rule as an OpenAPI path: `/api/orders/<out_trade_no>` -> `/api/orders/{out_trade_no}`."""
    import re

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


from . import routes  # noqa: E402,F401
