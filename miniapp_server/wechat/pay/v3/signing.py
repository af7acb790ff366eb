"""WeChat Pay v3 signatures: SHA256withRSA (PKCS#1 v1.5), base64 (pure functions).

What is signed, always with a trailing newline after every line:
- a request:       METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n   (URL = path and query, as sent)
- an answer or a notification: TIMESTAMP\nNONCE\nBODY\n   (checked with the key `Wechatpay-Serial` names)
- wx.requestPayment: appId\ntimeStamp\nnonceStr\npackage\n   (signType=RSA is not signed)
- the APP SDK:       appid\ntimestamp\nnoncestr\nprepayid\n

The merchant signs with its API private key; WeChat signs with the private key behind
its public key (public-key mode) or behind a platform certificate. Neither a private
key nor a signed message is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from Crypto.Hash import SHA256
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Signature import pkcs1_15

from ...errors import SignatureError
from ...numbers import ascii_uint

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
MAX_CLOCK_SKEW = 300  # seconds: WeChat's SDKs refuse answers older or newer than five minutes

_NONCE_ALPHABET = string.ascii_uppercase + string.digits


def nonce(length: int = 32) -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def request_message(method: str, url: str, timestamp: str | int, nonce_str: str, body: str | bytes) -> bytes:
    return b"".join([method.upper().encode("ascii"), b"\n", _b(url), b"\n", str(timestamp).encode("ascii"), b"\n",
                     _b(nonce_str), b"\n", _b(body), b"\n"])


def answer_message(timestamp: str | int, nonce_str: str, body: str | bytes) -> bytes:
    return b"".join([str(timestamp).encode("ascii"), b"\n", _b(nonce_str), b"\n", _b(body), b"\n"])


def sign(message: bytes, private_key: RsaKey) -> str:
    """base64(SHA256withRSA(message))."""
    return base64.b64encode(pkcs1_15.new(private_key).sign(SHA256.new(message))).decode("ascii")


def verify(message: bytes, signature: str, public_key: RsaKey) -> bool:
    """True when `signature` (base64) is `public_key`'s over `message`; anything malformed is simply false."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    try:
        pkcs1_15.new(public_key).verify(SHA256.new(message), raw)
    except (ValueError, TypeError):
        return False
    return True


# -- requests (the merchant signs) -----------------------------------------------------------------

def authorization(*, mchid: str, serial_no: str, private_key: RsaKey, method: str, url: str,
                  body: str | bytes = b"", timestamp: int | None = None, nonce_str: str | None = None) -> str:
    """The `Authorization` header of one request to api.mch.weixin.qq.com."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce_str = nonce_str or nonce()
    signature = sign(request_message(method, url, ts, nonce_str, body), private_key)
    return (f'{SCHEMA} mchid="{mchid}",nonce_str="{nonce_str}",timestamp="{ts}",'
            f'serial_no="{serial_no}",signature="{signature}"')


_PARAM = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*(?:,|$)')


@dataclass(frozen=True)
class Authorization:
    mchid: str
    nonce_str: str
    timestamp: str
    serial_no: str
    signature: str


def parse_authorization(header: str | None) -> Authorization | None:
    """The parts of a request's Authorization header (what WeChat, or the sandbox, reads); None if malformed."""
    if not header or not header.startswith(SCHEMA + " "):
        return None
    rest, params, pos = header[len(SCHEMA) + 1:], {}, 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.group(1) in params:
            return None
        params[m.group(1)] = m.group(2)
        pos = m.end()
    try:
        return Authorization(params["mchid"], params["nonce_str"], params["timestamp"], params["serial_no"],
                             params["signature"])
    except KeyError:
        return None


def fresh(timestamp: str | None, now: float | None = None, max_skew: int = MAX_CLOCK_SKEW) -> bool:
    """Is `timestamp` (seconds) within `max_skew` of now? A replayed or delayed message is not."""
    seconds = ascii_uint(timestamp, max_digits=12)
    if seconds is None or not isinstance(timestamp, str):
        return False
    now = time.time() if now is None else now
    return abs(now - seconds) <= max_skew


# -- answers and notifications (WeChat signs) ------------------------------------------------------

# Given a Wechatpay-Serial, the public key it names, or None when we know no such key.
KeyLookup = Callable[[str], "RsaKey | None"]


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:  # plain dicts are case-sensitive; requests' and werkzeug's headers are not
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value or ""


def verify_answer(headers: Mapping[str, str], body: bytes, key_for: KeyLookup, now: float | None = None,
                  max_skew: int = MAX_CLOCK_SKEW) -> str:
    """Check an answer's or notification's `Wechatpay-*` headers over the raw body; returns the serial used.

    Raises SignatureError (code says why: missing_headers, stale_timestamp, unknown_serial, bad_signature).
    The order matters: the cheap checks first, and nothing of the body is believed before the signature.
    """
    ts, nonce_str = _header(headers, "Wechatpay-Timestamp"), _header(headers, "Wechatpay-Nonce")
    signature, serial = _header(headers, "Wechatpay-Signature"), _header(headers, "Wechatpay-Serial")
    kind = _header(headers, "Wechatpay-Signature-Type")
    if not (ts and nonce_str and signature and serial):
        raise SignatureError("the answer carries no complete Wechatpay-* signature headers", "missing_headers")
    if kind and kind != SCHEMA:
        raise SignatureError("unknown Wechatpay-Signature-Type", "bad_signature_type")
    if not fresh(ts, now, max_skew):
        raise SignatureError("Wechatpay-Timestamp is more than five minutes off", "stale_timestamp")
    key = key_for(serial)
    if key is None:
        raise SignatureError("Wechatpay-Serial names a key we do not know", "unknown_serial")
    if not verify(answer_message(ts, nonce_str, body), signature, key):
        raise SignatureError("Wechatpay-Signature does not verify", "bad_signature")
    return serial


PROBE_PREFIX = "WECHATPAY/SIGNTEST_"


def is_probe(headers: Mapping[str, str]) -> bool:
    """WeChat's signature probes: notifications whose `Wechatpay-Signature` begins `WECHATPAY/SIGNTEST_`,
    sent to check that the merchant verifies signatures; WeChat expects them refused (4xx/5xx)."""
    return _header(headers, "Wechatpay-Signature").startswith(PROBE_PREFIX)


def answer_headers(body: bytes, private_key: RsaKey, serial: str, timestamp: int | None = None,
                   nonce_str: str | None = None) -> dict[str, str]:
    """The headers WeChat puts on a signed answer or notification (the sandbox uses this)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce_str = nonce_str or nonce()
    return {"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce_str, "Wechatpay-Serial": serial,
            "Wechatpay-Signature": sign(answer_message(ts, nonce_str, body), private_key),
            "Wechatpay-Signature-Type": SCHEMA}


def same(a: str, b: str) -> bool:
    """Constant-time equality of two identifiers (serials, mchids) that an attacker may choose."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# -- what the client's pay call takes ----------------------------------------------------------------

def jsapi_pay_sign(app_id: str, time_stamp: str, nonce_str: str, package: str, private_key: RsaKey) -> str:
    return sign(f"{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n".encode("utf-8"), private_key)


def app_pay_sign(appid: str, timestamp: str, noncestr: str, prepayid: str, private_key: RsaKey) -> str:
    return sign(f"{appid}\n{timestamp}\n{noncestr}\n{prepayid}\n".encode("utf-8"), private_key)
