"""One small error tree for everything WeChat answers (after stripe-python's `_error.py`).

Each error carries WeChat's own code and message, the HTTP status and contract
error code our API answers with, and whether retrying may help.
"""

from __future__ import annotations


class WeChatError(Exception):
    http_status = 502
    api_code = "wechat_error"
    should_retry = False

    def __init__(self, message: str, code: str | int | None = None, raw: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.raw = raw

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})" if self.code is not None else self.message


class WeChatUnavailable(WeChatError):
    """No answer, a timeout, WeChat busy (-1), or an answer we cannot read."""

    http_status = 503
    api_code = "wechat_unavailable"
    should_retry = True


class InvalidCode(WeChatError):
    """The wx.login code is invalid or already used (40029, 40163)."""

    http_status = 400
    api_code = "invalid_code"


class RateLimited(WeChatError):
    """WeChat says we call too often (45011)."""

    http_status = 429
    api_code = "wechat_rate_limited"
    should_retry = True


class InvalidCredential(WeChatError):
    """The access token is invalid, malformed or expired (40001, 40014, 42001): fetch a new one."""

    api_code = "wechat_credential_invalid"


class SignatureError(WeChatError):
    """A signature did not verify: an answer or notification we must not believe."""

    api_code = "wechat_bad_signature"


class PayError(WeChatError):
    """WeChat Pay answered return_code or result_code FAIL; `code` is its err_code."""

    api_code = "wechat_pay_error"


class NotificationRejected(WeChatError):
    """A notification we refuse; `code` says why (bad_xml, bad_signature, wrong_merchant, ...)."""

    http_status = 400
    api_code = "notification_rejected"


def for_errcode(errcode: int, errmsg: str, raw: object = None) -> WeChatError:
    """Map api.weixin.qq.com's `errcode` to our error tree, in this one place."""
    if errcode in (40029, 40163):
        return InvalidCode(errmsg or "invalid code", errcode, raw)
    if errcode == 45011:
        return RateLimited(errmsg or "api minute-quota reach limit", errcode, raw)
    if errcode == -1:
        return WeChatUnavailable(errmsg or "system error", errcode, raw)
    if errcode in (40001, 40014, 42001):
        return InvalidCredential(errmsg or "invalid credential", errcode, raw)
    return WeChatError(errmsg or "wechat error", errcode, raw)
