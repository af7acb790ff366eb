"""NATIVE (scan-to-pay): the code_url, its QR image, renewal of an expired code, and the sandbox's scan."""

import time
import xml.etree.ElementTree as ET
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import Order, utcnow
from miniapp_server.services import native
from miniapp_server.wechat.errors import PayError
from miniapp_server.wechat.pay import signing, xmlcodec
from miniapp_server.wechat.times import wechat_time

from .conftest import bearer, login, lose_notifications
from .qrdecode import decode_png

BROWSER_IMG_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"  # Chromium's <img>


def start(client, user, order):
    return client.post(f"/api/orders/{order['out_trade_no']}/native", headers=user["headers"])


def calls(client, name="unifiedorder"):
    return client.get("/sandbox/control/calls").get_json()[name]


def stored_order():
    order = db.session.execute(db.select(Order)).scalar_one()
    db.session.refresh(order)
    return order


def test_native_answers_code_url_and_qrcode_url(client, user, order):
    resp = start(client, user, order)
    assert resp.status_code == 200
    data = resp.get_json()
    assert {"code_url", "qrcode_url", "checkout_url"} <= set(data)
    assert data["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    stored = stored_order()
    assert stored.trade_type == "NATIVE" and stored.code_url == data["code_url"] and stored.prepay_id
    assert data["expires_at"] == stored.prepay_expires_at.isoformat()
    qr = urlsplit(data["qrcode_url"])
    assert qr.path == f"/pay/native/{order['out_trade_no']}/qr"
    assert parse_qs(qr.query)["v"] == [native.code_version(data["code_url"])]
    assert urlsplit(data["checkout_url"]).path == f"/pay/native/{order['out_trade_no']}"


@pytest.mark.pay_api("v2")  # v2's XML and keys by nature; v3's counterpart is in test_v3_app.py
def test_unified_order_carries_native_fields(app, client, user, order, monkeypatch):
    sent = {}
    real = app.extensions["wechat"].pay.http.post

    def spy(url, data=None, **kw):
        if url.endswith("/pay/unifiedorder"):
            sent.update(xmlcodec.loads(data))
        return real(url, data=data, **kw)

    monkeypatch.setattr(app.extensions["wechat"].pay.http, "post", spy)
    assert start(client, user, order).status_code == 200
    assert sent["trade_type"] == "NATIVE" and sent["product_id"] == "1" and "openid" not in sent
    assert sent["total_fee"] == "3600" and sent["out_trade_no"] == order["out_trade_no"]
    # The trade lives until the order's own deadline, whatever the prepay's life.
    assert sent["time_expire"] == wechat_time(stored_order().expires_at)
    assert signing.verify(sent, app.config["WECHAT_PAY_KEY"], "MD5")


def test_a_valid_code_is_reused(client, user, order):
    first = start(client, user, order).get_json()
    second = start(client, user, order).get_json()
    assert first["code_url"] == second["code_url"] and calls(client) == 1


def test_qr_png_decodes_back_to_the_code_url(client, user, order):
    data = start(client, user, order).get_json()
    resp = client.get(data["qrcode_url"])
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert resp.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert decode_png(resp.data) == [data["code_url"]]
    # Browsers' <img> rate PNG and SVG alike: they get the default, PNG.
    assert client.get(data["qrcode_url"], headers={"Accept": BROWSER_IMG_ACCEPT}).mimetype == "image/png"


@pytest.mark.parametrize("how", ["query", "accept"])
def test_qr_svg_on_request(client, user, order, how):
    data = start(client, user, order).get_json()
    if how == "query":
        resp = client.get(data["qrcode_url"] + "&format=svg")
    else:
        resp = client.get(data["qrcode_url"], headers={"Accept": "image/svg+xml"})
    assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
    root = ET.fromstring(resp.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.find("{http://www.w3.org/2000/svg}path") is not None
    assert "Accept" in resp.headers["Vary"]
    png = client.get(data["qrcode_url"])
    assert png.headers["ETag"] != resp.headers["ETag"]  # one cache entry per format


def test_qr_unknown_format_is_400(client, user, order):
    data = start(client, user, order).get_json()
    resp = client.get(data["qrcode_url"] + "&format=gif")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_format"


def test_qr_is_cached_rendered_once_and_revalidated(client, user, order, monkeypatch):
    rendered = []
    real = native.render_qr
    monkeypatch.setattr(native, "render_qr", lambda url, fmt: rendered.append(fmt) or real(url, fmt))
    data = start(client, user, order).get_json()
    first = client.get(data["qrcode_url"])
    second = client.get(data["qrcode_url"])
    assert first.data == second.data and rendered == ["png"]  # the store kept the first rendering
    max_age = int(first.headers["Cache-Control"].split("max-age=")[1])
    assert first.headers["Cache-Control"].startswith("private") and 0 < max_age <= 1800
    etag = first.headers["ETag"]
    again = client.get(data["qrcode_url"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    # Without the code's version in the URL a cache must revalidate: the code may be renewed under it.
    bare = data["qrcode_url"].split("&v=")[0]
    assert client.get(bare).headers["Cache-Control"] == "private, no-cache"


def test_qr_link_is_bound_to_its_order(client, user, order):
    data = start(client, user, order).get_json()
    other_user = bearer(login(client)["token"])
    other = client.post("/api/orders", headers=other_user, json={"items": [{"product_id": 2, "quantity": 1}]}).get_json()
    other_data = client.post(f"/api/orders/{other['out_trade_no']}/native", headers=other_user).get_json()
    sig = parse_qs(urlsplit(data["qrcode_url"]).query)["sig"][0]
    # The signature of my order does not open someone else's QR code.
    stolen = client.get(f"/pay/native/{other['out_trade_no']}/qr?sig={sig}")
    assert stolen.status_code == 404 and other_data["code_url"].encode() not in stolen.data
    mac_at = sig.rindex(".") + 1  # the MAC's first character: every one of its bits counts
    tampered = sig[:mac_at] + ("A" if sig[mac_at] != "A" else "g") + sig[mac_at + 1:]
    assert client.get(f"/pay/native/{order['out_trade_no']}/qr?sig={tampered}").status_code == 404
    assert client.get(f"/pay/native/{order['out_trade_no']}/qr").status_code == 404


def test_another_users_order_is_404(client, user, order):
    stranger = bearer(login(client)["token"])
    resp = client.post(f"/api/orders/{order['out_trade_no']}/native", headers=stranger)
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    assert client.post(f"/api/orders/{order['out_trade_no']}/native").status_code == 401
    assert stored_order().prepay_id is None and calls(client) == 0


def test_scan_pays_and_notification_marks_paid(client, user, order):
    data = start(client, user, order).get_json()
    paid = client.post("/sandbox/control/scan", json={"code_url": data["code_url"]})
    assert paid.status_code == 200 and paid.get_json()["notification"]["acknowledged"] is True
    stored = stored_order()
    assert stored.status == "paid" and stored.transaction_id == paid.get_json()["transaction_id"]
    assert stored.payments[0].source == "notify"
    again = client.post("/sandbox/control/scan", json={"code_url": data["code_url"]})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "order_paid"
    resp = start(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_paid"
    # A paid order has no code to show any more.
    assert client.get(data["qrcode_url"]).status_code == 404


@pytest.mark.parametrize("body", [{}, {"code_url": ""}, {"code_url": 5}, ["x"], {"code_url": "weixin://wxpay/bizpayurl?pr=nope"}])
def test_scan_refuses_bad_or_unknown_codes(client, body):
    resp = client.post("/sandbox/control/scan", json=body)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] in ("invalid_params", "code_url_expired")


def test_expired_code_is_renewed_for_the_same_trade(make_app):
    # Codes that live one second, in the app's belief and at the emulated WeChat alike.
    app = make_app(PREPAY_TTL=1, SANDBOX_PREPAY_TTL=1)
    client = app.test_client()
    user = {"headers": bearer(login(client)["token"])}
    order = client.post("/api/orders", headers=user["headers"], json={"items": [{"product_id": 1, "quantity": 1}]}).get_json()
    with app.app_context():
        first = start(client, user, order).get_json()
        again = start(client, user, order).get_json()
        # Still valid at WeChat: the same code comes back, and its expiry is not believed extended.
        assert again["code_url"] == first["code_url"] and again["expires_at"] == first["expires_at"]
        time.sleep(1.2)
        assert client.get(first["qrcode_url"]).status_code == 404  # an expired code is not served
        renewed = start(client, user, order).get_json()
        assert renewed["code_url"] != first["code_url"] and renewed["expires_at"] > first["expires_at"]
        assert calls(client) == 3 and calls(client, "closeorder") == 0  # renewed, never closed
        assert client.get("/sandbox/control/calls").get_json()["unifiedorder"] == 3
        emu = app.extensions["sandbox"]
        assert emu.load_order(order["out_trade_no"])["code_url"] == renewed["code_url"]  # one trade, new code
        old = client.post("/sandbox/control/scan", json={"code_url": first["code_url"]})
        assert old.status_code == 400 and old.get_json()["error"]["code"] == "code_url_expired"
        assert decode_png(client.get(renewed["qrcode_url"]).data) == [renewed["code_url"]]
        assert client.post("/sandbox/control/scan", json={"code_url": renewed["code_url"]}).status_code == 200
        assert stored_order().status == "paid" and len(stored_order().payments) == 1


def test_an_order_past_its_deadline_is_closed_at_wechat_not_renewed(client, user, order):
    start(client, user, order)
    db.session.execute(db.update(Order).values(expires_at=utcnow() - timedelta(seconds=1),
                                               prepay_expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    resp = start(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_closed"
    assert stored_order().status == "closed" and calls(client, "closeorder") == 1 and calls(client) == 1
    emu = client.application.extensions["sandbox"]
    assert emu.load_order(order["out_trade_no"])["state"] == "CLOSED"


def test_an_order_paid_at_the_last_moment_is_learnt_not_closed(client, user, order):
    data = start(client, user, order).get_json()
    lose_notifications(client.application)
    client.post("/sandbox/control/scan", json={"code_url": data["code_url"]})
    db.session.execute(db.update(Order).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    resp = start(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "order_paid"
    assert stored_order().status == "paid" and stored_order().payments[0].source == "query"


def test_a_jsapi_order_cannot_switch_to_native(client, user, order):
    assert client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=user["headers"]).status_code == 200
    resp = start(client, user, order)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "trade_type_conflict"


def test_sandbox_wants_product_id_for_native_and_closes_after_time_expire(app):
    pay = app.extensions["wechat"].pay
    fields = dict(trade_type="NATIVE", body="x", out_trade_no="20260101native0000000000000001", total_fee=1,
                  spbill_create_ip="127.0.0.1", notify_url="http://localhost/api/pay/notify")
    with pytest.raises(PayError) as err:
        pay.unified_order(**fields)
    assert err.value.code == "PARAM_ERROR"
    answer = pay.unified_order(**fields, product_id="1")
    emu = app.extensions["sandbox"]
    trade = emu.load_order(fields["out_trade_no"])
    trade["time_expire"], trade["prepay_expires"] = time.time() - 1, time.time() - 1
    emu.save_order(trade)
    with pytest.raises(PayError) as err:  # a trade past its time_expire is closed, not renewed
        pay.unified_order(**fields, product_id="1")
    assert err.value.code == "ORDERCLOSED" and answer["code_url"]


def test_a_lost_notification_is_caught_by_the_status_check(make_app):
    app = make_app()
    app.config["NATIVE_QUERY_INTERVAL"] = 5
    client = app.test_client()
    user = {"headers": bearer(login(client)["token"])}
    order = client.post("/api/orders", headers=user["headers"], json={"items": [{"product_id": 1, "quantity": 1}]}).get_json()
    with app.app_context():
        data = start(client, user, order).get_json()
        status_url = data["checkout_url"].replace(f"/native/{order['out_trade_no']}?",
                                                  f"/native/{order['out_trade_no']}/status?")
        lose_notifications(app)  # WeChat's notification is lost
        client.post("/sandbox/control/scan", json={"code_url": data["code_url"]})
        assert client.get(status_url).get_json()["status"] == "unpaid"  # a fresh code: not asked yet
        assert calls(client, "orderquery") == 0
        db.session.execute(db.update(Order).values(updated_at=utcnow() - timedelta(seconds=10)))
        db.session.commit()
        state = client.get(status_url).get_json()
        assert state["status"] == "paid" and state["paid"] is True and calls(client, "orderquery") == 1
        assert stored_order().payments[0].source == "query"
