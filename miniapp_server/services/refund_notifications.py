"""WeChat's refund notification: decrypt `req_info`, check it is ours, settle exactly once; record every one."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from ..extensions import db, wechat
from ..models import PaymentNotification
from ..wechat.errors import NotificationRejected
from ..wechat.ipaddr import clean_ip
from ..wechat.numbers import ascii_uint
from . import refunds

log = logging.getLogger(__name__)


def _clip(value: Any, size: int) -> str | None:
    return str(value)[:size] if value not in (None, "") else None


def _fee(value: Any) -> int | None:
    return ascii_uint(value)


def _record(fields: dict[str, str], detail: str | None, remote_addr: str | None, size: int) -> dict:
    """The notification's row (`total_fee` holds the refund's amount); the verdict is added when known."""
    return dict(kind="refund", out_trade_no=_clip(fields.get("out_trade_no"), 64),
                transaction_id=_clip(fields.get("transaction_id"), 64), total_fee=_fee(fields.get("refund_fee")),
                result_code=_clip(fields.get("refund_status"), 16), detail=(detail or "")[:255] or None,
                remote_addr=clean_ip(remote_addr), body_size=size)


def _reject(fields: dict[str, str], verdict: str, detail: str, remote_addr: str | None, size: int) -> None:
    db.session.add(PaymentNotification(**_record(fields, detail, remote_addr, size), verdict=verdict))
    db.session.commit()


def handle_refund_notification(body: bytes, remote_addr: str | None, headers: Mapping[str, str] | None = None
                               ) -> tuple[bool, str, dict[str, str]]:
    """(acknowledge?, verdict or reason, the decrypted fields for the audit). True only once committed.

    v2 (`req_info` AES-256-ECB) or v3 (JSON signed in `headers`, `resource` AES-256-GCM): the gateway
    verifies and decrypts, and gives v2's field names either way.
    """
    db.session.rollback()  # start clean: nothing of this request's may ride along
    headers = headers or {}
    try:
        fields = wechat.parse_notification("refund", headers, body)
    except NotificationRejected as err:
        raw = err.raw if isinstance(err.raw, dict) else {}
        # WeChat's signature probes are expected, not forgeries: recorded as such, and no alarm.
        (log.info if err.code == "signature_probe" else log.warning)("refund notification rejected: %s", err.code)
        _reject({}, str(err.code), err.message, remote_addr, len(body))
        return False, str(err.code), {k: v for k, v in raw.items() if k in ("appid", "mch_id", "return_code")}
    out_refund_no, no = fields.get("out_refund_no", ""), fields.get("out_trade_no", "")
    if not out_refund_no or not no or len(out_refund_no) > 64 or _fee(fields.get("refund_fee")) is None \
            or fields.get("refund_status") not in refunds.SETTLED_REFUND_STATES:
        _reject(fields, "bad_fields", "out_refund_no, out_trade_no, refund_fee or refund_status missing or malformed",
                remote_addr, len(body))
        return False, "bad_fields", fields
    record = _record(fields, f"out_refund_no {out_refund_no}", remote_addr, len(body))
    verdict = refunds.settle_refund(fields, source="notify", record=record)
    return verdict in refunds.ACKNOWLEDGED, verdict, fields
