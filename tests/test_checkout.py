"""The scan-to-pay checkout page: signed links, what the page shows, its status and renewal calls."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from itsdangerous import URLSafeTimedSerializer

from miniapp_server.checkout import links
from miniapp_server.checkout.routes import yuan
from miniapp_server.extensions import db
from miniapp_server.models import Order

from .conftest import bearer, login


def native(client, user, order) -> dict:
    resp = client.post(f"/api/orders/{order['out_trade_no']}/native", headers=user["headers"])
    assert resp.status_code == 200
    return resp.get_json()


def sig_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["sig"][0]


def endpoint(order_no: str, sig: str, what: str = "") -> str:
    return f"/pay/native/{order_no}{'/' + what if what else ''}?sig={sig}"


@pytest.mark.parametrize("fen, text", [(1, "0.01"), (100, "1.00"), (3600, "36.00"), (123456, "1234.56"), (0, "0.00")])
def test_yuan_is_exact(fen, text):
    assert yuan(fen) == text


def test_page_shows_amount_items_and_the_code(client, user, order):
    data = native(client, user, order)
    resp = client.get(data["checkout_url"])
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert '<span class="currency">¥</span>36.00' in html  # 2 × 18.00 yuan
    assert "拿铁咖啡 Latte" in html and "× 2" in html
    src = re.search(r'<img id="qr"[^>]*src="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert src == data["qrcode_url"]
    assert client.get(src).mimetype == "image/png"
    assert "已支付 / Paid" in html  # present but hidden until paid
    assert re.search(r'<section id="paid-panel" class="done" hidden>', html)
    assert data["code_url"] not in html  # the page shows the picture, not the link a phone would open
    # The link's token must not leak through Referer; the page runs only its own script.
    assert resp.headers["Referrer-Policy"] == "no-referrer" and resp.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"] and "<script>" not in html


def test_page_for_a_paid_order_says_paid(client, user, order):
    data = native(client, user, order)
    client.post("/sandbox/control/scan", json={"code_url": data["code_url"]})
    html = client.get(data["checkout_url"]).get_data(as_text=True)
    assert '<section id="paid-panel" class="done" >' in html
    assert re.search(r'<section id="pay-panel" hidden>', html)


@pytest.mark.parametrize("what", ["", "status", "qr"])
def test_bad_signatures_are_refused(client, user, order, what):
    data = native(client, user, order)
    no, sig = order["out_trade_no"], sig_of(data["checkout_url"])
    good = client.get(endpoint(no, sig, what))
    assert good.status_code == 200
    # Change the MAC's first character (its last one carries padding bits base64 ignores).
    mac_at = sig.rindex(".") + 1
    flipped = sig[:mac_at] + ("A" if sig[mac_at] != "A" else "g") + sig[mac_at + 1:]
    for bad in (flipped, "", "x" * 300, sig.split(".")[0], URLSafeTimedSerializer("another-key", salt=links.SALT).dumps(no),
                URLSafeTimedSerializer("test-secret-key", salt="another-purpose").dumps(no)):
        resp = client.get(endpoint(no, bad, what))
        assert resp.status_code == 404, bad
        assert no.encode() not in resp.data and b"36.00" not in resp.data


def test_a_link_does_not_open_another_order(client, user, order):
    data = native(client, user, order)
    stranger = bearer(login(client)["token"])
    theirs = client.post("/api/orders", headers=stranger, json={"items": [{"product_id": 2, "quantity": 3}]}).get_json()
    mine = sig_of(data["checkout_url"])
    for what in ("", "status", "qr"):
        resp = client.get(endpoint(theirs["out_trade_no"], mine, what))
        assert resp.status_code == 404
        assert theirs["out_trade_no"].encode() not in resp.data and b"36.00" not in resp.data
    assert client.post(endpoint(theirs["out_trade_no"], mine, "renew")).status_code == 404
    # The page for a link that is not valid is the same whether the order exists or not.
    nowhere = client.get(endpoint("20260101" + "0" * 24, mine))
    assert nowhere.status_code == 404 and nowhere.data == client.get(endpoint(theirs["out_trade_no"], mine)).data
    assert "链接无效或已过期" in nowhere.get_data(as_text=True)


def test_an_expired_link_is_refused(client, user, order, monkeypatch):
    import itsdangerous.timed

    data = native(client, user, order)
    real_time = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real_time() - links.DEFAULT_TTL - 60)
    old = links.sign(order["out_trade_no"])  # signed a day and a minute ago
    monkeypatch.setattr(itsdangerous.timed.time, "time", real_time)
    assert client.get(endpoint(order["out_trade_no"], old)).status_code == 404
    assert client.get(data["checkout_url"]).status_code == 200


def test_status_follows_the_order(client, user, order):
    data = native(client, user, order)
    sig = sig_of(data["checkout_url"])
    state = client.get(endpoint(order["out_trade_no"], sig, "status")).get_json()
    assert state["status"] == "unpaid" and state["paid"] is False and state["total_fee"] == 3600
    assert state["code"]["qrcode_url"] == data["qrcode_url"] and 0 < state["code"]["expires_in"] <= 1800
    assert "openid" not in str(state) and "code_url" not in state
    client.post("/sandbox/control/scan", json={"code_url": data["code_url"]})
    resp = client.get(endpoint(order["out_trade_no"], sig, "status"))
    state = resp.get_json()
    assert state["status"] == "paid" and state["paid"] is True and state["code"] is None and state["paid_at"]
    assert resp.headers["Cache-Control"] == "no-store"


def test_bad_link_on_status_is_a_json_404(client, user, order):
    resp = client.get(endpoint(order["out_trade_no"], "nope", "status"))
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_renew_gives_a_code_to_an_order_that_has_none(app, client, user, order, runner):
    # An operator's link, made before anyone asked for a code: the page asks for one itself.
    result = runner.invoke(args=["orders", "checkout-link", order["out_trade_no"], "--base-url", "https://shop.example"])
    assert result.exit_code == 0
    url = result.output.strip()
    assert url.startswith(f"https://shop.example/pay/native/{order['out_trade_no']}?sig=")
    page = client.get(url.replace("https://shop.example", ""))
    assert page.status_code == 200 and 'id="qr-wait" class="muted" >' in page.get_data(as_text=True)
    state = client.post(endpoint(order["out_trade_no"], sig_of(url), "renew")).get_json()
    assert state["status"] == "unpaid" and state["code"]["version"]
    stored = db.session.execute(db.select(Order)).scalar_one()
    assert stored.trade_type == "NATIVE" and stored.code_url
    # Asked again while the code is valid: the same code, no second trade.
    again = client.post(endpoint(order["out_trade_no"], sig_of(url), "renew")).get_json()
    assert again["code"]["version"] == state["code"]["version"]
    assert client.get("/sandbox/control/calls").get_json()["unifiedorder"] == 1


def test_renew_explains_why_it_cannot(client, user, order):
    client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=user["headers"])  # paying in the mini-program
    sig = links.sign(order["out_trade_no"])
    resp = client.post(endpoint(order["out_trade_no"], sig, "renew"))
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "trade_type_conflict"


def test_checkout_link_for_an_unknown_order_exits_3(runner):
    assert runner.invoke(args=["orders", "checkout-link", "nope"]).exit_code == 1  # an unknown order is bad input
