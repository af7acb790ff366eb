"""Configuration read from the environment (and `.env`), as the contract's table says.

Everything secret comes from here and nowhere else; production refuses to start
without real credentials (see `Config.check`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from . import message_settings

SANDBOX_APPID = "wxsandbox0000000001"
SANDBOX_APPSECRET = "sandbox-app-secret-not-a-real-one"
SANDBOX_MCH_ID = "1900000109"
SANDBOX_PAY_KEY = "sandboxpaykey0000000000000000000"  # 32 chars, like a real v2 key

SANDBOX_PAY_V3_KEY = "sandboxapiv3key00000000000000000"  # 32 bytes, like a real APIv3 key
# The message push's Token and EncodingAESKey (safe mode) the sandbox signs and encrypts with.
SANDBOX_PUSH_TOKEN = "sandboxpushtoken"
SANDBOX_PUSH_AES_KEY = "sandboxPushEncodingAESKey000000000000000000"  # 43 characters, like the console's

# The sandbox's own credentials: the only ones it runs with (Config.check_sandbox).
SANDBOX_CREDENTIALS = {"WECHAT_APPID": SANDBOX_APPID, "WECHAT_APPSECRET": SANDBOX_APPSECRET,
                       "WECHAT_PAY_KEY": SANDBOX_PAY_KEY, "WECHAT_PAY_V3_KEY": SANDBOX_PAY_V3_KEY,
                       # It signs (and encrypts) message pushes too: with the real ones it could complete orders.
                       "WECHAT_PUSH_TOKEN": SANDBOX_PUSH_TOKEN, "WECHAT_PUSH_AES_KEY": SANDBOX_PUSH_AES_KEY}

SIGN_TYPES = ("MD5", "HMAC-SHA256")
PAY_APIS = ("v2", "v3")


class ConfigError(RuntimeError):
    """The configuration cannot run; the message says which setting is wrong (never its value)."""


_PUSH_TOKEN = re.compile(r"[A-Za-z0-9]{3,32}")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer") from exc


def public_origin(value: str) -> str:
    """PUBLIC_BASE_URL as scheme://host[:port] with no trailing slash; anything else is a ConfigError."""
    value = (value or "").strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise ConfigError("PUBLIC_BASE_URL must be an origin such as https://shop.example (no path, no query)")
    return value


