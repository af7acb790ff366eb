"""WeChat Pay v3's own paths under /sandbox (`/sandbox/v3/...`), and the control call for its signer."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Mapping

from flask import Flask, Response, request

from ..wechat.pay.v3.keys import load_private_key
from . import bp
from .v3 import SANDBOX_V3_KEY, SandboxEmulator, SandboxRefundDesk, V3Answer, V3Desk, V3Error
from .v3_keys import ensure_keys

_build_lock = threading.Lock()


def key_dir(app: Flask) -> str:
    return app.config.get("SANDBOX_V3_KEY_DIR") or os.path.join(app.instance_path, "sandbox-v3")


def v3_desk(app: Flask) -> V3Desk:
    """The app's v3 desk, made once (its keys made once per key directory, shared by every process)."""
    desk = app.extensions.get("sandbox_v3")
    if desk is not None:
        return desk
    with _build_lock:
        desk = app.extensions.get("sandbox_v3")
        if desk is not None:
            return desk
        cfg = app.config
        emu = app.extensions["sandbox"]
        keys = ensure_keys(key_dir(app), cfg["WECHAT_MCH_ID"])
        # The merchant's API certificate, as WeChat holds it: the configured one if any, else the sandbox's own.
        if cfg.get("WECHAT_MCH_PRIVATE_KEY_PATH"):
            merchant_key = load_private_key(cfg["WECHAT_MCH_PRIVATE_KEY_PATH"])
            merchant_serial = cfg.get("WECHAT_MCH_CERT_SERIAL") or ""
        else:
            merchant_key, merchant_serial = keys.merchant_private_key, keys.merchant_serial
        standalone = bool(cfg.get("SANDBOX_STANDALONE"))
        refunds = SandboxRefundDesk(emu, standalone)
        desk = V3Desk(emu, refunds, keys, cfg.get("WECHAT_PAY_V3_KEY") or SANDBOX_V3_KEY, merchant_key,
                      merchant_serial, _sender(app), deliver_in_background=standalone)
        app.extensions["sandbox_v3"] = desk
        return desk


def _sender(app: Flask) -> Callable[[str, bytes, Mapping[str, str]], tuple[int, bytes]]:
    from .routes import notify_transport  # the app itself in-process, any other host over HTTP

    return notify_transport(app)[1]


def desk() -> V3Desk:
    from .routes import emulator

    emu = emulator()  # a SandboxEmulator whose v3 desk is v3_desk(app), made on first need
    assert isinstance(emu, SandboxEmulator) and emu.v3 is not None
    return emu.v3


def _wechat_url() -> str:
    """The URL as the merchant signed it: WeChat's own path (after /sandbox) and the query as sent."""
    path = request.path[request.path.index("/v3/"):]
    query = request.query_string.decode("utf-8", "replace")
    return path + ("?" + query if query else "")


def _respond(answer: V3Answer) -> Response:
    return Response(answer.body, status=answer.status, headers=answer.headers)


def _call(handler: Callable[[dict[str, Any]], Any], signer: str | None = None) -> Response:
    d = desk()
    return _respond(d.call(request.method, _wechat_url(), request.headers, request.get_data(cache=True), handler,
                           signer))


@bp.post("/v3/pay/transactions/<any(jsapi, native, app):kind>")
def v3_prepay(kind: str):
    return _call(lambda data: desk().prepay(kind, data))


@bp.get("/v3/pay/transactions/out-trade-no/<out_trade_no>")
def v3_query_by_out_trade_no(out_trade_no: str):
    return _call(lambda data: desk().query(data, request.args.get("mchid", ""), out_trade_no=out_trade_no))


@bp.get("/v3/pay/transactions/id/<transaction_id>")
def v3_query_by_id(transaction_id: str):
    return _call(lambda data: desk().query(data, request.args.get("mchid", ""), transaction_id=transaction_id))


@bp.post("/v3/pay/transactions/out-trade-no/<out_trade_no>/close")
def v3_close(out_trade_no: str):
    return _call(lambda data: desk().close(out_trade_no, data))


@bp.post("/v3/refund/domestic/refunds")
def v3_refund():
    return _call(lambda data: desk().refund(data))


@bp.get("/v3/refund/domestic/refunds/<out_refund_no>")
def v3_refund_query(out_refund_no: str):
    return _call(lambda data: desk().refund_query(out_refund_no))


@bp.get("/v3/certificates")
def v3_certificates():
    # Signed by the platform certificate itself, whatever the signer: that is how a merchant bootstraps.
    return _call(lambda data: desk().certificates(), signer="platform_certificate")


@bp.get("/v3/bill/tradebill")
def v3_tradebill():
    return _call(lambda data: desk().emu.bills.v3_bill("trade", request.args.to_dict()))


@bp.get("/v3/bill/fundflowbill")
def v3_fundflowbill():
    return _call(lambda data: desk().emu.bills.v3_bill("fundflow", request.args.to_dict()))


@bp.get("/v3/billdownload/file")
def v3_billdownload():
    """The file a bill answer's download_url names: the request signed like any other, the answer not."""
    d = desk()
    try:
        d._check_request("GET", _wechat_url(), request.headers, b"")
    except V3Error as err:
        return _respond(d._signed(err.status, {"code": err.code, "message": err.message}))
    raw = d.emu.bills.v3_file(request.args.get("token", ""))
    if raw is None:
        return _respond(d._signed(400, {"code": "INVALID_REQUEST", "message": "下载链接已过期或无效"}))
    return Response(raw, mimetype="application/octet-stream")


@bp.route("/control/v3-signer", methods=["GET", "POST"])
def control_v3_signer():
    """GET: the ids and public halves a merchant downloads (never a private key). POST `{"signer":
    "public_key"|"platform_certificate"}`: which key signs answers and notifications from now on."""
    if request.method == "GET":
        return desk().describe()
    return desk().set_signer(request.get_json(silent=True, force=True))
