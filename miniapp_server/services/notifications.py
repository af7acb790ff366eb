"""WeChat's payment notification: verify, then apply through the exactly-once path; record every one."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

from sqlalchemy import insert

from .. import audit
from ..audit import request_id_from_attach
from ..extensions import db, wechat
from ..models import PaymentNotification
from ..wechat.errors import NotificationRejected
from ..wechat.ipaddr import clean_ip
from ..wechat.numbers import ascii_uint
from . import payments

log = logging.getLogger(__name__)


def _clip(value: Any, size: int) -> str | None:
    return str(value)[:size] if value not in (None, "") else None


def _record_rejection(data: dict[str, str], verdict: str, detail: str, remote_addr: str | None, size: int,
                      audit_row: Callable[[bool, str], None], answer: str) -> None:
    db.session.execute(insert(PaymentNotification).values(
        out_trade_no=_clip(data.get("out_trade_no"), 64), transaction_id=_clip(data.get("transaction_id"), 64),
        total_fee=ascii_uint(data.get("total_fee")), result_code=_clip(data.get("result_code"), 16),
        verdict=verdict, detail=detail[:255], remote_addr=clean_ip(remote_addr), body_size=size,
    ))
    audit_row(False, answer)  # committed with it
    db.session.commit()


def handle_payment_notification(body: bytes, remote_addr: str | None, headers: Mapping[str, str] | None = None,
                                path: str = "/api/pay/notify", started: float | None = None
                                ) -> tuple[bool, str, dict[str, Any]]:
    """(acknowledge?, verdict or reason, the notification's fields). True only once the outcome is committed.

    v2 (signed XML) or v3 (JSON signed in `headers`, its transaction AES-GCM-encrypted): the gateway
    checks the signature on the raw body first, then decrypts, and gives v2's field names either way.
    The exchange's audit row (what it claimed, what we answered) is committed with the outcome.
    """
    started = time.perf_counter() if started is None else started
    db.session.rollback()  # start clean: nothing of this request's may ride along
    headers = headers or {}
    fields: dict[str, Any] = {}

    def audit_row(acknowledged: bool, message: str) -> None:
        audit.record_in_transaction(path, fields, acknowledged, message, time.perf_counter() - started)

    try:
        data = wechat.parse_notification("payment", headers, body)
    except NotificationRejected as err:
        raw = err.raw if isinstance(err.raw, dict) else {}
        # WeChat's signature probes are expected, not forgeries: recorded as such, and no alarm.
        (log.info if err.code == "signature_probe" else log.warning)("payment notification rejected: %s", err.code)
        # What it claimed, for the audit trail (which redacts secrets): forensics for forgeries.
        fields = raw or {"unreadable_body_bytes": len(body)}
        _record_rejection(raw, str(err.code), err.message, remote_addr, len(body),
                          audit_row, err.message)
        return False, err.message, fields
    fields = data
    if data.get("result_code") != "SUCCESS":
        _record_rejection(data, "result_fail", f"result_code {data.get('result_code')}: {data.get('err_code', '')}",
                          remote_addr, len(body), audit_row, "result_code is not SUCCESS")
        return False, "result_code is not SUCCESS", data
    no, txn, fee = data.get("out_trade_no", ""), data.get("transaction_id", ""), ascii_uint(data.get("total_fee"))
    if not no or not txn or fee is None or len(no) > 64 or len(txn) > 32:
        _record_rejection(data, "bad_fields", "out_trade_no, transaction_id or total_fee missing or malformed",
                          remote_addr, len(body), audit_row, "missing or malformed fields")
        return False, "missing or malformed fields", data
    record = {"out_trade_no": no, "transaction_id": txn, "total_fee": fee, "result_code": "SUCCESS",
              "remote_addr": clean_ip(remote_addr), "body_size": len(body), "detail": None}
    # One log line for the outcome (apply_payment's), ending with the id of the /pay request that opened
    # this trade, echoed by WeChat in `attach`.
    verdict = payments.apply_payment(out_trade_no=no, transaction_id=txn, total_fee=fee,
                                     time_end=data.get("time_end"), source="notify", record=record,
                                     payer_openid=data.get("openid") or None,
                                     before_commit=lambda v: audit_row(v in payments.ACKNOWLEDGED, v),
                                     note=f" (pay request {request_id_from_attach(data.get('attach')) or '-'})")
    if verdict in payments.ACKNOWLEDGED:
        return True, verdict, data
    return False, verdict, data
