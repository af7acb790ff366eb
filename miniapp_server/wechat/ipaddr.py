"""Client addresses as WeChat takes them (`spbill_create_ip`, v3 `payer_client_ip`): a real IPv4 or IPv6 address.

A forwarded header is text anyone can write (`<svg/onload=1>` was once stored and sent on); only what
`ipaddress` accepts goes into a row or a request to WeChat. No Flask here.
"""

from __future__ import annotations

import ipaddress

MAX_LENGTH = 45  # the longest textual IPv6 address (with an embedded IPv4 tail); our columns' size


def clean_ip(value: object) -> str | None:
    """The address in its canonical form, or None if `value` is not one (zone ids such as 'fe80::1%eth0' are not)."""
    if not isinstance(value, str) or not value or len(value) > MAX_LENGTH:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)  # ::ffff:1.2.3.4 from a dual-stack socket is 1.2.3.4
    return str(address)
