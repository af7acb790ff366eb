"""AEAD_AES_256_GCM, as WeChat Pay v3 uses it for notifications' `resource` and platform certificates.

The key is the merchant's 32-byte APIv3 key (its ASCII bytes); the nonce is 12 ASCII
bytes; `associated_data` is authenticated, not encrypted; the ciphertext is base64 of
the encrypted bytes followed by the 16-byte tag. The tag check (pycryptodome's
`decrypt_and_verify`, constant-time) is what proves the holder of our APIv3 key made it.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
from typing import Any, Mapping

from Crypto.Cipher import AES

from ... import jsonlimits

ALGORITHM = "AEAD_AES_256_GCM"
TAG_SIZE = 16


class DecryptError(ValueError):
    """Not our algorithm, not base64, too short, or the tag does not verify with our key."""


def check_key(apiv3_key: str) -> bytes:
    key = apiv3_key.encode("utf-8")
    if len(key) != 32:
        raise ValueError("the APIv3 key must be 32 bytes")
    return key


def decrypt(apiv3_key: str, nonce: str, associated_data: str, ciphertext: str) -> bytes:
    try:
        raw = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise DecryptError("ciphertext is not base64") from None
    if len(raw) <= TAG_SIZE or not nonce:
        raise DecryptError("ciphertext or nonce too short")
    try:
        key = check_key(apiv3_key)
    except ValueError:
        raise DecryptError("the APIv3 key is not 32 bytes") from None
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce.encode("utf-8"), mac_len=TAG_SIZE)
    cipher.update((associated_data or "").encode("utf-8"))
    try:
        return cipher.decrypt_and_verify(raw[:-TAG_SIZE], raw[-TAG_SIZE:])
    except ValueError:
        raise DecryptError("does not decrypt with our APIv3 key") from None


def encrypt(apiv3_key: str, nonce: str, associated_data: str, plaintext: bytes) -> str:
    """What WeChat does (the sandbox and the tests use it)."""
    cipher = AES.new(check_key(apiv3_key), AES.MODE_GCM, nonce=nonce.encode("utf-8"), mac_len=TAG_SIZE)
    cipher.update((associated_data or "").encode("utf-8"))
    data, tag = cipher.encrypt_and_digest(plaintext)
    return base64.b64encode(data + tag).decode("ascii")


def _str(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecryptError("resource fields must be strings")
    return value


def decrypt_resource(resource: Mapping[str, Any], apiv3_key: str) -> bytes:
    """A notification's `resource` (or a certificate's `encrypt_certificate`), decrypted."""
    if not isinstance(resource, Mapping):
        raise DecryptError("resource is not an object")
    if resource.get("algorithm") != ALGORITHM:
        raise DecryptError("unknown resource algorithm")
    return decrypt(apiv3_key, _str(resource.get("nonce")), _str(resource.get("associated_data")),
                   _str(resource.get("ciphertext")))


def decrypt_json(resource: Mapping[str, Any], apiv3_key: str) -> dict[str, Any]:
    plain = decrypt_resource(resource, apiv3_key)
    try:
        data = jsonlimits.loads(plain)
    except (ValueError, UnicodeDecodeError):
        raise DecryptError("the decrypted resource is not JSON") from None
    if not isinstance(data, dict):
        raise DecryptError("the decrypted resource is not an object")
    return data


def decrypt_certificate(encrypt_certificate: Mapping[str, Any], apiv3_key: str) -> str:
    """A platform certificate from `/v3/certificates`: the PEM text inside `encrypt_certificate`."""
    plain = decrypt_resource(encrypt_certificate, apiv3_key)
    try:
        pem = plain.decode("ascii")
    except UnicodeDecodeError:
        raise DecryptError("the certificate is not PEM text") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise DecryptError("the certificate is not PEM text")
    return pem


def encrypt_resource(plaintext: bytes, apiv3_key: str, associated_data: str, original_type: str | None = None
                     ) -> dict[str, str]:
    """A `resource` object as WeChat builds one (fresh 12-character nonce)."""
    nonce = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))
    out = {"algorithm": ALGORITHM, "ciphertext": encrypt(apiv3_key, nonce, associated_data, plaintext),
           "associated_data": associated_data, "nonce": nonce}
    if original_type:
        out["original_type"] = original_type
    return out
