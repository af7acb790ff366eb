"""WeChat's own paths under /sandbox, and the control calls that stand in for the phone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, request

from ..extensions import store
from ..wechat.http import make_session
from ..wechat.pay.signing import SIGN_TYPES
from . import bp
from ..message_settings import SANDBOX_TEMPLATES, parse_fields
from .emulator import PREPAY_TTL, Emulator, Merchant, SandboxError
from .messages import MessageDesk
from .refunds import RefundDesk
from .shipping import ShippingDesk
from .transport import WSGIAdapter
from .v3 import SandboxEmulator, SandboxRefundDesk


def emulator() -> Emulator:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    emu = app.extensions.get("sandbox")
    if emu is None:
        cfg = app.config
        names_app, post = notify_transport(app)

        def send(url: str, body: bytes) -> tuple[int, bytes]:
            return post(url, body, {"Content-Type": "text/xml"})

        sign_type = cfg["WECHAT_SIGN_TYPE"] if cfg["WECHAT_SIGN_TYPE"] in SIGN_TYPES else "MD5"
        merchant = Merchant(cfg["WECHAT_APPID"], cfg["WECHAT_APPSECRET"], cfg["WECHAT_MCH_ID"], cfg["WECHAT_PAY_KEY"],
                            sign_type)
        emu = app.extensions["sandbox"] = SandboxEmulator(store.backend, merchant, send, cfg["SANDBOX_TIME_SCALE"],
                                                          prepay_ttl=cfg.get("SANDBOX_PREPAY_TTL") or PREPAY_TTL)
        emu.names_app = names_app
        from .v3_routes import v3_desk  # WeChat Pay v3's half (sandbox/v3.py), built on first need

        emu.v3_factory = lambda: v3_desk(app)
    return emu


def notify_transport(app: Flask) -> tuple[Callable[[str], bool], Callable[[str, bytes, Mapping[str, str]],
                                                                              tuple[int, bytes]]]:
    """Where notifications go: a URL naming this app is handed to it in-process (no second request that a
    sync worker could wait on forever); any other host gets a real HTTP request, as from WeChat.

    The app's names: `localhost` (the test client's, and the CLI's fallback refund URL), the in-app
    transport's origin, and every host a request to /sandbox arrived at. The standalone sandbox has none."""
    cached = app.extensions.get("sandbox_notify_transport")
    if cached is not None:
        return cached
    hosts = _own_hosts(app)
    remote, local = make_session(3.05, 10.0), make_session(3.05, 10.0)
    local.mount("http://", WSGIAdapter(app))
    local.mount("https://", WSGIAdapter(app))

    def names_app(url: str) -> bool:
        return urlsplit(url).netloc.lower() in hosts

    def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        resp = (local if names_app(url) else remote).post(url, data=body, headers=dict(headers))
        return resp.status_code, resp.content

    app.extensions["sandbox_notify_transport"] = names_app, post
    return names_app, post


def _own_hosts(app: Flask) -> set[str]:
    hosts = app.extensions.get("sandbox_hosts")
    if hosts is None:
        from ..integrations import IN_APP_SANDBOX_ORIGIN

        hosts = app.extensions["sandbox_hosts"] = set() if app.config.get("SANDBOX_STANDALONE") else {
            "localhost", urlsplit(IN_APP_SANDBOX_ORIGIN).netloc}
        if hosts is not None and not app.config.get("SANDBOX_STANDALONE") and app.config.get("PUBLIC_BASE_URL"):
            hosts.add(urlsplit(app.config["PUBLIC_BASE_URL"]).netloc.lower())  # the app's own public name
    return hosts


@bp.before_request
def _remember_own_host() -> None:
    # A request reached the app at this host, so a notify URL naming it names the app.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not app.config.get("SANDBOX_STANDALONE"):
        _own_hosts(app).add(request.host.lower())


def _xml(body: bytes) -> Response:
    return Response(body, mimetype="text/xml")


@bp.errorhandler(SandboxError)
def _sandbox_error(err: SandboxError):
    response = jsonify({"error": {"code": err.code, "message": err.message}})
    response.status_code = err.status
    return response


@bp.get("/sns/jscode2session")
def jscode2session():
    return emulator().jscode2session(request.args.to_dict())


@bp.get("/cgi-bin/token")
def cgi_token():
    return emulator().access_token(request.args.to_dict())


@bp.post("/cgi-bin/stable_token")
def cgi_stable_token():
    return emulator().stable_token(request.get_json(silent=True, force=True))


@bp.post("/wxa/business/getuserphonenumber")
def getuserphonenumber():
    return emulator().getuserphonenumber(request.args.get("access_token", ""),
                                         request.get_json(silent=True, force=True))


@bp.post("/pay/unifiedorder")
def unifiedorder():
    return _xml(emulator().unifiedorder(request.get_data()))


@bp.post("/pay/orderquery")
def orderquery():
    return _xml(emulator().orderquery(request.get_data()))


