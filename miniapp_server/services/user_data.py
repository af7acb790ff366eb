"""The user's data from WeChat: phone numbers (getuserphonenumber) and encrypted user data.

The phone number is kept on the user and answered masked: the mini-program only needs to show
which number is bound, and a full number in a response ends up in client logs and caches.
Decrypted user data is answered and not kept: it may be stale or personal, and nothing here needs it.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ApiError, bad_request
from ..extensions import db, wechat
from ..models import User
from ..sqlite_tuning import begin_write
from ..wechat import crypto
from ..wechat.errors import InvalidCode, WeChatUnavailable

log = logging.getLogger(__name__)

MAX_CODE_LENGTH = 128
MAX_FIELD_LENGTH = 32 * 1024  # encryptedData for user info is well under 1 KB; the body limit is 64 KB


def validate_phone_code(code: object) -> str:
    if not isinstance(code, str) or not code.strip():
        raise bad_request("missing_code", "code is required: the code the getPhoneNumber button gave you")
    if len(code) > MAX_CODE_LENGTH or not code.isprintable():
        raise bad_request("invalid_code", "code is not a getPhoneNumber code")
    return code


def number_to_store(info: dict[str, Any]) -> str:
    """Mainland numbers as the 11 digits everyone in China expects; others in E.164 (+<country><number>),
    so that numbers of two countries can never look alike. WeChat's own `phoneNumber` is the fallback."""
    country = str(info.get("countryCode") or "86").lstrip("+")
    pure = str(info.get("purePhoneNumber") or "")
    if pure.isdigit():
        return pure if country == "86" else f"+{country}{pure}"
    full = str(info.get("phoneNumber") or "")
    if not full or len(full) > 32:
        raise WeChatUnavailable("getuserphonenumber answered a phone number we cannot read")
    return full


def mask_phone(number: str) -> str:
    """138****8000: enough for the person to recognise their number, useless to anyone else."""
    if len(number) <= 7:
        return "*" * (len(number) - 2) + number[-2:]
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


def bind_phone(user_id: int, code: object) -> dict[str, Any]:
    code = validate_phone_code(code)
    try:
        # The shared access_token; a token WeChat refuses is refreshed once and the call retried once.
        info = wechat.access_token.call(lambda token: wechat.miniapp.get_phone_number(token, code))
    except InvalidCode:
        raise bad_request("invalid_phone_code", "the getPhoneNumber code is invalid, expired or used; "
                                                "ask the person to tap the button again") from None
    watermark = info.get("watermark")
    if isinstance(watermark, dict) and watermark.get("appid") not in (None, wechat.miniapp.appid):
        raise WeChatUnavailable("getuserphonenumber answered a number for another mini-program")
    number = number_to_store(info)
    # Read-then-write: take the write lock first (SQLite), or two workers' upgrades collide.
    begin_write(db.session)
    user = db.session.get(User, user_id)
    if user is None:  # the account is gone while its login lived on
        raise ApiError(401, "invalid_token", "the token's user no longer exists; log in again")
    user.phone = number
    db.session.commit()
    return {"phone": mask_phone(number), "country_code": str(info.get("countryCode") or "86"),
            "user": user.to_dict()}


def _field(value: object, name: str, code: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request(code, f"{name} is required: the string WeChat gave the mini-program")
    if len(value) > MAX_FIELD_LENGTH:
        raise bad_request("invalid_encrypted_data", f"{name} is too long")
    return value


def decrypt_for_session(session_key: str | None, appid: str, encrypted_data: object, iv: object) -> dict[str, Any]:
    """The decrypted object, if it decrypts with this login's session_key and was made for our appid."""
    encrypted_data = _field(encrypted_data, "encryptedData", "missing_encrypted_data")
    iv = _field(iv, "iv", "missing_iv")
    if not session_key:
        raise bad_request("no_session_key", "this login has no session_key; log in again with wx.login")
    # What the fields look like is checked first and may be told (it says nothing about the key);
    # past that, every failure gets one answer: see crypto.decrypt_user_data on padding oracles.
    try:
        crypto.check_shape(encrypted_data, iv)
    except crypto.DecryptError as exc:
        raise bad_request(exc.code, exc.message) from None
    try:
        data = crypto.decrypt_user_data(session_key, encrypted_data, iv)
        crypto.check_watermark(data, appid)
    except crypto.DecryptError as exc:
        if exc.code == "invalid_session_key":  # our own stored key, not the caller's input
            raise bad_request(exc.code, exc.message) from None
        log.info("user data refused: %s", exc.code)  # the reason stays in our log
        raise bad_request("decrypt_failed", crypto.DECRYPT_FAILED) from None
    return data
