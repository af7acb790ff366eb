"""Pooled HTTP sessions with timeouts for every call to WeChat."""

from __future__ import annotations

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
    return session