@bp.post("/pay/closeorder")
def closeorder():
    return _xml(emulator().closeorder(request.get_data()))


@bp.post("/control/pay")
def control_pay():
    return emulator().pay_with_params(request.get_json(silent=True, force=True))


@bp.post("/control/scan")
def control_scan():
    body = request.get_json(silent=True, force=True)
    body = body if isinstance(body, dict) else {}
    return emulator().pay_code_url(body.get("code_url"), body.get("payer"))


@bp.get("/control/notifications")
def control_notifications():
    items = emulator().notifications()
    no = request.args.get("out_trade_no")
    if no:
        items = [item for item in items if item["out_trade_no"] == no]
    return {"items": items}


@bp.get("/control/calls")
def control_calls():
    emu = emulator()
    return {name: emu.call_count(name) for name in ("jscode2session", "token", "unifiedorder", "orderquery",
                                                    "closeorder", "stable_token", "getuserphonenumber", "refund",
                                                    "refundquery", "subscribe_send", "upload_shipping_info",
                                                    "get_order", "is_trade_managed", "set_msg_jump_path")}


@bp.post("/control/revoke-token")
def control_revoke_token():
    """Retire the current access tokens (or `access_token`): their next use answers 40001, or 42001
    with `{"reason": "expired"}`. Stands in for a token that died at WeChat before our cache noticed."""
    body = request.get_json(silent=True, force=True)
    body = body if isinstance(body, dict) else {}
    reason, token = body.get("reason", "revoked"), body.get("access_token")
    if reason not in ("revoked", "expired") or not isinstance(token, (str, type(None))):
        raise SandboxError(400, "invalid_params", 'send {"reason": "revoked"|"expired", "access_token"?: "..."}')
    return emulator().tokens.revoke(token, reason)


# -- refunds (sandbox/refunds.py) --------------------------------------------------------------------

def refund_desk() -> RefundDesk:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    desk = app.extensions.get("sandbox_refunds")
    if desk is None:
        desk = app.extensions["sandbox_refunds"] = SandboxRefundDesk(emulator(),
                                                                     bool(app.config.get("SANDBOX_STANDALONE")))
    return desk


@bp.post("/secapi/pay/refund")
def secapi_refund():
    return _xml(refund_desk().refund(request.get_data()))


@bp.post("/pay/refundquery")
def refundquery():
    return _xml(refund_desk().refundquery(request.get_data()))


@bp.post("/control/refund-behaviour")
def control_refund_behaviour():
    """`{"hold_notifications": true}` keeps refunds PROCESSING until settled below;
    `{"fail_next": "NOTENOUGH"}` makes the next refund answer that err_code."""
    return refund_desk().set_behaviour(request.get_json(silent=True, force=True))


@bp.post("/control/refund-notify")
def control_refund_notify():
    """`{"out_refund_no", "deliver": true}`: settle a held refund and (unless deliver is false) notify."""
    body = request.get_json(silent=True, force=True)
    no = body.get("out_refund_no") if isinstance(body, dict) else None
    if not isinstance(no, str) or not no:
        raise SandboxError(400, "invalid_params", 'send {"out_refund_no": "...", "deliver": true}')
    return refund_desk().settle(no, deliver=bool(body.get("deliver", True)))


# -- subscribe messages (sandbox/messages.py) -------------------------------------------------------------

APP_JSON = Path(__file__).resolve().parents[2] / "miniprogram" / "app.json"


def message_desk() -> MessageDesk:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    desk = app.extensions.get("sandbox_messages")
    if desk is None:
        emu = emulator()
        templates = {tid: [key for key, _ in parse_fields("sandbox", fields, event)]
                     for event, (tid, fields) in SANDBOX_TEMPLATES.items()}
        # The app's own templates too: WeChat knows every template the shop picked, by its keys.
        templates.update({t.template_id: [key for key, _ in t.fields] for t in app.config["WECHAT_MESSAGES"].values()})
        desk = app.extensions["sandbox_messages"] = MessageDesk(
            store.backend, app.config["WECHAT_APPID"], templates, lambda: emu.tokens, emu.is_user,
            _mini_program_pages(), emu._count)
    return desk


def _mini_program_pages() -> set[str] | None:
    """The bundled mini-program's pages (app.json), as WeChat knows the published version's; None if absent."""
    try:
        pages = json.loads(APP_JSON.read_text(encoding="utf-8")).get("pages")
    except (OSError, ValueError):
        return None
    return set(pages) if isinstance(pages, list) else None


@bp.post("/cgi-bin/message/subscribe/send")
def subscribe_send():
    return message_desk().send(request.args.get("access_token", ""), request.get_json(silent=True, force=True))


