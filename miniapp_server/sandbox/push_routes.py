"""`POST /sandbox/control/confirm-receipt`: the buyer confirms receipt, the sandbox pushes the settlement event."""

from __future__ import annotations

from flask import current_app, request

from . import bp
from .pushes import PushDesk


def push_desk() -> PushDesk:
    from .routes import emulator, notify_transport, shipping_desk

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    desk = app.extensions.get("sandbox_pushes")
    if desk is None:
        cfg = app.config
        # As for notifications: a push URL naming this app is handed to it in-process, any other goes over HTTP.
        _, post = notify_transport(app)

        def send(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
            return post(url, body, {"Content-Type": content_type})

        desk = app.extensions["sandbox_pushes"] = PushDesk(
            emulator(), shipping_desk(), send, cfg.get("WECHAT_PUSH_TOKEN") or "", cfg.get("WECHAT_PUSH_AES_KEY") or "",
            push_url=cfg.get("SANDBOX_PUSH_URL") or "", data_format=cfg.get("SANDBOX_PUSH_FORMAT") or "json")
    return desk


@bp.post("/control/confirm-receipt")
def control_confirm_receipt():
    """`{"out_trade_no"}` or `{"transaction_id"}`; `"estimated": true` pushes the shipping-complete variant
    instead; `"format": "xml"` pushes XML (the console's data format; default SANDBOX_PUSH_FORMAT)."""
    return push_desk().confirm_receipt(request.get_json(silent=True, force=True))
