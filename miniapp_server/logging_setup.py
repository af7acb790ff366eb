"""Logging: plain or JSON lines, each with the request id, and a filter that keeps secrets out.

`LOG_FORMAT=json` gives one JSON object per line. The request id comes from an
incoming `X-Request-Id` (or is made up) and is echoed in the answer. It lives on
the request, not on `g`: in sandbox mode a call to WeChat is a nested request in
the same app context (so the same `g`), which must not overwrite the caller's id.
Outside a request (the CLI, `reconcile --watch`) `run_id()` gives one id per run.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import secrets
import sys
from typing import Iterator

from flask import Flask, has_request_context, request

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Values that must never reach a log line, whatever a careless caller passes in.
_SECRET_FIELDS = re.compile(
    r"(session_key|secret|api_key|pay_key|paySign|msg_signature|signature|sign|sig|key|token|access_token)([\"']?\s*[:=]\s*[\"']?)([^\s\"'&,}<]+)",
    re.IGNORECASE,
)


_ENVIRON_KEY = "miniapp.request_id"
_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("miniapp_run_id", default=None)


def current_request_id() -> str | None:
    if has_request_context():
        rid = request.environ.get(_ENVIRON_KEY)
        if rid:
            return rid
    return _run_id.get()


@contextlib.contextmanager
def run_id(value: str | None = None) -> Iterator[str]:
    """An id for the logs and audit rows of work done outside a request (a CLI command)."""
    rid = value or secrets.token_hex(8)
    token = _run_id.set(rid)
    try:
        yield rid
    finally:
        _run_id.reset(token)


def valid_request_id(value: str | None) -> bool:
    return bool(value) and bool(_REQUEST_ID.match(value or ""))


def redact(text: str) -> str:
    return _SECRET_FIELDS.sub(lambda m: m.group(1) + m.group(2) + "[redacted]", text)


class RequestContextFilter(logging.Filter):
    def __init__(self, secrets_to_hide: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets_to_hide if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        message = record.getMessage()
        cleaned = redact(message)
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "[redacted]")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(app: Flask) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestContextFilter([app.config.get(k, "") for k in
                                            ("WECHAT_PAY_KEY", "WECHAT_APPSECRET", "SECRET_KEY")]))
    if app.config.get("LOG_FORMAT") == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger("miniapp_server")
    root.handlers = [handler]
    root.setLevel(app.config.get("LOG_LEVEL", "INFO"))
    root.propagate = True  # pytest's caplog listens on the root logger
    app.logger.handlers = [handler]

    @app.before_request
    def _request_id():
        incoming = request.headers.get("X-Request-Id", "")
        request.environ[_ENVIRON_KEY] = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)

    @app.after_request
    def _echo_request_id(response):
        rid = request.environ.get(_ENVIRON_KEY)
        if rid:
            response.headers["X-Request-Id"] = rid
        return response
