"""Pooled HTTP sessions with timeouts for every call to WeChat."""

from __future__ import annotations

import os
from urllib.request import getproxies

import requests
from requests.adapters import HTTPAdapter


class TimeoutSession(requests.Session):
    """A `requests.Session` whose requests never go without a (connect, read) timeout."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


def make_session(connect_timeout: float = 3.05, read_timeout: float = 10.0, pool: int = 10) -> TimeoutSession:
    """One session per client: keep-alive connections reused across requests, no retries on POST."""
    session = TimeoutSession((connect_timeout, read_timeout))
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "miniapp-pay/1.0"
    # requests reads the environment's proxies, CA bundle and ~/.netrc again on every request (0.2 ms of
    # CPU a call, a quarter of a call's CPU in requests; bench/README.md). Read once here instead: the CA bundle it would pick up
    # (REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE) becomes the session's, and ~/.netrc is never wanted for
    # WeChat. A proxy in the environment keeps requests' per-request handling (NO_PROXY and all).
    if not getproxies():
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return session
