"""api.weixin.qq.com calls for the mini-program: code2session, the access_token, phone numbers
(the order-shipping calls are in `shipping.py`, on top of `post_json`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import requests

from .errors import WeChatError, WeChatUnavailable, for_errcode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    openid: str
    session_key: str
    unionid: str | None = None

    def __repr__(self) -> str:  # the session_key must never reach a log through a repr
        return f"Session(openid={self.openid!r}, unionid={self.unionid!r})"


@dataclass(frozen=True)
class AccessToken:
    """An access_token as WeChat gave it: the value and how many seconds it lives from the asking."""

    value: str = field(repr=False)  # a credential: keep it out of reprs and logs
    expires_in: int

    def __repr__(self) -> str:
        return f"AccessToken(expires_in={self.expires_in})"


# Which WeChat call gives access tokens: `stable_token` (the default; it does not invalidate tokens
# that other holders of the same appid fetched) or the classic `token`.
TOKEN_ENDPOINTS = ("stable_token", "token")

# Called after every call: (path, request fields, answer or None, outcome, seconds); as PayClient's hook.
ExchangeHook = Callable[[str, Mapping[str, Any], Mapping[str, Any] | None, str, float], None]


class MiniAppClient:
    def __init__(self, appid: str, secret: str, base: str, session: requests.Session,
                 token_endpoint: str = "stable_token", on_exchange: ExchangeHook | None = None) -> None:
        if token_endpoint not in TOKEN_ENDPOINTS:
            raise ValueError(f"token_endpoint must be one of {TOKEN_ENDPOINTS}")
        self.appid = appid
        self._secret = secret
        self.base = base.rstrip("/")
        self.http = session
        self.token_endpoint = token_endpoint
        self.on_exchange = on_exchange

    def _get_json(self, path: str, params: dict[str, str]) -> dict:
        return self._call("GET", path, params=params)

    def _post_json(self, path: str, body: dict[str, Any], params: dict[str, str] | None = None) -> dict:
        return self._call("POST", path, params=params, json=body)

    def post_json(self, path: str, body: dict[str, Any], *, access_token: str) -> dict:
        """POST a JSON body to a call that takes the access_token in its query (wxa/..., cgi-bin/...)."""
        return self._post_json(path, body, params={"access_token": access_token})

    def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        started = time.perf_counter()
        answer: dict | None = None
        outcome = "ok"
        try:
            answer = self._call_once(method, path, **kwargs)
            return answer
        except WeChatError as exc:
            outcome = f"{type(exc).__name__}:{exc.code if exc.code is not None else ''}"
            raise
        finally:
            if self.on_exchange:  # the hook redacts; the fields hold the secret and the answer session_key
                fields = {**(kwargs.get("params") or {}), **(kwargs.get("json") or {})}
                self.on_exchange(path, fields, answer, outcome, time.perf_counter() - started)

    def _call_once(self, method: str, path: str, **kwargs: Any) -> dict:
        try:
            resp = self.http.request(method, self.base + path, **kwargs)
        except requests.RequestException as exc:
            raise WeChatUnavailable(f"no answer from WeChat ({type(exc).__name__})") from None
        if resp.status_code >= 500:  # whatever the body says, this is no answer to believe
            raise WeChatUnavailable(f"WeChat answered HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            raise WeChatUnavailable(f"WeChat answered HTTP {resp.status_code} without JSON") from None
        if not isinstance(data, dict):
            raise WeChatUnavailable("WeChat answered JSON that is not an object")
        errcode = data.get("errcode") or 0
        if errcode:
            log.info("wechat %s errcode=%s", path, errcode)
            raise for_errcode(int(errcode), str(data.get("errmsg", "")), {"errcode": errcode})
        return data

    def code2session(self, code: str) -> Session:
        data = self._get_json(
            "/sns/jscode2session",
            {"appid": self.appid, "secret": self._secret, "js_code": code, "grant_type": "authorization_code"},
        )
        openid, session_key = data.get("openid"), data.get("session_key")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str) or not session_key:
            raise WeChatUnavailable("code2session answered without openid or session_key")
        unionid = data.get("unionid")
        return Session(openid=openid, session_key=session_key, unionid=unionid if isinstance(unionid, str) else None)

    def fetch_access_token(self, force_refresh: bool = False, endpoint: str | None = None) -> AccessToken:
        """A token straight from WeChat (no cache: use `wechat.token.AccessTokenManager`).

        `force_refresh` only means something to `stable_token`, where it makes WeChat drop the
        current token and issue a new one (WeChat allows that a few times a day); the classic
        `token` call issues a new token every time anyway. `endpoint` overrides the configured one
        (the doctor tries the credentials with `stable_token`, which leaves the current token alone).
        """
        if (endpoint or self.token_endpoint) == "stable_token":
            data = self._post_json("/cgi-bin/stable_token", {
                "grant_type": "client_credential", "appid": self.appid, "secret": self._secret,
                "force_refresh": bool(force_refresh),
            })
        else:
            data = self._get_json("/cgi-bin/token",
                                  {"grant_type": "client_credential", "appid": self.appid, "secret": self._secret})
        token, expires_in = data.get("access_token"), data.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int) or expires_in <= 0:
            raise WeChatUnavailable(f"{self.token_endpoint} answered without access_token or expires_in")
        return AccessToken(token, expires_in)

    def is_trade_managed(self, access_token: str) -> bool:
        """`/wxa/sec/order/is_trade_managed`: does WeChat manage this mini-program's trades (so that every
        paid order needs its shipping information uploaded before the money is settled)?"""
        data = self._post_json("/wxa/sec/order/is_trade_managed", {"appid": self.appid},
                               params={"access_token": access_token})
        managed = data.get("is_trade_managed")
        if not isinstance(managed, bool):
            raise WeChatUnavailable("is_trade_managed answered without is_trade_managed")
        return managed

    def get_phone_number(self, access_token: str, code: str) -> dict[str, Any]:
        """`phone_info` for the code of a getPhoneNumber button: phoneNumber, purePhoneNumber, countryCode, watermark."""
        data = self._post_json("/wxa/business/getuserphonenumber", {"code": code},
                               params={"access_token": access_token})
        info = data.get("phone_info")
        if not isinstance(info, dict) or not (info.get("purePhoneNumber") or info.get("phoneNumber")):
            raise WeChatUnavailable("getuserphonenumber answered without phone_info")
        return info

    def send_subscribe_message(self, access_token: str, message: Mapping[str, Any]) -> dict[str, Any]:
        """`subscribe/send` one message: `{touser, template_id, page, data, miniprogram_state, lang}`.

        Answers WeChat's `{errcode: 0, errmsg: "ok", msgid}`; any other errcode raises (wechat.errors),
        e.g. 43101 when the person has no accept left for this template.
        """
        return self._post_json("/cgi-bin/message/subscribe/send", dict(message), params={"access_token": access_token})
