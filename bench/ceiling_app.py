"""The ceilings the product is measured against: bare Flask under the same gunicorn settings.

    gunicorn -c gunicorn.conf.py bench.ceiling_app:app

`GET /bare` answers a small JSON and does nothing else: what Flask, gunicorn and the
load generator cost on this machine. `GET /upstream/unifiedorder` and
`GET /upstream/jscode2session` each make exactly one call to the stand-in WeChat
(`WECHAT_PAY_BASE` / `WECHAT_API_BASE`, a separate process) over a pooled
`requests` session and answer a small JSON: what one upstream round trip adds,
with the stand-in doing the same work it does for the product (a fresh, validly
signed unified order each time, so it stores a new trade as it does for `pay`).

No database, no store, no sessions, no logging: nothing of the product but the
protocol layer's pure signing and XML functions.
"""

from __future__ import annotations

import itertools
import os
import threading

import requests
from flask import Flask
from requests.adapters import HTTPAdapter

from miniapp_server.config import SANDBOX_APPID, SANDBOX_APPSECRET, SANDBOX_MCH_ID, SANDBOX_PAY_KEY
from miniapp_server.wechat.pay import signing, xmlcodec

app = Flask(__name__)

API_BASE = os.environ.get("WECHAT_API_BASE", "http://127.0.0.1:5100/sandbox").rstrip("/")
PAY_BASE = os.environ.get("WECHAT_PAY_BASE", API_BASE).rstrip("/")

# The same pool shape as the product's (miniapp_server/wechat/http.py): keep-alive, no retries.
_http = requests.Session()
_http.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=10, max_retries=0))
_counter = itertools.count()
_lock = threading.Lock()
_prefix = f"ceil{os.getpid() % 100000:05d}"


def _next_trade_no() -> str:
    with _lock:
        n = next(_counter)
    return f"{_prefix}{n:023d}"  # 32 characters, unique per process and call


@app.get("/bare")
def bare():
    return {"ok": True}


@app.get("/upstream/unifiedorder")
def upstream_unifiedorder():
    fields = {
        "appid": SANDBOX_APPID, "mch_id": SANDBOX_MCH_ID, "nonce_str": signing.nonce(), "body": "ceiling",
        "out_trade_no": _next_trade_no(), "total_fee": "100", "fee_type": "CNY", "spbill_create_ip": "127.0.0.1",
        "notify_url": "http://127.0.0.1/notify", "trade_type": "JSAPI", "openid": "o-ceiling",
    }
    fields["sign"] = signing.sign(fields, SANDBOX_PAY_KEY)
    resp = _http.post(PAY_BASE + "/pay/unifiedorder", data=xmlcodec.dumps(fields),
                      headers={"Content-Type": "text/xml"}, timeout=(3.05, 10))
    ok = resp.status_code == 200 and b"prepay_id" in resp.content
    return {"ok": ok}, 200 if ok else 502


@app.get("/upstream/jscode2session")
def upstream_jscode2session():
    resp = _http.get(API_BASE + "/sns/jscode2session", timeout=(3.05, 10), params={
        "appid": SANDBOX_APPID, "secret": SANDBOX_APPSECRET, "js_code": "ceiling#1",
        "grant_type": "authorization_code"})
    ok = resp.status_code == 200 and b"openid" in resp.content
    return {"ok": ok}, 200 if ok else 502
