#!/usr/bin/env python3
"""In-process: verifying and parsing one v2 payment notification, ours against wechatpy's.

    .venv/bin/python bench/micro.py            # prints the figures; `make bench` runs it too

The same signed body (bench/dataset.py's, as the sandbox sends them) through
`PayClient.parse_notification` (what /api/pay/notify calls: parse, MD5 check, merchant check)
and through wechatpy's `WeChatPay.parse_payment_result` (parse, MD5 check), in one process,
alternating, best of several rounds (the machine is shared). wechatpy is a bench-only
dependency (bench/requirements.txt); without it this step is skipped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import dataset  # noqa: E402
from miniapp_server.config import SANDBOX_APPID, SANDBOX_MCH_ID, SANDBOX_PAY_KEY  # noqa: E402
from miniapp_server.wechat.errors import NotificationRejected  # noqa: E402
from miniapp_server.wechat.pay.client import PayClient, PayCredentials  # noqa: E402

TARGET = 2.5  # ours at least this many times as fast (the target)


def _best_us(fn, body: bytes, number: int, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(number):
            fn(body)
        out.append((time.perf_counter() - t0) / number * 1e6)
    return out


def run(number: int = 2000, rounds: int = 7) -> dict | None:
    try:
        from wechatpy.exceptions import InvalidSignatureException
        from wechatpy.pay import WeChatPay
    except ImportError:
        return None
    body = dataset.notification("bntfy0", 1, 200)
    ours = PayClient(PayCredentials(SANDBOX_APPID, SANDBOX_MCH_ID, SANDBOX_PAY_KEY), "http://127.0.0.1:9",
                     requests.Session())
    theirs = WeChatPay(appid=SANDBOX_APPID, api_key=SANDBOX_PAY_KEY, mch_id=SANDBOX_MCH_ID)
    # Both read the same fields, and both refuse a body whose amount was changed after signing.
    a, b = ours.parse_notification(body), theirs.parse_payment_result(body)
    assert a["out_trade_no"] == b["out_trade_no"] and a["total_fee"] == str(b["total_fee"]), (a, b)
    forged = body.replace(b"<total_fee>200</total_fee>", b"<total_fee>1</total_fee>")
    assert forged != body
    for parse, refusal in ((ours.parse_notification, NotificationRejected),
                           (theirs.parse_payment_result, InvalidSignatureException)):
        try:
            parse(forged)
        except refusal:
            pass
        else:
            raise AssertionError(f"{parse} accepted a forged notification")
    mine: list[float] = []
    wechatpy: list[float] = []
    for _ in range(rounds):  # alternating, so that a burst of other work hits both
        mine += _best_us(ours.parse_notification, body, number, 1)
        wechatpy += _best_us(theirs.parse_payment_result, body, number, 1)
    best_ours, best_theirs = min(mine), min(wechatpy)
    import wechatpy as wp  # noqa: PLC0415 - its version, for the record

    return {"ours_us": round(best_ours, 2), "wechatpy_us": round(best_theirs, 2),
            "speedup": round(best_theirs / best_ours, 2), "target": TARGET, "met": best_theirs / best_ours >= TARGET,
            "body_bytes": len(body), "wechatpy_version": getattr(wp, "__version__", "?"),
            "rounds": rounds, "number": number}


def describe(result: dict | None) -> str:
    if result is None:
        return ("v2 notification verify+parse: skipped "
                "(wechatpy is not installed: pip install -r bench/requirements.txt)")
    return (f"v2 notification verify+parse ({result['body_bytes']} bytes), in-process, best of {result['rounds']} x "
            f"{result['number']}: ours {result['ours_us']:.1f} us, wechatpy {result['wechatpy_version']} "
            f"parse_payment_result {result['wechatpy_us']:.1f} us: {result['speedup']:.2f}x "
            f"(target >= {result['target']}x: {'met' if result['met'] else 'missed'})")


if __name__ == "__main__":
    print(describe(run()))
