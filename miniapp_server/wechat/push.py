"""WeChat's message push (消息推送): the URL check, plain and safe mode, JSON or XML bodies.

What WeChat documents (mini-program "消息推送" and its "消息加解密说明"):

- URL check (GET): `signature` = SHA-1 of the sorted Token, `timestamp`, `nonce`; answer `echostr`.
- Plain mode (POST): the same `signature`; the body is the message. It does not cover the body.
- Safe mode (POST, `encrypt_type=aes`): `msg_signature` = SHA-1 of the sorted Token, `timestamp`,
  `nonce` and the body's `Encrypt`; `Encrypt` is base64(AES-256-CBC(random(16) + len(4, big-endian)
  + message + appid)), key = base64(EncodingAESKey + "="), IV = the key's first 16 bytes, PKCS#7
  padding to 32-byte blocks. The appid inside must be ours. WeChat says: check `msg_signature`,
  not `signature`, in safe mode.

Pure functions and one small class: no Flask, no store (replay defence lives in services/events.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Mapping

from Crypto.Cipher import AES

from .pay import xmlcodec

__all__ = ["PushRejected", "PushCipher", "Push", "signature", "signature_matches", "check_encoding_aes_key",
           "open_push", "seal_push", "parse_document", "MAX_PUSH_BODY"]

MAX_PUSH_BODY = 64 * 1024  # WeChat's pushes are a few hundred bytes
BLOCK = 32  # WeChat pads to multiples of 32 bytes (its key size), not AES's 16
_AES_KEY = re.compile(r"[A-Za-z0-9]{43}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[0-9A-Za-z_\-]{1,64}")
_SHA1_HEX = re.compile(r"[0-9a-fA-F]{40}")


class PushRejected(ValueError):
    """A push (or URL check) we refuse; `code` says why, `status` is the HTTP status to answer."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def signature(*parts: str) -> str:
    """WeChat's push signature: SHA-1 (hex) of the parts sorted as strings and joined."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def signature_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a hex signature (WeChat sends lower case; case is not significant)."""
    if not isinstance(given, str) or not _SHA1_HEX.fullmatch(given):
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii"))


def check_encoding_aes_key(value: str) -> str | None:
    """None when `value` is a well-formed EncodingAESKey, else what is wrong with it (never the value)."""
    if not isinstance(value, str) or not _AES_KEY.fullmatch(value):
        return "must be the 43 characters (a-z, A-Z, 0-9) of the console's EncodingAESKey"
    return None


class PushCipher:
    """Safe mode's AES-256-CBC for one mini-program (WXBizMsgCrypt's `Prpcrypt`)."""

    def __init__(self, encoding_aes_key: str, appid: str) -> None:
        problem = check_encoding_aes_key(encoding_aes_key)
        if problem:
            raise ValueError("EncodingAESKey " + problem)
        self._key = base64.b64decode(encoding_aes_key + "=")
        self.appid = appid

    def __repr__(self) -> str:
        return f"PushCipher(appid={self.appid!r})"  # never the key

    def encrypt(self, message: bytes, random16: bytes | None = None) -> str:
        random16 = random16 if random16 is not None else secrets.token_hex(8).encode("ascii")
        if len(random16) != 16:
            raise ValueError("the random prefix is 16 bytes")
        plain = random16 + struct.pack(">I", len(message)) + message + self.appid.encode("utf-8")
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        return base64.b64encode(AES.new(self._key, AES.MODE_CBC, self._key[:16]).encrypt(plain)).decode("ascii")

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside `encrypted`; raises PushRejected unless it is whole and for our appid."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise PushRejected("bad_ciphertext", "Encrypt is not base64", 400) from None
        if not data or len(data) % AES.block_size:
            raise PushRejected("bad_ciphertext", "Encrypt is not a whole number of AES blocks", 400)
        plain = AES.new(self._key, AES.MODE_CBC, self._key[:16]).decrypt(data)
        pad = plain[-1]
        # PKCS#7 with WeChat's 32-byte blocks: 1..32 bytes, all equal.
        if not 1 <= pad <= BLOCK or pad > len(plain) or plain[-pad:] != bytes([pad]) * pad:
            raise PushRejected("bad_ciphertext", "Encrypt does not decrypt with our EncodingAESKey", 400)
        plain = plain[:-pad]
        if len(plain) < 20:
            raise PushRejected("bad_ciphertext", "Encrypt is too short", 400)
        (size,) = struct.unpack(">I", plain[16:20])
        if 20 + size > len(plain):
            raise PushRejected("bad_ciphertext", "Encrypt's length prefix is wrong", 400)
        message, appid = plain[20:20 + size], plain[20 + size:]
        if not hmac.compare_digest(appid, self.appid.encode("utf-8")):
            raise PushRejected("wrong_appid", "the push was encrypted for another mini-program", 403)
        return message


