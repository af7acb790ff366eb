"""Behind a reverse proxy: believe X-Forwarded-For (and -Proto) from our own proxies only, and never a host.

werkzeug's ProxyFix takes the address PROXY_FIX_HOPS entries from the right of X-Forwarded-For, which
is the one our nearest proxy wrote. It is applied only when the socket's peer is one of TRUSTED_PROXIES:
a client that reaches gunicorn directly and sends X-Forwarded-For (rotating it to walk around the login
limit, say) is taken at its socket address. X-Forwarded-Host, -Port and -Prefix are never believed:
links are made on PUBLIC_BASE_URL (public_urls.py). A warning says when X-Forwarded-For arrives but the
settings do not declare a proxy: then every client shares the proxy's address.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any, Callable, Iterable

from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger(__name__)

WARN_EVERY = 300.0  # seconds: one warning per process per kind, not one per request


class TrustedProxyFix:
    def __init__(self, app: Callable, hops: int, trusted: list) -> None:
        self.app, self.hops, self.trusted = app, hops, trusted
        self.fixed = ProxyFix(app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0) if hops else app
        self._warned: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        forwarded = "HTTP_X_FORWARDED_FOR" in environ
        if not forwarded:
            return self.app(environ, start_response)
        if not self.hops:
            self._warn("unset", "requests arrive with X-Forwarded-For but PROXY_FIX_HOPS=0: every client behind "
                                "that proxy shares its address (login limit, client_ip); set PROXY_FIX_HOPS")
            return self.app(environ, start_response)
        if self._is_trusted(environ.get("REMOTE_ADDR", "")):
            return self.fixed(environ, start_response)
        self._warn("untrusted", "X-Forwarded-For from a peer not in TRUSTED_PROXIES is ignored "
                                "(the client is taken at its socket address)")
        return self.app(environ, start_response)

    def _is_trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)

    def _warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._warned.get(kind, -WARN_EVERY) < WARN_EVERY:
                return
            self._warned[kind] = now
        log.warning(message)