def networks(value: str, name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A comma-separated list of addresses or CIDR networks."""
    try:
        return [ipaddress.ip_network(item.strip(), strict=False) for item in value.split(",") if item.strip()]
    except ValueError as exc:
        raise ConfigError(f"{name} must list IP addresses or networks, separated by commas") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number") from exc


@dataclass
class Config:
    """The settings the app runs with; build it with `Config.from_env()`."""

    APP_ENV: str = "development"
    SECRET_KEY: str = ""
    DATABASE_URL: str = ""
    REDIS_URL: str = ""
    WECHAT_APPID: str = ""
    WECHAT_APPSECRET: str = ""
    WECHAT_MCH_ID: str = ""
    WECHAT_PAY_KEY: str = ""
    WECHAT_SIGN_TYPE: str = "MD5"
    WECHAT_NOTIFY_URL: str = ""
    WECHAT_REFUND_NOTIFY_URL: str = ""
    WECHAT_API_BASE: str = "https://api.weixin.qq.com"
    WECHAT_PAY_BASE: str = "https://api.mch.weixin.qq.com"
    WECHAT_SANDBOX: bool = False
    WECHAT_CERT_PATH: str = ""
    WECHAT_KEY_PATH: str = ""
    # WeChat Pay API v3 (WECHAT_PAY_API=v3): RSA-signed JSON, AES-GCM notifications.
    WECHAT_PAY_API: str = "v2"
    WECHAT_PAY_V3_KEY: str = ""  # the 32-byte APIv3 key
    WECHAT_MCH_PRIVATE_KEY_PATH: str = ""  # apiclient_key.pem: signs every v3 request
    WECHAT_MCH_CERT_SERIAL: str = ""  # the serial of the merchant API certificate of that key
    WECHAT_PAY_PUBLIC_KEY_PATH: str = ""  # public-key mode: pub_key.pem from the merchant platform
    WECHAT_PAY_PUBLIC_KEY_ID: str = ""  # ... and its id, PUB_KEY_ID_...
    WECHAT_PAY_PLATFORM_CERTS: str = "auto"  # auto (only without a public key) | 1 (also, while migrating) | 0
    SANDBOX_V3_KEY_DIR: str = ""  # where the sandbox keeps its generated v3 keys; default instance/sandbox-v3
    # Message push (消息推送): the console's Token and EncodingAESKey; a key means safe mode.
    WECHAT_PUSH_TOKEN: str = ""
    WECHAT_PUSH_AES_KEY: str = ""
    SANDBOX_PUSH_URL: str = ""  # where the sandbox pushes; default: /api/wechat/events of the order's notify_url host
    SANDBOX_PUSH_FORMAT: str = "json"  # the data format the sandbox pushes in (the console's choice): json | xml
    # Beyond the contract's table: tuning with safe defaults.
    WECHAT_TOKEN_ENDPOINT: str = "stable_token"  # or "token" (the classic cgi-bin/token)
    SESSION_TTL: int = 7200  # seconds a login token lives
    LOGIN_RATE_LIMIT: int = 30  # logins per client per minute
    PREPAY_TTL: int = 7200  # WeChat's prepay_id lives two hours
    ORDER_TTL: int = 1800  # an unpaid order may be paid for this long
    MAX_ITEM_QUANTITY: int = 99
    MAX_ORDER_LINES: int = 20
    WECHAT_CONNECT_TIMEOUT: float = 3.05
    WECHAT_READ_TIMEOUT: float = 10.0
    PROXY_FIX_HOPS: int = 0  # how many trusted proxies set X-Forwarded-For
    TRUSTED_PROXIES: str = "127.0.0.1,::1"  # addresses/networks whose X-Forwarded-For is believed
    PUBLIC_BASE_URL: str = ""  # https://shop.example: the origin of every link we make
    SANDBOX_CONTROL_ALLOW: str = "127.0.0.1,::1"  # who may use the sandbox's control calls ("*": anyone)
    METRICS_ALLOW: str = "127.0.0.1/32,::1/128"  # who may read /metrics: CIDRs, comma-separated; empty: nobody
    SANDBOX_TIME_SCALE: float = 1.0  # shrinks the notification retry schedule in tests
    SANDBOX_PREPAY_TTL: int = 7200  # how long the emulator's prepay_id / code_url live; tests shorten it
    BILLS_RECONCILE: bool = True  # reconcile checks yesterday's bills once WeChat has made them
    BILLS_FUND_FLOW: str = "auto"  # auto (v3, or v2 with a client certificate) | 1 | 0
    BILLS_RETRY_MINUTES: int = 30  # a failed bill check is tried again by reconcile after this long
    # Fulfilment (docs/shipping.md): WeChat's order-shipping management.
    AUTO_SHIP_VIRTUAL: bool = False  # ship (virtual goods) every order as soon as it is paid
    SHIPPING_EXPRESS_CODES: str = ""  # more express company codes of WeChat's list, comma-separated
    SHIPPING_CONSIGNOR_PHONE: str = ""  # the shop's phone, the SF contact when the buyer's is unknown
    SHIPPING_NOT_FOUND_GRACE: int = 1800  # seconds after payment WeChat's 10060001 is taken as "not yet"
    WECHAT_SHIPPING_JUMP_PATH: str = "pages/order-detail/order-detail"  # set_msg_jump_path's path
    WECHAT_TRADE_MANAGED_CHECK: bool = True  # ask is_trade_managed once when the server starts
    EMBEDDED_STORE_PATH: str = ""
    STORE_PREFIX: str = "miniapp:"  # Redis key prefix
    STORE_TIMEOUT: float = 0.5  # seconds a store call may wait (Redis connect/read; the embedded store twice it)
    MAX_CONTENT_LENGTH: int = 1024 * 1024  # every request body, however encoded; larger is a 413
    BODY_READ_TIMEOUT: float = 10.0  # seconds for a whole body to arrive (gunicorn); slower is a 408
    LOG_FORMAT: str = "text"  # text | json
    LOG_LEVEL: str = "INFO"
    # Subscribe messages (message_settings.py): per event, its template; which version they open, their language.
    WECHAT_MESSAGES: dict[str, Any] = field(default_factory=dict)
    WECHAT_MSG_STATE: str = "formal"
    WECHAT_MSG_LANG: str = "zh_CN"
    extra: dict[str, Any] = field(default_factory=dict)
    # WECHAT_PUSH_AES_KEY given at all, even empty: in sandbox mode an empty one asks for plain mode.
    push_aes_key_given: bool = field(default=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, instance_path: str = "instance") -> "Config":
        env = dict(os.environ if env is None else env)
        cfg = cls()
        cfg.APP_ENV = env.get("APP_ENV", "development").strip() or "development"
        if cfg.APP_ENV not in ("development", "production"):
            raise ConfigError("APP_ENV must be 'development' or 'production'")
        cfg.SECRET_KEY = env.get("SECRET_KEY", "")
        cfg.DATABASE_URL = env.get("DATABASE_URL", "") or (
            "sqlite:///" + os.path.join(os.path.abspath(instance_path), "miniapp.sqlite3")
        )
        # Heroku-style URLs say postgres://, which SQLAlchemy 2 no longer accepts.
        if cfg.DATABASE_URL.startswith("postgres://"):
            cfg.DATABASE_URL = "postgresql://" + cfg.DATABASE_URL[len("postgres://"):]
        cfg.REDIS_URL = env.get("REDIS_URL", "")
        cfg.WECHAT_APPID = env.get("WECHAT_APPID", "")
        cfg.WECHAT_APPSECRET = env.get("WECHAT_APPSECRET", "")
        cfg.WECHAT_MCH_ID = env.get("WECHAT_MCH_ID", "")
        cfg.WECHAT_PAY_KEY = env.get("WECHAT_PAY_KEY", "")
        cfg.WECHAT_SIGN_TYPE = (env.get("WECHAT_SIGN_TYPE", "") or "MD5").upper()
        if cfg.WECHAT_SIGN_TYPE not in SIGN_TYPES:
            raise ConfigError("WECHAT_SIGN_TYPE must be MD5 or HMAC-SHA256")
        cfg.WECHAT_NOTIFY_URL = env.get("WECHAT_NOTIFY_URL", "")
        cfg.WECHAT_REFUND_NOTIFY_URL = env.get("WECHAT_REFUND_NOTIFY_URL", "")
        cfg.WECHAT_API_BASE = (env.get("WECHAT_API_BASE", "") or cls.WECHAT_API_BASE).rstrip("/")
        cfg.WECHAT_PAY_BASE = (env.get("WECHAT_PAY_BASE", "") or cls.WECHAT_PAY_BASE).rstrip("/")
        sandbox_raw = env.get("WECHAT_SANDBOX")
        cfg.WECHAT_SANDBOX = _flag(sandbox_raw) if sandbox_raw not in (None, "") else not cfg.WECHAT_APPID
        cfg.WECHAT_CERT_PATH = env.get("WECHAT_CERT_PATH", "")
        cfg.WECHAT_KEY_PATH = env.get("WECHAT_KEY_PATH", "")
        cfg.WECHAT_PAY_API = (env.get("WECHAT_PAY_API", "") or "v2").strip().lower()
        if cfg.WECHAT_PAY_API not in PAY_APIS:
            raise ConfigError("WECHAT_PAY_API must be v2 or v3")
        cfg.WECHAT_PAY_V3_KEY = env.get("WECHAT_PAY_V3_KEY", "")
        if cfg.WECHAT_PAY_V3_KEY and len(cfg.WECHAT_PAY_V3_KEY.encode("utf-8")) != 32:
            raise ConfigError("WECHAT_PAY_V3_KEY must be the 32-byte APIv3 key")
        cfg.WECHAT_MCH_PRIVATE_KEY_PATH = env.get("WECHAT_MCH_PRIVATE_KEY_PATH", "")
        cfg.WECHAT_MCH_CERT_SERIAL = env.get("WECHAT_MCH_CERT_SERIAL", "").strip().upper()
        cfg.WECHAT_PAY_PUBLIC_KEY_PATH = env.get("WECHAT_PAY_PUBLIC_KEY_PATH", "")
        cfg.WECHAT_PAY_PUBLIC_KEY_ID = env.get("WECHAT_PAY_PUBLIC_KEY_ID", "").strip()
        cfg.WECHAT_PAY_PLATFORM_CERTS = (env.get("WECHAT_PAY_PLATFORM_CERTS", "") or "auto").strip().lower()
        if cfg.WECHAT_PAY_PLATFORM_CERTS not in ("auto", "1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError("WECHAT_PAY_PLATFORM_CERTS must be auto, 1 or 0")
        cfg.SANDBOX_V3_KEY_DIR = env.get("SANDBOX_V3_KEY_DIR", "") or os.path.join(
            os.path.abspath(instance_path), "sandbox-v3")
        cfg.WECHAT_PUSH_TOKEN = env.get("WECHAT_PUSH_TOKEN", "").strip()
        cfg.push_aes_key_given = env.get("WECHAT_PUSH_AES_KEY") is not None
        cfg.WECHAT_PUSH_AES_KEY = (env.get("WECHAT_PUSH_AES_KEY") or "").strip()
        cfg.SANDBOX_PUSH_URL = env.get("SANDBOX_PUSH_URL", "").strip()
        cfg.SANDBOX_PUSH_FORMAT = (env.get("SANDBOX_PUSH_FORMAT", "") or "json").strip().lower()
        if cfg.SANDBOX_PUSH_FORMAT not in ("json", "xml"):
            raise ConfigError("SANDBOX_PUSH_FORMAT must be json or xml")
        cfg.WECHAT_TOKEN_ENDPOINT = env.get("WECHAT_TOKEN_ENDPOINT", "") or cls.WECHAT_TOKEN_ENDPOINT
        if cfg.WECHAT_TOKEN_ENDPOINT not in ("stable_token", "token"):
            raise ConfigError("WECHAT_TOKEN_ENDPOINT must be stable_token or token")
        cfg.SESSION_TTL = _int(env, "SESSION_TTL", cls.SESSION_TTL)
        cfg.LOGIN_RATE_LIMIT = _int(env, "LOGIN_RATE_LIMIT", cls.LOGIN_RATE_LIMIT)
        cfg.ORDER_TTL = _int(env, "ORDER_TTL", cls.ORDER_TTL)
        cfg.PREPAY_TTL = _int(env, "PREPAY_TTL", cls.PREPAY_TTL)
        cfg.SANDBOX_PREPAY_TTL = _int(env, "SANDBOX_PREPAY_TTL", cls.SANDBOX_PREPAY_TTL)
        cfg.PROXY_FIX_HOPS = _int(env, "PROXY_FIX_HOPS", cls.PROXY_FIX_HOPS)
        if cfg.PROXY_FIX_HOPS < 0:
            raise ConfigError("PROXY_FIX_HOPS must be 0 or more")
        cfg.TRUSTED_PROXIES = env.get("TRUSTED_PROXIES", "") or cls.TRUSTED_PROXIES
        networks(cfg.TRUSTED_PROXIES, "TRUSTED_PROXIES")
        cfg.PUBLIC_BASE_URL = public_origin(env.get("PUBLIC_BASE_URL", ""))
        cfg.SANDBOX_CONTROL_ALLOW = env.get("SANDBOX_CONTROL_ALLOW", "") or cls.SANDBOX_CONTROL_ALLOW
        if cfg.SANDBOX_CONTROL_ALLOW.strip() != "*":
            networks(cfg.SANDBOX_CONTROL_ALLOW, "SANDBOX_CONTROL_ALLOW")
        cfg.METRICS_ALLOW = env.get("METRICS_ALLOW", cls.METRICS_ALLOW)
        cfg.SANDBOX_TIME_SCALE = float(env.get("SANDBOX_TIME_SCALE", "") or 1.0)
        cfg.BILLS_RECONCILE = _flag(env.get("BILLS_RECONCILE")) if env.get("BILLS_RECONCILE") else True
        cfg.BILLS_FUND_FLOW = (env.get("BILLS_FUND_FLOW", "") or "auto").strip().lower()
        if cfg.BILLS_FUND_FLOW not in ("auto", "1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError("BILLS_FUND_FLOW must be auto, 1 or 0")
        cfg.BILLS_RETRY_MINUTES = _int(env, "BILLS_RETRY_MINUTES", cls.BILLS_RETRY_MINUTES)
        cfg.AUTO_SHIP_VIRTUAL = _flag(env.get("AUTO_SHIP_VIRTUAL"))
        cfg.SHIPPING_EXPRESS_CODES = env.get("SHIPPING_EXPRESS_CODES", "")
        cfg.SHIPPING_CONSIGNOR_PHONE = env.get("SHIPPING_CONSIGNOR_PHONE", "").strip()
        cfg.SHIPPING_NOT_FOUND_GRACE = _int(env, "SHIPPING_NOT_FOUND_GRACE", cls.SHIPPING_NOT_FOUND_GRACE)
        cfg.WECHAT_SHIPPING_JUMP_PATH = env.get("WECHAT_SHIPPING_JUMP_PATH", "") or cls.WECHAT_SHIPPING_JUMP_PATH
        check_raw = env.get("WECHAT_TRADE_MANAGED_CHECK")
        cfg.WECHAT_TRADE_MANAGED_CHECK = _flag(check_raw) if check_raw not in (None, "") else True
        cfg.EMBEDDED_STORE_PATH = env.get("EMBEDDED_STORE_PATH", "") or os.path.join(
            os.path.abspath(instance_path), "store.sqlite3"
        )
        cfg.STORE_PREFIX = env.get("STORE_PREFIX", "") or cls.STORE_PREFIX
        cfg.STORE_TIMEOUT = _float(env, "STORE_TIMEOUT", cls.STORE_TIMEOUT)
        cfg.MAX_CONTENT_LENGTH = _int(env, "MAX_CONTENT_LENGTH", cls.MAX_CONTENT_LENGTH)
        cfg.BODY_READ_TIMEOUT = _float(env, "BODY_READ_TIMEOUT", cls.BODY_READ_TIMEOUT)
        cfg.LOG_FORMAT = env.get("LOG_FORMAT", "") or "text"
        cfg.LOG_LEVEL = (env.get("LOG_LEVEL", "") or "INFO").upper()
        try:
            cfg.WECHAT_MESSAGES = message_settings.from_env(env, sandbox=cfg.WECHAT_SANDBOX)
            cfg.WECHAT_MSG_STATE = message_settings.state_from_env(env, sandbox=cfg.WECHAT_SANDBOX)
            cfg.WECHAT_MSG_LANG = message_settings.lang_from_env(env)
        except message_settings.MessageConfigError as exc:
            raise ConfigError(str(exc)) from None
        cfg.apply_defaults()
        return cfg

    def apply_defaults(self) -> None:
        """Fill the sandbox's credentials and a development secret where none were given."""
        if self.WECHAT_SANDBOX:
            self.WECHAT_APPID = self.WECHAT_APPID or SANDBOX_APPID
            self.WECHAT_APPSECRET = self.WECHAT_APPSECRET or SANDBOX_APPSECRET
            self.WECHAT_MCH_ID = self.WECHAT_MCH_ID or SANDBOX_MCH_ID
            self.WECHAT_PAY_KEY = self.WECHAT_PAY_KEY or SANDBOX_PAY_KEY
            # v3's keys default to the ones the sandbox generates (integrations.py reads them from SANDBOX_V3_KEY_DIR).
            self.WECHAT_PAY_V3_KEY = self.WECHAT_PAY_V3_KEY or SANDBOX_PAY_V3_KEY
            # Safe mode unless asked otherwise (WECHAT_PUSH_AES_KEY set empty: plain mode).
            self.WECHAT_PUSH_TOKEN = self.WECHAT_PUSH_TOKEN or SANDBOX_PUSH_TOKEN
            if not self.push_aes_key_given:
                self.WECHAT_PUSH_AES_KEY = self.WECHAT_PUSH_AES_KEY or SANDBOX_PUSH_AES_KEY
        if not self.SECRET_KEY and self.APP_ENV != "production":
            self.SECRET_KEY = secrets.token_hex(32)
        self.check_push()

    def check_sandbox(self) -> None:
        """The sandbox never runs beside a real credential, in any environment.

        A sandbox signs notifications with the key it is given: with the real pay key (or APIv3 key) it
        could mint notifications that the production instance accepts. So with WECHAT_SANDBOX on, each
        of these must be unset or the sandbox's own value; the message names the settings, not values.
        """
        if not self.WECHAT_SANDBOX:
            return
        foreign = [name for name, own in SANDBOX_CREDENTIALS.items() if getattr(self, name) not in ("", own)]
        if self.WECHAT_MCH_PRIVATE_KEY_PATH:
            foreign.append("WECHAT_MCH_PRIVATE_KEY_PATH")
        if foreign:
            raise ConfigError("the sandbox refuses to run beside real credentials: unset " + ", ".join(foreign)
                              + " or unset WECHAT_SANDBOX")

    def check(self) -> None:
        """Refuse to run a sandbox beside real credentials, or a production app that is not really configured."""
        self.check_sandbox()
        if self.APP_ENV != "production":
            return
        if self.WECHAT_SANDBOX:
            raise ConfigError("the sandbox must not run with APP_ENV=production; unset WECHAT_SANDBOX")
        needed = ["SECRET_KEY", "WECHAT_APPID", "WECHAT_APPSECRET", "WECHAT_MCH_ID", "WECHAT_NOTIFY_URL"]
        if self.WECHAT_PAY_API == "v3":
            needed += ["WECHAT_PAY_V3_KEY", "WECHAT_MCH_PRIVATE_KEY_PATH", "WECHAT_MCH_CERT_SERIAL"]
        else:
            needed.append("WECHAT_PAY_KEY")
        missing = [name for name in needed if not getattr(self, name)]
        if missing:
            raise ConfigError("production needs these settings: " + ", ".join(missing))
        if self.WECHAT_PAY_API == "v3":
            if bool(self.WECHAT_PAY_PUBLIC_KEY_PATH) != bool(self.WECHAT_PAY_PUBLIC_KEY_ID):
                raise ConfigError("WECHAT_PAY_PUBLIC_KEY_PATH and WECHAT_PAY_PUBLIC_KEY_ID go together")
            if not self.WECHAT_PAY_PUBLIC_KEY_PATH and not self.platform_certificates:
                raise ConfigError("WeChat Pay v3 needs WECHAT_PAY_PUBLIC_KEY_PATH/_ID or platform certificates")
        if self.WECHAT_MSG_STATE == "developer":
            raise ConfigError("WECHAT_MSG_STATE=developer would open the developer version from production's messages")
        if not self.WECHAT_NOTIFY_URL.startswith("https://"):
            raise ConfigError("WECHAT_NOTIFY_URL must be an https:// URL in production")
        if self.PUBLIC_BASE_URL and not self.PUBLIC_BASE_URL.startswith("https://"):
            raise ConfigError("PUBLIC_BASE_URL must be an https:// origin in production")
        self.check_push()
        if bool(self.WECHAT_PUSH_TOKEN) != bool(self.WECHAT_PUSH_AES_KEY):
            # Plain mode's signature does not cover the body: production takes safe mode or no push at all.
            raise ConfigError("WECHAT_PUSH_TOKEN and WECHAT_PUSH_AES_KEY go together in production (safe mode)")

    def check_push(self) -> None:
        """The message push's settings are usable (both, the Token alone for plain mode, or neither)."""
        from .wechat.push import check_encoding_aes_key

        if self.WECHAT_PUSH_TOKEN and not _PUSH_TOKEN.fullmatch(self.WECHAT_PUSH_TOKEN):
            raise ConfigError("WECHAT_PUSH_TOKEN must be the console's Token: 3 to 32 letters or digits")
        if self.WECHAT_PUSH_AES_KEY:
            problem = check_encoding_aes_key(self.WECHAT_PUSH_AES_KEY)
            if problem:
                raise ConfigError("WECHAT_PUSH_AES_KEY " + problem)
            if not self.WECHAT_PUSH_TOKEN:
                raise ConfigError("WECHAT_PUSH_AES_KEY needs WECHAT_PUSH_TOKEN (safe mode signs with the Token)")

    @property
    def platform_certificates(self) -> bool:
        """Download platform certificates? Always when asked; by default only when no public key is given."""
        if self.WECHAT_PAY_PLATFORM_CERTS == "auto":
            return not self.WECHAT_PAY_PUBLIC_KEY_PATH
        return _flag(self.WECHAT_PAY_PLATFORM_CERTS)

    def as_flask(self) -> dict[str, Any]:
        values = {k: v for k, v in vars(self).items() if k != "extra" and k.isupper()}
        values["SQLALCHEMY_DATABASE_URI"] = self.DATABASE_URL
        values["WECHAT_PAY_USE_PLATFORM_CERTS"] = self.platform_certificates
        values.update(self.extra)
        return values
