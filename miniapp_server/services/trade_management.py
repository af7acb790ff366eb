"""Whether WeChat manages this mini-program's trades (is_trade_managed), and where its messages lead.

A trade-managed mini-program's money stays frozen until each paid order's shipping is uploaded
and the buyer confirms receipt (docs/shipping.md). The server asks once when it starts (one
worker asks, the store says who) and says so plainly in its log; never per request.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, current_app

from ..extensions import store, wechat
from ..wechat.errors import WeChatError

log = logging.getLogger(__name__)

START_CHECK_KEY = "trade-managed-check"
START_CHECK_TTL = 600  # workers started within this many seconds of each other ask once between them


def trade_managed() -> bool:
    return wechat.access_token.call(wechat.miniapp.is_trade_managed)


def describe(managed: bool) -> str:
    appid = current_app.config["WECHAT_APPID"]
    if managed:
        return (f"mini-program {appid} IS trade-managed by WeChat (order-shipping management): a paid order's "
                "money stays frozen until its shipping is uploaded (flask orders ship) and the buyer confirms "
                "receipt or the trade settles")
    return (f"mini-program {appid} is NOT trade-managed by WeChat: payments settle as usual; shipping uploads "
            "are still accepted")


def set_jump_path(path: str | None = None) -> str:
    """Point WeChat's shipping and confirm-receipt messages at the mini-program's order page."""
    path = path if path is not None else current_app.config["WECHAT_SHIPPING_JUMP_PATH"]
    wechat.access_token.call(lambda token: wechat.shipping.set_msg_jump_path(token, path))
    log.info("WeChat's shipping messages now open %s", path)
    return path


def check_at_start(app: Flask) -> threading.Thread | None:
    """Ask is_trade_managed in the background and log the answer; never fails or delays the start."""
    if not app.config.get("WECHAT_TRADE_MANAGED_CHECK"):
        return None

    def ask() -> None:
        with app.app_context():
            try:
                if not store.add(START_CHECK_KEY, "1", ttl=START_CHECK_TTL):
                    return  # another worker of this start asks
                log.warning(describe(trade_managed()))
            except WeChatError as err:
                log.warning("could not ask WeChat whether the mini-program is trade-managed (%s); "
                            "`flask orders trade-managed` asks again", err)
            except Exception as err:  # noqa: BLE001 - the start never depends on this
                log.warning("trade-management check skipped (%s)", type(err).__name__)

    thread = threading.Thread(target=ask, name="trade-managed-check", daemon=True)
    thread.start()
    return thread
