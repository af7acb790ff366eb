"""Flask extensions for the store and the WeChat clients.

Each keeps its per-app state in `app.extensions[...]` and reaches it through
`current_app`, so one object serves every app the factory makes (tests make many).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from .store import Store, make_store
from .wechat.http import make_session
from .wechat.miniapp import MiniAppClient
from .wechat.pay.client import PayClient, PayCredentials
from .wechat.token import AccessTokenManager

OFFICIAL_API_BASE = "https://api.weixin.qq.com"
OFFICIAL_PAY_BASE = "https://api.mch.weixin.qq.com"
# In sandbox mode both bases point here, and a transport hands the call to the app itself.
IN_APP_SANDBOX_ORIGIN = "http://wechat-sandbox.internal"


class StoreExtension:
    def init_app(self, app: Flask) -> None:
        app.extensions["store"] = make_store(app.config["REDIS_URL"], app.config["EMBEDDED_STORE_PATH"],
                                             app.config.get("STORE_PREFIX", "miniapp:"))

    @property
    def backend(self) -> Store:
        return current_app.extensions["store"]

    def __getattr__(self, name: str):
        return getattr(self.backend, name)


@dataclass
class WeChatState:
    miniapp: MiniAppClient
    pay: PayClient
    in_app_sandbox: bool
    access_token: AccessTokenManager


class WeChatExtension:
    def init_app(self, app: Flask) -> None:
        cfg = app.config
        session = make_session(cfg["WECHAT_CONNECT_TIMEOUT"], cfg["WECHAT_READ_TIMEOUT"])
        api_base, pay_base = cfg["WECHAT_API_BASE"], cfg["WECHAT_PAY_BASE"]
        in_app = bool(cfg["WECHAT_SANDBOX"]) and api_base == OFFICIAL_API_BASE and pay_base == OFFICIAL_PAY_BASE
        if in_app:
            # The backend is its own WeChat: reach the emulator without a second HTTP request,
            # so sync workers can never all wait on each other (see the contract's trap).
            from .sandbox.transport import WSGIAdapter

            session.mount(IN_APP_SANDBOX_ORIGIN + "/", WSGIAdapter(app))
            api_base = pay_base = IN_APP_SANDBOX_ORIGIN + "/sandbox"
        elif cfg["WECHAT_SANDBOX"]:
            pass  # a sandbox in its own process: plain HTTP to the bases given
        cert = (cfg["WECHAT_CERT_PATH"], cfg["WECHAT_KEY_PATH"]) if cfg["WECHAT_CERT_PATH"] else None
        creds = PayCredentials(cfg["WECHAT_APPID"], cfg["WECHAT_MCH_ID"], cfg["WECHAT_PAY_KEY"], cfg["WECHAT_SIGN_TYPE"])
        from . import audit  # every exchange with WeChat goes into the audit trail, redacted

        audit.install()
        miniapp = MiniAppClient(cfg["WECHAT_APPID"], cfg["WECHAT_APPSECRET"], api_base, session,
                                token_endpoint=cfg.get("WECHAT_TOKEN_ENDPOINT", "stable_token"),
                                on_exchange=audit.outgoing)
        app.extensions["wechat"] = WeChatState(
            miniapp=miniapp,
            pay=PayClient(creds, pay_base, session, cert=cert, on_exchange=audit.outgoing),
            in_app_sandbox=in_app,
            # One token for every worker: cached in the store (bound before us in register_extensions).
            access_token=AccessTokenManager(app.extensions["store"], miniapp.fetch_access_token, cfg["WECHAT_APPID"]),
        )

    @property
    def state(self) -> WeChatState:
        return current_app.extensions["wechat"]

    @property
    def miniapp(self) -> MiniAppClient:
        return self.state.miniapp

    @property
    def pay(self) -> PayClient:
        return self.state.pay

    @property
    def access_token(self) -> AccessTokenManager:
        """`wechat.access_token.call(lambda token: ...)`: the shared token, refreshed once on 40001/42001."""
        return self.state.access_token
