"""api.weixin.qq.com calls for the mini-program: code2session."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests

from .errors import WeChatUnavailable, for_errcode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    openid: str
    session_key: str
    unionid: str | None = None

    def __repr__(self) -> str:  # the session_key must never reach a log through a repr
        return f"Session(openid={self.openid!r}, unionid={self.unionid!r})"


class MiniAppClient:
    def __init__(self, appid: str, secret: str, base: str, session: requests.Session) -> None:
        self.appid = appid
        self._secret = secret
        self.base = base.rstrip("/")
        self.http = session

    def _get_json(self, path: str, params: dict[str, str]) -> dict:
        try:
            resp = self.http.get(self.base + path, params=params)
        except requests.RequestException as exc:
            raise WeChatUnavailable(f"no answer from WeChat ({type(exc).__name__})") from None
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