@bp.post("/control/subscribe")
def control_subscribe():
    """The person accepts in wx.requestSubscribeMessage: `{"openid": "..."} or {"code": "<wx.login code>"}`
    with `"template_ids": [...]` (at most 3): one more message of each may be sent to them."""
    body = request.get_json(silent=True, force=True)
    body = body if isinstance(body, dict) else {}
    emu, openid, code = emulator(), body.get("openid"), body.get("code")
    if isinstance(code, str) and code and openid is None:
        openid = emu.openid_for(code)
        emu.meet(openid)
    elif not isinstance(openid, str) or not openid or code is not None:
        raise SandboxError(400, "invalid_params", 'send {"openid": "..."} or {"code": "..."}, and "template_ids"')
    elif not emu.is_user(openid):
        raise SandboxError(400, "unknown_openid", "no such user of this mini-program (log in first)")
    return message_desk().grant(openid, body.get("template_ids"))


@bp.get("/control/messages")
def control_messages():
    """Every subscribe/send the sandbox took, delivered or refused; filters: openid, template_id, out_trade_no,
    delivered=1|0."""
    args = request.args
    delivered = args.get("delivered")
    items = message_desk().sent(openid=args.get("openid") or None, template_id=args.get("template_id") or None,
                                out_trade_no=args.get("out_trade_no") or None,
                                delivered=None if delivered in (None, "") else delivered in ("1", "true"))
    return {"items": items}


@bp.get("/control/subscriptions")
def control_subscriptions():
    """WeChat's side of the credits: `?openid=` (or `?code=`): credits left per template."""
    emu, openid, code = emulator(), request.args.get("openid"), request.args.get("code")
    openid = openid or (emu.openid_for(code) if code else None)
    if not openid:
        raise SandboxError(400, "invalid_params", "give ?openid= or ?code=")
    desk = message_desk()
    return {"openid": openid, "credits": {tid: desk.credits(openid, tid) for tid in desk.templates}}


@bp.post("/control/messages-behaviour")
def control_messages_behaviour():
    """`{"fail_next": <errcode>, "count": 1}`: the next sends answer that errcode (-1, 45009, 47003, ...)."""
    body = request.get_json(silent=True, force=True)
    body = body if isinstance(body, dict) else {}
    return message_desk().fail_next(body.get("fail_next"), body.get("count", 1))


# -- daily bills (sandbox/bills.py) -----------------------------------------------------------------

@bp.post("/pay/downloadbill")
def downloadbill():
    body, mimetype = emulator().bills.downloadbill(request.get_data())
    return Response(body, mimetype=mimetype)


@bp.post("/pay/downloadfundflow")
def downloadfundflow():
    body, mimetype = emulator().bills.downloadfundflow(request.get_data())
    return Response(body, mimetype=mimetype)


@bp.route("/control/bills", methods=["GET", "POST"])
def control_bills():
    """Make the bills disagree with the app: `{"extra_payment": {"out_trade_no", "total_fee"}}`,
    `{"amount_off_by": 1}`, `{"reset": true}`; GET shows what is set."""
    if request.method == "GET":
        return emulator().bills.knob()
    return emulator().bills.set_knob(request.get_json(silent=True, force=True))


# -- order-shipping management (sandbox/shipping.py) -----------------------------------------------

def shipping_desk() -> ShippingDesk:
    """The sandbox's shipping management; `order_state()` and `mark_receipt_confirmed()` serve the push half."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    desk = app.extensions.get("sandbox_shipping")
    if desk is None:
        desk = app.extensions["sandbox_shipping"] = ShippingDesk(emulator())
    return desk


@bp.post("/wxa/sec/order/upload_shipping_info")
def upload_shipping_info():
    return shipping_desk().upload_shipping_info(request.args.get("access_token", ""),
                                                request.get_json(silent=True, force=True))


@bp.post("/wxa/sec/order/get_order")
def shipping_get_order():
    return shipping_desk().get_order(request.args.get("access_token", ""), request.get_json(silent=True, force=True))


@bp.post("/wxa/sec/order/is_trade_managed")
def is_trade_managed():
    """Trade management (发货信息管理): managed unless `control/shipping-behaviour` says otherwise."""
    return shipping_desk().is_trade_managed(request.args.get("access_token", ""),
                                            request.get_json(silent=True, force=True))


@bp.post("/wxa/sec/order/set_msg_jump_path")
def set_msg_jump_path():
    return shipping_desk().set_msg_jump_path(request.args.get("access_token", ""),
                                             request.get_json(silent=True, force=True))


@bp.get("/control/shipping")
def control_shipping():
    """Every shipping upload the sandbox received, with its verdict (`?out_trade_no=` for one order's)."""
    desk = shipping_desk()
    no = request.args.get("out_trade_no")
    answer = {"items": desk.uploads(no), "jump_path": desk.jump_path(), "behaviour": desk.behaviour()}
    if no:
        answer["order_state"] = desk.order_state(out_trade_no=no)
    return answer


@bp.post("/control/shipping-behaviour")
def control_shipping_behaviour():
    """`{"fail_next": -1}` (transient) or `{"fail_next": 10060003}` (permanent) for the next upload;
    `{"lose_next_answer": true}` applies the next upload but answers -1; `{"trade_managed": false}`."""
    return shipping_desk().set_behaviour(request.get_json(silent=True, force=True))
