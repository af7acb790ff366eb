"""One access_token for the whole deployment, kept in the shared store.

WeChat limits how many tokens an appid may fetch a day, and (with the classic
`cgi-bin/token`) each fetch retires the token every other worker holds. So:

- the token lives in the store (Redis or the embedded store), shared by every worker process;
- it is refreshed a few minutes before WeChat would expire it, so no call ever carries a dying token;
- at most one worker fetches at a time: it takes `store.lock`, looks again (someone may have
  fetched while it waited), and only then asks WeChat; the others poll the store for the result;
- when WeChat answers 40001/42001 (`InvalidCredential`), the caller refreshes once and retries once.
  The refresh names the token that failed, so a hundred callers that saw the same dead token cause
  one fetch: whoever comes second finds a different token in the store and takes it.

Protocol layer: no Flask. Anything with the store's `get/set/lock` and a `fetch(force_refresh)`
callable will do (`MiniAppClient.fetch_access_token`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable, Protocol, TypeVar

from ..store import LockTimeout
from .errors import InvalidCredential, WeChatUnavailable
from .miniapp import AccessToken

log = logging.getLogger(__name__)

T = TypeVar("T")

REFRESH_MARGIN = 300  # seconds before WeChat's expiry that we stop handing the token out
LOCK_TIMEOUT = 30  # longest a fetch may hold the lock (our HTTP timeouts are shorter)
WAIT = 15  # longest a caller waits for someone else's fetch before giving up


class TokenStore(Protocol):
    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str, ttl: float | None = None) -> None: ...
    def lock(self, name: str, timeout: float = 30, wait: float = 10): ...


Fetcher = Callable[[bool], AccessToken]  # fetch(force_refresh) -> a new token from WeChat


class AccessTokenManager:
    def __init__(self, store: TokenStore, fetch: Fetcher, appid: str, *, margin: float = REFRESH_MARGIN,
                 wait: float = WAIT, poll: float = 0.02, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._fetch = fetch
        # Keyed by appid: two mini-programs may share one Redis.
        self.key = f"wechat:access_token:{appid}"
        self.lock_name = f"wechat-access-token:{appid}"
        self.margin = margin
        self.wait = wait
        self.poll = poll
        self.clock = clock

    # -- the cache --------------------------------------------------------------------------------

    def cached(self) -> str | None:
        """The stored token if it is still good to hand out, else None."""
        raw = self.store.get(self.key)
        if not raw:
            return None
        try:
            entry = json.loads(raw)
            value, refresh_at = str(entry["access_token"]), float(entry["refresh_at"])
        except (ValueError, KeyError, TypeError):
            return None  # unreadable (an older format?): fetch a new one
        return value if value and self.clock() < refresh_at else None

    def _save(self, token: AccessToken, fetched_at: float) -> None:
        # Times count from when we asked, not when the answer came: never believe a token lives longer
        # than it does. Refresh `margin` early, but never keep a short-lived token for less than half
        # its life (stable_token may answer with one that has only minutes left): no fetch storms.
        refresh_at = fetched_at + max(token.expires_in - self.margin, token.expires_in / 2)
        entry = {"access_token": token.value, "expires_at": fetched_at + token.expires_in, "refresh_at": refresh_at}
        # The store forgets it by itself once it is no longer worth handing out.
        self.store.set(self.key, json.dumps(entry), ttl=max(refresh_at - self.clock(), 1))

    # -- getting a token --------------------------------------------------------------------------

    def get(self) -> str:
        """A token that WeChat will accept for at least `margin` more seconds."""
        return self._obtain(stale=None)

    def refresh(self, stale: str) -> str:
        """A token other than `stale`, which WeChat just refused; at most one fetch however many ask."""
        return self._obtain(stale=stale)

    def _usable(self, stale: str | None) -> str | None:
        value = self.cached()
        return None if value is None or value == stale else value

    def _obtain(self, stale: str | None) -> str:
        value = self._usable(stale)
        if value:
            return value
        deadline = time.monotonic() + self.wait
        while True:
            try:
                # wait=0: one attempt. While someone else fetches we watch the cache, not the lock,
                # so a hundred waiters go on the moment the token lands instead of taking turns.
                with self.store.lock(self.lock_name, timeout=LOCK_TIMEOUT, wait=0):
                    value = self._usable(stale)  # fetched while we were getting here?
                    if value:
                        return value
                    return self._fetch_and_save(stale)
            except LockTimeout:
                pass
            time.sleep(self.poll)
            value = self._usable(stale)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise WeChatUnavailable("timed out waiting for another worker to fetch the access_token")

    def _fetch_and_save(self, stale: str | None) -> str:
        fetched_at = self.clock()
        token = self._fetch(False)
        if stale is not None and token.value == stale:
            # stable_token handed back the very token WeChat just refused: make it issue a new one.
            # (Forced refreshes are rationed by WeChat, so only when the plain call did not help.)
            log.warning("access_token refused but still current at WeChat: forcing a refresh")
            fetched_at = self.clock()
            token = self._fetch(True)
        self._save(token, fetched_at)
        log.info("fetched a new access_token (expires in %ds)", token.expires_in)
        return token.value

    # -- using a token ----------------------------------------------------------------------------

    def call(self, fn: Callable[[str], T]) -> T:
        """`fn(token)`; if WeChat says the token is invalid or expired, refresh once and retry once."""
        token = self.get()
        try:
            return fn(token)
        except InvalidCredential as exc:
            log.warning("WeChat refused the access_token (errcode %s): refreshing once", exc.code)
            return fn(self.refresh(stale=token))
