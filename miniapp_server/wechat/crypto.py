"""Decrypting the mini-program's `encryptedData` (wx.getUserInfo, wx.getWeRunData, share info, ...).

WeChat encrypts with AES-128-CBC: the key is the base64-decoded `session_key` of the
user's login, the IV comes with the data, the padding is PKCS#7, and the plaintext is
a JSON object whose `watermark.appid` names the mini-program it was made for.
Pure functions: no Flask, no store, usable from a script.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import unpad

from . import jsonlimits

__all__ = ["DECRYPT_FAILED", "DecryptError", "check_shape", "decrypt_user_data", "check_watermark"]


DECRYPT_FAILED = ("the data does not decrypt with this session's key; "
                  "log in again with wx.login and retry")


class DecryptError(ValueError):
    """The data cannot be decrypted or is not for us; `code` is a snake_case reason for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _b64(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise DecryptError("invalid_base64", f"{what} must be a non-empty base64 string")
    try:
        # validate=True: stray characters are an error, not silently skipped.
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise DecryptError("invalid_base64", f"{what} is not valid base64") from None


def check_shape(encrypted_data: str, iv: str) -> tuple[bytes, bytes]:
    """(data, iv) decoded, if they have the shape AES-128-CBC needs; says nothing about any key."""
    iv_bytes = _b64(iv, "iv")
    if len(iv_bytes) != 16:
        raise DecryptError("invalid_iv", "iv must decode to 16 bytes")
    data = _b64(encrypted_data, "encryptedData")
    if len(data) % AES.block_size:
        raise DecryptError("invalid_encrypted_data", "encryptedData is not a whole number of AES blocks")
    return data, iv_bytes


def decrypt_user_data(session_key: str, encrypted_data: str, iv: str) -> dict[str, Any]:
    """The JSON object inside `encrypted_data`; raises `DecryptError` for anything that is not one.

    A wrong or stale `session_key` cannot be told apart from corrupted data: both show up as
    bad padding or as bytes that are not JSON, so both are `decrypt_failed`.
    """
    key = _b64(session_key, "session_key")
    if len(key) != 16:
        raise DecryptError("invalid_session_key", "the session's session_key is not a 16-byte AES key")
    data, iv_bytes = check_shape(encrypted_data, iv)
    padded = AES.new(key, AES.MODE_CBC, iv_bytes).decrypt(data)
    # One error, word for word, for every way the decryption can fail: an answer that told bad padding
    # from bytes that are not JSON would be a padding oracle (CBC plaintext recovered one byte at a time).
    try:
        result = jsonlimits.loads(unpad(padded, AES.block_size, style="pkcs7").decode("utf-8"))
    except ValueError:  # bad padding, not UTF-8 (UnicodeDecodeError), not JSON, nested too deep
        raise DecryptError("decrypt_failed", DECRYPT_FAILED) from None
    if not isinstance(result, dict):
        raise DecryptError("decrypt_failed", DECRYPT_FAILED)
    return result


def check_watermark(data: dict[str, Any], appid: str) -> None:
    """Refuse data made for another mini-program: someone else's session_key, replayed here."""
    watermark = data.get("watermark")
    found = watermark.get("appid") if isinstance(watermark, dict) else None
    if not isinstance(found, str) or found != appid:
        raise DecryptError("watermark_mismatch", "the data was made for another mini-program (watermark appid)")
