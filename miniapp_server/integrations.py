"""Flask extensions for the store and the WeChat clients.

Each keeps its per-app state in `app.extensions[...]` and reaches it through
`current_app`, so one object serves every app the factory makes (tests make many).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from flask import Flask, current_app

from .config import ConfigError
from .store import Store, make_store
from .wechat.errors import NotificationRejected
from .wechat.http import make_session
from .wechat.miniapp import MiniAppClient
from .wechat.pay.client import PayClient, PayCredentials
from .wechat.pay.gateway import (V2, V3, PayGateway, V2Gateway, V3Gateway, is_signature_probe,
                                  is_v3_notification)
from .wechat.pay.v3.client import PayClientV3
from .wechat.shipping import ShippingAPI
from .wechat.token import AccessTokenManager

OFFICIAL_API_BASE = "https://api.weixin.qq.com"
OFFICIAL_PAY_BASE = "https://api.mch.weixin.qq.com"
# In sandbox mode both bases point here, and a transport hands the call to the app itself.
IN_APP_SANDBOX_ORIGIN = "http://wechat-sandbox.internal"


class StoreExtension:
    def init_app(self, app: Flask) -> None:
        app.extensions["store"] = make_store(app.config["REDIS_URL"], app.config["EMBEDDED_STORE_PATH"],
                                             app.config.get("STORE_PREFIX", "miniapp:"),
                                             float(app.config.get("STORE_TIMEOUT", 0.5)))

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
    gateway: PayGateway  # the API that WECHAT_PAY_API names: what the services use
    gateways: dict[str, PayGateway] = field(default_factory=dict)  # by API, for notifications of either
    pay_v3: PayClientV3 | None = None
    shipping: ShippingAPI | None = None


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

        audit.install(app)
        miniapp = MiniAppClient(cfg["WECHAT_APPID"], cfg["WECHAT_APPSECRET"], api_base, session,
                                token_endpoint=cfg.get("WECHAT_TOKEN_ENDPOINT", "stable_token"),
                                on_exchange=audit.outgoing)
        pay = PayClient(creds, pay_base, session, cert=cert, on_exchange=audit.outgoing)
        gateways: dict[str, PayGateway] = {}
        if cfg["WECHAT_PAY_KEY"]:  # without a v2 key nothing v2 can be trusted (an empty key signs for anyone)
            gateways[V2] = V2Gateway(pay)
        pay_v3 = None
        if cfg["WECHAT_PAY_API"] == V3:
            pay_v3 = _v3_client(app, pay_base, session, audit.outgoing)
            gateways[V3] = V3Gateway(pay_v3)
        app.extensions["wechat"] = WeChatState(
            miniapp=miniapp,
            pay=pay,
            in_app_sandbox=in_app,
            # One token for every worker: cached in the store (bound before us in register_extensions).
            access_token=AccessTokenManager(app.extensions["store"], miniapp.fetch_access_token, cfg["WECHAT_APPID"]),
            gateway=gateways.get(cfg["WECHAT_PAY_API"]) or V2Gateway(pay),
            gateways=gateways,
            pay_v3=pay_v3,
            shipping=ShippingAPI(miniapp),
        )

    @property
    def state(self) -> WeChatState:
        return current_app.extensions["wechat"]

    @property
    def miniapp(self) -> MiniAppClient:
        return self.state.miniapp

    @property
    def pay(self) -> PayClient:
        """The v2 client itself (v2's own tests and tools); services use `gateway`."""
        return self.state.pay

    @property
    def gateway(self) -> PayGateway:
        """WeChat Pay behind one interface, v2 or v3 as WECHAT_PAY_API says."""
        return self.state.gateway

    def notification_gateway(self, headers: Mapping[str, str]) -> PayGateway | None:
        """Who can check this notification: v3 (JSON, Wechatpay-* headers) or v2 (signed XML), if configured.

        In v3 mode v2 notifications are still taken while a v2 key is set: WeChat keeps retrying the
        notifications of orders made before a switch for up to a day.
        """
        return self.state.gateways.get(V3 if is_v3_notification(headers) else V2)

    def parse_notification(self, kind: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        """A `payment` or `refund` notification's verified fields, in v2's names, from whichever API sent it.

        Raises NotificationRejected when it is not WeChat's, not ours, or of an API not configured here.
        """
        if is_signature_probe(headers):  # whatever API this shop runs: WeChat's probe, refused as it expects
            raise NotificationRejected("a signature probe from WeChat (WECHATPAY/SIGNTEST_): refused, as expected",
                                       "signature_probe")
        gateway = self.notification_gateway(headers)
        if gateway is None:
            raise NotificationRejected("notifications of this WeChat Pay API are not configured here", "wrong_api")
        if kind == "refund":
            return gateway.parse_refund_notification(headers, body)
        return gateway.parse_payment_notification(headers, body)

    @property
    def shipping(self) -> ShippingAPI:
        """The order-shipping management calls (`/wxa/sec/order/*`); pair them with `access_token.call`."""
        assert self.state.shipping is not None
        return self.state.shipping

    @property
    def access_token(self) -> AccessTokenManager:
        """`wechat.access_token.call(lambda token: ...)`: the shared token, refreshed once on 40001/42001."""
        return self.state.access_token


def _v3_client(app: Flask, pay_base: str, session, on_exchange) -> PayClientV3:
    """The v3 client from the settings; in sandbox mode, keys not given are the sandbox's own."""
    from .wechat.pay.v3.client import V3Credentials
    from .wechat.pay.v3.keys import KeyFileError, load_private_key, load_public_key

    cfg = app.config
    key_path, serial = cfg["WECHAT_MCH_PRIVATE_KEY_PATH"], cfg["WECHAT_MCH_CERT_SERIAL"]
    public_path, public_id = cfg["WECHAT_PAY_PUBLIC_KEY_PATH"], cfg["WECHAT_PAY_PUBLIC_KEY_ID"]
    certificates = cfg["WECHAT_PAY_USE_PLATFORM_CERTS"]
    if cfg["WECHAT_SANDBOX"] and not key_path:
        from .sandbox.v3_keys import ensure_keys  # made once per machine, shared by every worker

        keys = ensure_keys(cfg["SANDBOX_V3_KEY_DIR"], cfg["WECHAT_MCH_ID"])
        key_path, serial = str(keys.merchant_key_path), serial or keys.merchant_serial
        if not public_path:
            public_path, public_id = str(keys.public_key_path), keys.public_key_id
            certificates = cfg["WECHAT_PAY_PLATFORM_CERTS"] not in ("auto", "0", "false", "no", "off")
    if not key_path or not serial:
        raise ConfigError("WECHAT_PAY_API=v3 needs WECHAT_MCH_PRIVATE_KEY_PATH and WECHAT_MCH_CERT_SERIAL")
    if not cfg["WECHAT_PAY_V3_KEY"]:
        raise ConfigError("WECHAT_PAY_API=v3 needs WECHAT_PAY_V3_KEY")
    if bool(public_path) != bool(public_id):
        raise ConfigError("WECHAT_PAY_PUBLIC_KEY_PATH and WECHAT_PAY_PUBLIC_KEY_ID go together")
    if not public_path and not certificates:
        raise ConfigError("WeChat Pay v3 needs WECHAT_PAY_PUBLIC_KEY_PATH/_ID or platform certificates")
    try:
        private_key = load_private_key(key_path)
    except KeyFileError as exc:
        raise ConfigError(f"WECHAT_MCH_PRIVATE_KEY_PATH: {exc}") from None
    try:
        public_key = load_public_key(public_path) if public_path else None
    except KeyFileError as exc:
        raise ConfigError(f"WECHAT_PAY_PUBLIC_KEY_PATH: {exc}") from None
    creds = V3Credentials(cfg["WECHAT_APPID"], cfg["WECHAT_MCH_ID"], serial, private_key, cfg["WECHAT_PAY_V3_KEY"])
    return PayClientV3.build(creds, pay_base, session, public_key=public_key, public_key_id=public_id,
                             platform_certificates=bool(certificates), store=app.extensions["store"],
                             on_exchange=on_exchange)
