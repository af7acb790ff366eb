"""End to end in headless Chromium against a real gunicorn: the NATIVE checkout page, as a customer sees it.

The QR code is read back from what the browser drew (a screenshot of the <img>), paid through the sandbox
as a phone that scanned it, and the page must turn to "paid" by itself, without a reload.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright

from .conftest import ROOT, bearer
from .qrdecode import decode_png

CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, offline: no sandbox as root, and none of its calls home (the network is closed).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def browser():
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def new_native_order(base: str, quantity: int = 2) -> dict:
    http = requests.Session()
    login = http.post(f"{base}/api/auth/login", json={"code": "browser-test"}, timeout=10).json()
    http.headers.update(bearer(login["token"]))
    order = http.post(f"{base}/api/orders", timeout=10,
                      json={"items": [{"product_id": 1, "quantity": quantity}, {"product_id": 3, "quantity": 1}]})
    assert order.status_code == 201, order.text
    no = order.json()["out_trade_no"]
    native = http.post(f"{base}/api/orders/{no}/native", timeout=10)
    assert native.status_code == 200, native.text
    return {"no": no, "http": http, "order": order.json(), **native.json()}


def qr_on_page(page: Page) -> list[str]:
    """Decode the QR code exactly as the browser drew it."""
    qr = page.locator("#qr")
    expect(qr).to_be_visible()
    page.wait_for_function("() => { const i = document.getElementById('qr'); return i.complete && i.naturalWidth > 0; }")
    return decode_png(qr.screenshot())


def scan(base: str, code_url: str) -> requests.Response:
    return requests.post(f"{base}/sandbox/control/scan", json={"code_url": code_url}, timeout=10)


def open_checkout(browser, url: str) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": 520, "height": 860})
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.goto(url)
    return page, navigations


def test_checkout_page_shows_a_scannable_code_and_turns_paid_without_reload(gunicorn, browser):
    """PNG on the page and SVG on request both decode to the code_url; paying turns the page paid in place."""
    server = gunicorn()
    data = new_native_order(server.url)
    page, navigations = open_checkout(browser, data["checkout_url"])

    assert data["order"]["total_fee"] == 4800  # demo products: 2 × 1800 + 1200 fen
    expect(page.locator("#amount")).to_have_text("¥48.00")
    expect(page.locator(".items")).to_contain_text("拿铁咖啡 Latte")
    expect(page.locator(".items")).to_contain_text("牛角包 Croissant")
    expect(page.locator("#status-waiting")).to_be_visible()
    expect(page.locator("#countdown")).to_have_text(re.compile(r"^\d\d:\d\d$"))
    decoded = qr_on_page(page)
    assert decoded == [data["code_url"]]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "native-checkout.png"), full_page=True)

    svg_page = browser.new_page(viewport={"width": 400, "height": 400})  # the SVG form draws the same code
    response = svg_page.goto(data["qrcode_url"] + "&format=svg")
    assert response is not None and response.headers["content-type"].startswith("image/svg+xml")
    assert decode_png(svg_page.screenshot()) == [data["code_url"]]
    svg_page.close()

    page.evaluate("window.__sameDocument = 'still here'")  # gone if the page reloads
    paid = scan(server.url, decoded[0])  # the phone pays the code it read off the screen
    assert paid.status_code == 200, paid.text
    assert paid.json()["notification"]["acknowledged"] is True

    expect(page.locator("#status-paid")).to_be_visible(timeout=10_000)
    expect(page.locator("#status-paid")).to_have_text("已支付 / Paid")
    expect(page.locator("#pay-panel")).to_be_hidden()
    assert page.evaluate("window.__sameDocument") == "still here"
    assert navigations == [data["checkout_url"]]  # one navigation: the first load
    page.screenshot(path=str(ARTIFACTS / "native-checkout-paid.png"), full_page=True)

    order = data["http"].get(f"{server.url}/api/orders/{data['no']}", timeout=10).json()
    assert order["status"] == "paid" and order["transaction_id"] == paid.json()["transaction_id"]
    assert scan(server.url, decoded[0]).json()["error"]["code"] == "order_paid"  # one trade, one payment


def test_expired_code_is_renewed_on_the_page_for_the_same_trade(gunicorn, browser):
    # Codes that live 4 seconds instead of WeChat's two hours, so the countdown runs out during the test.
    server = gunicorn(extra_env={"PREPAY_TTL": "4", "SANDBOX_PREPAY_TTL": "4"})
    data = new_native_order(server.url, quantity=1)
    page, navigations = open_checkout(browser, data["checkout_url"])
    first = qr_on_page(page)
    assert first == [data["code_url"]]
    version = page.locator("#checkout").get_attribute("data-code-version")

    page.wait_for_function(f"() => document.getElementById('checkout').dataset.codeVersion !== '{version}'",
                           timeout=15_000)
    renewed = qr_on_page(page)
    assert renewed and renewed != first
    page.evaluate("window.__sameDocument = 'still here'")
    assert scan(server.url, first[0]).json()["error"]["code"] == "code_url_expired"  # the old code is dead
    assert scan(server.url, renewed[0]).status_code == 200
    expect(page.locator("#status-paid")).to_be_visible(timeout=10_000)
    assert page.evaluate("window.__sameDocument") == "still here" and len(navigations) == 1
    order = data["http"].get(f"{server.url}/api/orders/{data['no']}", timeout=10).json()
    assert order["status"] == "paid"  # the renewed code paid the one and only trade of this order



def test_an_order_paid_another_way_says_so_and_stops_renewing(gunicorn, env, browser):
    server = gunicorn()
    data = new_native_order(server.url, quantity=1)
    other = data["http"].post(f"{server.url}/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]},
                              timeout=10).json()
    no = other["out_trade_no"]
    assert data["http"].post(f"{server.url}/api/orders/{no}/pay", timeout=10).status_code == 200  # JSAPI
    # The operator's way to a link: the CLI, on the server's own database and SECRET_KEY.
    cli = subprocess.run([str(Path(sys.executable).parent / "flask"), "orders", "checkout-link", no,
                          "--base-url", server.url], env={**os.environ, **env, "FLASK_APP": "wsgi:app"},
                         cwd=ROOT, capture_output=True, text=True, check=True)
    page, _ = open_checkout(browser, cli.stdout.strip())
    expect(page.locator("#problem")).to_contain_text("cannot be paid by scanning", timeout=10_000)
    expect(page.locator("#qr")).to_be_hidden()
    expect(page.locator("#amount")).to_have_text("¥18.00")
