"""Every link the backend makes (checkout pages, QR images, derived notify URLs) starts with PUBLIC_BASE_URL.

A link built from the request's Host (or a forwarded host) is whatever the client says it is: a
client once made `checkout_url` point at https://evil.example/... Without PUBLIC_BASE_URL links are
derived from the request in development only; a notify URL is derived from the request only in
sandbox mode, where the emulator delivers to the app whatever the host (the contract).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context, url_for

from .errors import ApiError


def not_configured(what: str) -> ApiError:
    return ApiError(503, "not_configured", f"the server cannot make {what}: set PUBLIC_BASE_URL")


def path_for(endpoint: str, **values: Any) -> str:
    """The path of `endpoint` (with the app's script root), inside a request or not."""
    if has_request_context():
        return url_for(endpoint, **values)
    return current_app.url_map.bind("localhost").build(endpoint, values)


def public_url(endpoint: str, **values: Any) -> str:
    """An absolute link to `endpoint` for people (checkout pages, QR images)."""
    base = current_app.config.get("PUBLIC_BASE_URL") or ""
    if base:
        return base + path_for(endpoint, **values)
    if current_app.config["APP_ENV"] == "production" or not has_request_context():
        raise not_configured("links")
    return url_for(endpoint, _external=True, **values)  # development only: derived from the request


def notify_url() -> str:
    """Where WeChat sends payment notifications: WECHAT_NOTIFY_URL, else on PUBLIC_BASE_URL."""
    cfg = current_app.config
    if cfg["WECHAT_NOTIFY_URL"]:
        return cfg["WECHAT_NOTIFY_URL"]
    if cfg.get("PUBLIC_BASE_URL"):
        return cfg["PUBLIC_BASE_URL"] + path_for("pay.notify")
    if cfg["WECHAT_SANDBOX"] and has_request_context():
        return url_for("pay.notify", _external=True)
    raise ApiError(503, "not_configured", "the server has no notify URL for WeChat: "
                                          "set WECHAT_NOTIFY_URL or PUBLIC_BASE_URL")
