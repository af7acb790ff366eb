"""Pooled HTTP sessions with timeouts for every call to WeChat."""

from __future__ import annotations

import os
from urllib.request import getproxies

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

# What our clients pass (`allow_redirects` is what `Session.get` adds by itself, and is not honoured:
# a redirect is never followed); anything else (files, auth, proxies, ...) takes requests' full path.
_DIRECT_ARGS = frozenset({"params", "data", "headers", "json", "timeout", "stream", "allow_redirects", "cert"})


class TimeoutSession(requests.Session):
    """A `requests.Session` whose requests never go without a (connect, read) timeout.

    With no proxy to honour (`trust_env` off, see `make_session`), a call is prepared and handed to the
    mounted adapter directly: requests' session layer around it (cookie jars, hooks, redirect handling,
    settings merged per call) was a third of a call's CPU in requests, and none of it is wanted by an
    API client: WeChat sets no cookies and a redirect from it is an error, not a place to follow. The
    adapter is the same (the pooled HTTPAdapter, or the in-app sandbox's WSGIAdapter), so are the
    session's headers, CA bundle and client certificate.
    """

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        if self.trust_env or not _DIRECT_ARGS.issuperset(kwargs) or self.auth or any(self.hooks.values()):
            return super().request(method, url, **kwargs)
        return self._direct(method, url, **kwargs)

    def _direct(self, method: str, url: str, params=None, data=None, headers=None, json=None, timeout=None,
                stream: bool = False, allow_redirects: bool = False, cert=None) -> requests.Response:
        merged = CaseInsensitiveDict(self.headers)
        for name, value in (headers or {}).items():
            if value is None:
                merged.pop(name, None)  # as requests does: None removes a session header
            else:
                merged[name] = value
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method.upper(), url=url, headers=merged, data=data or {}, params=params or {},
                         json=json)
        adapter = self.get_adapter(prepared.url)
        response = adapter.send(prepared, stream=stream, timeout=timeout, verify=self.verify,
                                cert=cert if cert is not None else self.cert, proxies={})
        if not stream:
            response.content  # noqa: B018 - read it now, as requests does: the connection goes back to the pool
        return response


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
