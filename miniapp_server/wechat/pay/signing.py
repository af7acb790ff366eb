"""WeChat Pay v2 signatures (pure functions, after wechatpy's `pay/utils.py`).

The rule: drop empty values and `sign`, sort keys by ASCII, join `k=v` with `&`,
append `&key=API_KEY`, then MD5 or HMAC-SHA256 (keyed with the API key), upper-case hex.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from typing import Mapping

MD5 = "MD5"
HMAC_SHA256 = "HMAC-SHA256"
SIGN_TYPES = (MD5, HMAC_SHA256)

_NONCE_ALPHABET = string.ascii_letters + string.digits


def nonce(length: int = 32) -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def _string_to_sign(params: Mapping[str, object], key: str) -> str:
    pairs = []
    for k, v in params.items():  # every notification comes through here: one pass, no second str()
        if k == "sign" or v is None:
            continue
        text = v if type(v) is str else str(v)
        if text:
            pairs.append((k, text))
    pairs.sort()  # by key (keys are unique): "k=v" strings would sort "a0" before "a", as WeChat does not
    return "&".join([k + "=" + v for k, v in pairs]) + "&key=" + key


def sign(params: Mapping[str, object], key: str, sign_type: str = MD5) -> str:
    """The signature of `params`; never log its input, which holds the key."""
    payload = _string_to_sign(params, key).encode("utf-8")
    if sign_type == MD5:
        return hashlib.md5(payload).hexdigest().upper()
    if sign_type == HMAC_SHA256:
        return hmac.new(key.encode("utf-8"), payload, hashlib.sha256).hexdigest().upper()
    raise ValueError("unknown sign type")


def verify(params: Mapping[str, object], key: str, sign_type: str = MD5) -> bool:
    """Constant-time check of `params['sign']`; a missing or odd signature is simply false."""
    given = params.get("sign")
    if not isinstance(given, str) or not given or sign_type not in SIGN_TYPES:
        return False
    expected = sign(params, key, sign_type)
    return hmac.compare_digest(expected.encode("ascii"), given.upper().encode("ascii", "replace"))
