"""The emulator's access tokens (`cgi-bin/token`, `cgi-bin/stable_token`) and the call that needs one
(`wxa/business/getuserphonenumber`), as WeChat documents them:

- a token lives 7200 s; every classic `token` call issues a new one, and the previous one keeps
  working for at most 5 more minutes;
- `stable_token` in normal mode hands back the current token (with what is left of its life) and
  renews it only in its last 5 minutes, so `expires_in` is always >= 300; `force_refresh: true`
  retires the current one at once, at most 20 times a day and not twice within 30 s;
- a call with an unknown or retired token answers 40001, an expired one 42001;
- a phone-number code is single-use and lives 5 minutes.

Knows nothing of Flask: `Emulator` delegates here and `routes.py` puts it on the web.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any, Callable

from ..store import Store

TOKEN_TTL = 7200
OVERLAP = 300  # seconds old and new tokens both work around a renewal
FORCE_PER_DAY = 20
FORCE_GAP = 30
PHONE_CODE_TTL = 300
# The mini-program's special login codes mean the same for getPhoneNumber codes.
SPECIAL_PHONE_CODES = {
    "bad-code": (40029, "invalid code"),
    "busy": (-1, "system error"),
    "frequent": (45011, "api minute-quota reach limit mostly 100/min"),
}
REFUSALS = {"revoked": (40001, "invalid credential, access_token is invalid or not latest"),
            "expired": (42001, "access_token expired")}


def _error(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg}


class TokenAuthority:
    def __init__(self, store: Store, appid: str, secret: str, count: Callable[[str], None]) -> None:
        self.store = store
        self.appid = appid
        self._secret = secret
        self._count = count

    # -- issuing ----------------------------------------------------------------------------------

    def _credentials_error(self, grant_type: object, appid: object, secret: object) -> dict[str, Any] | None:
        if grant_type != "client_credential":
            return _error(40002, "invalid grant_type")
        if not appid:
            return _error(41002, "appid missing")
        if appid != self.appid:
            return _error(40013, "invalid appid")
        if not secret:
            return _error(41004, "appsecret missing")
        if not isinstance(secret, str) or not secrets.compare_digest(secret.encode(), self._secret.encode()):
            return _error(40125, "invalid appsecret")
        return None

    @staticmethod
    def _key(token: str) -> str:
        return "sandbox:token:" + hashlib.sha256(token.encode()).hexdigest()

    def _issue(self, kind: str) -> str:
        token = secrets.token_urlsafe(96)  # WeChat's tokens are long; callers must keep 512 characters
        self.store.set(self._key(token), "ok", ttl=TOKEN_TTL)
        self.store.set(f"sandbox:token:current:{kind}",
                       json.dumps({"token": token, "expires_at": time.time() + TOKEN_TTL}), ttl=TOKEN_TTL)
        return token

    def _current(self, kind: str) -> tuple[str, float] | None:
        raw = self.store.get(f"sandbox:token:current:{kind}")
        if not raw:
            return None
        entry = json.loads(raw)
        if self.store.get(self._key(entry["token"])) != "ok":
            return None  # revoked or expired meanwhile
        return entry["token"], entry["expires_at"] - time.time()

    def _shorten(self, token: str, left: float) -> None:
        # The outgoing token keeps working through the overlap, then dies.
        if left > 0:
            self.store.set(self._key(token), "ok", ttl=min(left, OVERLAP))

    def token(self, args: dict[str, str]) -> dict[str, Any]:
        """GET /cgi-bin/token: a new token on every call."""
        self._count("token")
        refused = self._credentials_error(args.get("grant_type"), args.get("appid"), args.get("secret"))
        if refused:
            return refused
        with self.store.lock("sandbox-token-classic", timeout=10, wait=10):
            previous = self._current("token")
            if previous:
                self._shorten(*previous)
            return {"access_token": self._issue("token"), "expires_in": TOKEN_TTL}

    def stable_token(self, body: object) -> dict[str, Any]:
        """POST /cgi-bin/stable_token with a JSON body."""
        self._count("stable_token")
        if not isinstance(body, dict):
            return _error(47001, "data format error")
        refused = self._credentials_error(body.get("grant_type"), body.get("appid"), body.get("secret"))
        if refused:
            return refused
        force = body.get("force_refresh", False)
        if not isinstance(force, bool):
            return _error(40097, "invalid args: force_refresh must be a boolean")
        if force and self.store.incr(f"sandbox:token:forced:{time.strftime('%Y%m%d')}", 86400) > FORCE_PER_DAY:
            return _error(45009, "reach max api daily quota limit")
        # One stable token per appid: two callers at once get the same one, as at WeChat.
        with self.store.lock("sandbox-token-stable", timeout=10, wait=10):
            current = self._current("stable")
            if force:
                if current and self.store.get("sandbox:token:force_gap"):
                    token, left = current  # forced again within 30 s: WeChat does not refresh
                    return {"access_token": token, "expires_in": int(left)}
                if current:
                    self.store.delete(self._key(current[0]))  # forced: the old token dies at once
                self.store.set("sandbox:token:force_gap", "1", ttl=FORCE_GAP)
                return {"access_token": self._issue("stable"), "expires_in": TOKEN_TTL}
            if current and current[1] > OVERLAP:
                token, left = current
                return {"access_token": token, "expires_in": int(left)}
            if current:
                self._shorten(*current)  # its last 5 minutes: renew early, both work meanwhile
            return {"access_token": self._issue("stable"), "expires_in": TOKEN_TTL}

    # -- checking and revoking --------------------------------------------------------------------

    def refusal(self, access_token: str) -> dict[str, Any] | None:
        """WeChat's answer to a call made with this token, or None if the token is good."""
        if not access_token:
            return _error(41001, "access_token missing")
        status = self.store.get(self._key(access_token))
        if status == "ok":
            return None
        return _error(*REFUSALS.get(status or "", REFUSALS["revoked"]))

    def revoke(self, access_token: str | None = None, reason: str = "revoked") -> dict[str, Any]:
        """Control: retire the given token, or every current one, so that its next use answers
        40001 (`revoked`) or 42001 (`expired`). The next token call then issues a new token."""
        if reason not in REFUSALS:
            raise ValueError("reason must be 'revoked' or 'expired'")
        targets = [access_token] if access_token else [c[0] for c in map(self._current, ("token", "stable")) if c]
        for token in targets:
            key = self._key(token)
            if self.store.get(key) is not None:
                # Keep the mark a while so the right errcode comes back; WeChat forgets it too, eventually.
                self.store.set(key, reason, ttl=TOKEN_TTL)
        return {"revoked": len(targets), "errcode": REFUSALS[reason][0]}

    # -- calls that need a token ------------------------------------------------------------------

    def phone_number_for(self, code: str) -> tuple[str, str]:
        """(countryCode, purePhoneNumber): `tel:13912345678` or `tel:+1-2025550123` pick one, any other
        code gives a stable mainland number ("alice#1" and "alice#2" are one person, as at login)."""
        if code.startswith("tel:"):
            number = code[4:]
            if number.startswith("+") and "-" in number:
                country, _, pure = number[1:].partition("-")
                return country, pure
            return "86", number
        who = code.split("#", 1)[0]
        digits = int.from_bytes(hashlib.sha256(f"{self.appid}:phone:{who}".encode()).digest()[:8], "big")
        return "86", "13" + str(digits % 10**9).zfill(9)

    def getuserphonenumber(self, access_token: str, body: object) -> dict[str, Any]:
        self._count("getuserphonenumber")
        refused = self.refusal(access_token)  # the token first: a refused call does not use up the code
        if refused:
            return refused
        if not isinstance(body, dict):
            return _error(47001, "data format error")
        code = body.get("code")
        if not isinstance(code, str) or not code:
            return _error(40029, "invalid code")
        if code in SPECIAL_PHONE_CODES:
            return _error(*SPECIAL_PHONE_CODES[code])
        if code.startswith("tel:") and not code[4:].lstrip("+").replace("-", "").isdigit():
            return _error(40029, "invalid code")
        if not self.store.add("sandbox:phonecode:" + hashlib.sha256(code.encode()).hexdigest(), "used",
                              ttl=PHONE_CODE_TTL):
            return _error(40029, "invalid code, code been used")
        country, pure = self.phone_number_for(code)
        full = pure if country == "86" else f"+{country}-{pure}"
        return {"errcode": 0, "errmsg": "ok", "phone_info": {
            "phoneNumber": full, "purePhoneNumber": pure, "countryCode": country,
            "watermark": {"timestamp": int(time.time()), "appid": self.appid},
        }}
