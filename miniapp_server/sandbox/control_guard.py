"""The sandbox's control calls (pay any order, list every notification, revoke tokens, ...) stand in for
the person holding the phone: they answer only callers from SANDBOX_CONTROL_ALLOW (loopback by default,
"*" for anyone), so that a sandbox reachable on a network is not a free "pay this order" button.
WeChat's own paths under /sandbox stay open: the backend (and a standalone backend) call them.
"""

from __future__ import annotations

import ipaddress

from flask import current_app, request

from ..config import networks
from ..wechat.ipaddr import clean_ip
from . import bp
from .emulator import SandboxError

CONTROL_PREFIX = "/sandbox/control/"


def control_allowed(address: str | None) -> bool:
    allow = str(current_app.config.get("SANDBOX_CONTROL_ALLOW") or "127.0.0.1,::1").strip()
    if allow == "*":
        return True
    ip = clean_ip(address)
    if ip is None:
        return False
    return any(ipaddress.ip_address(ip) in network for network in networks(allow, "SANDBOX_CONTROL_ALLOW"))


@bp.before_request
def _control_from_allowed_addresses_only():
    rule = request.url_rule.rule if request.url_rule else ""
    if rule.startswith(CONTROL_PREFIX) and not control_allowed(request.remote_addr):
        raise SandboxError(403, "forbidden", "the sandbox's control calls answer only SANDBOX_CONTROL_ALLOW "
                                             "(loopback by default)")
