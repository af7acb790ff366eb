"""The refund notification's `req_info` (API v2): AES-256-ECB, PKCS7, base64.

WeChat's steps: base64-decode `req_info`; the key is the lower-case hex MD5 of the
merchant's API key, used as 32 ASCII bytes; decrypt with AES-256-ECB; strip the
PKCS7 padding; what is left is a `<root>` XML document. Pure functions, no Flask.
The refund notification carries no `sign`: only a holder of the API key can make a
`req_info` that decrypts, so decrypting *is* the check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad, unpad


class DecryptError(ValueError):
    """`req_info` is not base64, not whole blocks, or does not decrypt with our key."""


def refund_key(api_key: str) -> bytes:
    return hashlib.md5(api_key.encode("utf-8")).hexdigest().lower().encode("ascii")


def decrypt_req_info(req_info: str, api_key: str) -> bytes:
    """The plaintext `<root>...</root>` XML of a refund notification."""
    try:
        data = base64.b64decode(req_info, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError("req_info is not base64") from None
    if not data or len(data) % AES.block_size:
        raise DecryptError("req_info is not a whole number of AES blocks")
    plain = AES.new(refund_key(api_key), AES.MODE_ECB).decrypt(data)
    try:
        # unpad checks every padding byte: a wrong key almost never gives valid PKCS7.
        return unpad(plain, AES.block_size, style="pkcs7")
    except ValueError:
        raise DecryptError("req_info does not decrypt with our key") from None


def encrypt_req_info(plaintext: bytes, api_key: str) -> str:
    """What WeChat does (the sandbox uses it to send refund notifications)."""
    cipher = AES.new(refund_key(api_key), AES.MODE_ECB)
    return base64.b64encode(cipher.encrypt(pad(plaintext, AES.block_size, style="pkcs7"))).decode("ascii")