@dataclass
class Push:
    """A push that verified: the message's fields, as WeChat sent them (JSON types, or XML strings)."""

    fields: dict[str, Any]
    data_format: str  # json | xml
    encrypted: bool
    timestamp: int
    nonce: str


def parse_document(body: bytes, max_size: int = MAX_PUSH_BODY) -> tuple[str, dict[str, Any]]:
    """("json" | "xml", the object): WeChat's two data formats, told apart by their first character."""
    if len(body) > max_size:
        raise PushRejected("too_large", "the push body is too large", 413)
    text = body.lstrip()
    if text.startswith(b"<"):
        try:
            return "xml", xmlcodec.parse_tree(text, max_size=max_size)
        except xmlcodec.XMLError as exc:
            raise PushRejected("bad_body", f"the XML body is refused: {exc}", 400) from None
    try:
        doc = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PushRejected("bad_body", "the body is neither JSON nor XML", 400) from None
    if not isinstance(doc, dict):
        raise PushRejected("bad_body", "the JSON body is not an object", 400)
    return "json", doc


def _stamp(query: Mapping[str, str]) -> tuple[str, str]:
    timestamp, nonce = query.get("timestamp") or "", query.get("nonce") or ""
    if not _TIMESTAMP.fullmatch(timestamp) or not _NONCE.fullmatch(nonce):
        raise PushRejected("bad_query", "timestamp and nonce are missing or malformed", 400)
    return timestamp, nonce


def check_url(query: Mapping[str, str], token: str) -> str:
    """The URL check (GET): the `echostr` to answer, once `signature` verifies."""
    timestamp, nonce = _stamp(query)
    if not signature_matches(signature(token, timestamp, nonce), query.get("signature")):
        raise PushRejected("bad_signature", "signature does not verify", 403)
    echostr = query.get("echostr")
    if not echostr or len(echostr) > 256:
        raise PushRejected("bad_query", "echostr is missing or too long", 400)
    return echostr


def open_push(query: Mapping[str, str], body: bytes, token: str, cipher: PushCipher | None) -> Push:
    """Verify a POSTed push and give its message. With a cipher (safe mode) only encrypted pushes pass.

    Compatible mode (plain fields beside `Encrypt`) is read as safe mode: only the encrypted copy,
    which `msg_signature` covers, is believed.
    """
    timestamp, nonce = _stamp(query)
    data_format, outer = parse_document(body)
    encrypted = outer.get("Encrypt")
    if cipher is None:
        if encrypted is not None or query.get("encrypt_type"):
            raise PushRejected("safe_mode_not_configured",
                               "an encrypted push arrived but WECHAT_PUSH_AES_KEY is not set", 400)
        if not signature_matches(signature(token, timestamp, nonce), query.get("signature")):
            raise PushRejected("bad_signature", "signature does not verify", 403)
        return Push(outer, data_format, False, int(timestamp), nonce)
    if not isinstance(encrypted, str) or not encrypted:
        raise PushRejected("encryption_required", "safe mode: the push carries no Encrypt", 403)
    if not signature_matches(signature(token, timestamp, nonce, encrypted), query.get("msg_signature")):
        raise PushRejected("bad_signature", "msg_signature does not verify", 403)
    message = cipher.decrypt(encrypted)
    inner_format, fields = parse_document(message)
    return Push(fields, inner_format, True, int(timestamp), nonce)


def encode_message(fields: Mapping[str, Any], data_format: str) -> bytes:
    if data_format == "xml":
        return xmlcodec.dumps(fields)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def seal_push(fields: Mapping[str, Any], data_format: str, token: str, cipher: PushCipher | None,
              timestamp: int, nonce: str, random16: bytes | None = None) -> tuple[dict[str, str], bytes]:
    """What WeChat sends for this message: (query parameters, body). The sandbox pushes with it."""
    query = {"signature": signature(token, str(timestamp), nonce), "timestamp": str(timestamp), "nonce": nonce}
    if "FromUserName" in fields:
        query["openid"] = str(fields["FromUserName"])
    message = encode_message(fields, data_format)
    if cipher is None:
        return query, message
    encrypted = cipher.encrypt(message, random16)
    query.update(encrypt_type="aes", msg_signature=signature(token, str(timestamp), nonce, encrypted))
    outer = {"ToUserName": fields.get("ToUserName", ""), "Encrypt": encrypted}
    return query, encode_message(outer, data_format)
