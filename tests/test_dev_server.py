"""A developer's first hour: `make run` on a port of their choosing (or the next free one), `flask sandbox serve`
really serving, the in-app sandbox delivering to the host a notify URL names, and sandbox data in WeChat's shape."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from miniapp_server import devserver
from miniapp_server.config import SANDBOX_APPID, SANDBOX_APPSECRET, SANDBOX_MCH_ID, SANDBOX_PAY_KEY
from miniapp_server.wechat.pay import signing, xmlcodec

from .conftest import ROOT, free_port

BIN = Path(sys.executable).parent
SUCCESS = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
TRANSACTION_ID = re.compile(r"4200\d{24}")  # 28 digits, as "4200000483202001042069747825"
OPENID = re.compile(r"o[A-Za-z0-9_-]{27}")  # 28 characters, as "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


class Receiver:
    """A merchant's notify URL on another host: records what arrives, answers FAIL `fail_first` times, and can
    hold every answer until `release` is set (to show the sender does not wait for it)."""

    def __init__(self, fail_first: int = 0, hold: bool = False) -> None:
        self.bodies: list[bytes] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail_left = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.bodies.append(body)
                receiver.arrived.set()
                receiver.release.wait(10)
                failing = receiver.fail_left > 0
                receiver.fail_left -= 1
                answer = b"<xml><return_code>FAIL</return_code></xml>" if failing else SUCCESS
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def signed_xml(**fields) -> bytes:
    data = {"appid": SANDBOX_APPID, "mch_id": SANDBOX_MCH_ID, "nonce_str": signing.nonce(), **fields}
    data["sign"] = signing.sign(data, SANDBOX_PAY_KEY)
    return xmlcodec.dumps(data)


def jsapi_pay_params(prepay_id: str) -> dict[str, str]:
    params = {"appId": SANDBOX_APPID, "timeStamp": str(int(time.time())), "nonceStr": signing.nonce(),
              "package": f"prepay_id={prepay_id}", "signType": "MD5"}
    params["paySign"] = signing.sign(params, SANDBOX_PAY_KEY)
    return params


def sdk_order(post, notify_url: str, no: str) -> dict[str, str]:
    """An order placed with the sandbox as an SDK (wechatpy, ...) would place it: its own notify_url."""
    answer = xmlcodec.loads(post("/sandbox/pay/unifiedorder", signed_xml(
        body="SDK order", out_trade_no=no, total_fee="101", spbill_create_ip="127.0.0.1", notify_url=notify_url,
        trade_type="JSAPI", openid="oSDKbuyer000000000000000001")))
    assert answer["result_code"] == "SUCCESS", answer
    return answer


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited instead of serving"
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"nothing served {url} within {timeout} s")


def stop(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(5)


@pytest.fixture
def dev_env(tmp_path: Path, env) -> dict[str, str]:
    """The environment of a developer's shell, with every file `make run` writes moved under tmp_path."""
    full = {**os.environ, **env, "FLASK_APP": "wsgi:app", "PYTHONUNBUFFERED": "1",
            "DEV_SERVER_JSON": str(tmp_path / "dev-server.json"), "DEV_SERVER_JS": str(tmp_path / "dev-server.js"),
            "SANDBOX_V3_KEY_DIR": str(tmp_path / "v3-keys"),
            # make run migrates its database: always a SQLite file of its own (the suite's PostgreSQL has no
            # migration history to upgrade)
            "DATABASE_URL": f"sqlite:///{tmp_path / 'make-run.sqlite3'}"}
    full.pop("PORT", None)
    return full


# -- flask sandbox serve --------------------------------------------------------------------------

def test_flask_sandbox_serve_serves_wechat_over_http_and_notifies_the_url_given(dev_env, receiver):
    port, hook = free_port(), receiver()
    proc = subprocess.Popen([str(BIN / "flask"), "sandbox", "serve", "--port", str(port)], cwd=ROOT,
                            env={**dev_env, "EMBEDDED_STORE_PATH": dev_env["EMBEDDED_STORE_PATH"] + ".sandbox"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/sandbox/control/calls", proc, timeout=30)
        session = requests.get(base + "/sandbox/sns/jscode2session", timeout=5, params={
            "appid": SANDBOX_APPID, "secret": SANDBOX_APPSECRET, "js_code": "alice#1",
            "grant_type": "authorization_code"})
        assert session.headers["X-WeChat-Sandbox"] == "1" and OPENID.fullmatch(session.json()["openid"])

        def post(path, body):
            return requests.post(base + path, data=body, headers={"Content-Type": "text/xml"}, timeout=5).content

        prepay = sdk_order(post, hook.url, "standalone0001")
        paid = requests.post(base + "/sandbox/control/pay", json=jsapi_pay_params(prepay["prepay_id"]), timeout=5)
        assert paid.status_code == 200 and TRANSACTION_ID.fullmatch(paid.json()["transaction_id"])
        assert wait_until(lambda: hook.bodies), "the notification never reached the notify URL"
        note = xmlcodec.loads(hook.bodies[0])
        assert note["out_trade_no"] == "standalone0001" and signing.verify(note, SANDBOX_PAY_KEY)
    finally:
        code = stop(proc)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert "Ignoring a call to 'app.run()'" not in output
    assert code in (0, -signal.SIGTERM), output


# -- make run PORT=... ----------------------------------------------------------------------------

def test_make_run_serves_on_the_port_given_and_the_demo_follows(dev_env, tmp_path):
    port = free_port()
    proc = subprocess.Popen(["make", "--no-print-directory", "run", f"PORT={port}", f"BIN={BIN}"], cwd=ROOT,
                            env=dev_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc)
        assert json.loads((tmp_path / "dev-server.json").read_text()) == {"url": f"http://127.0.0.1:{port}"}
        assert f'host: "127.0.0.1", port: {port} ' in (tmp_path / "dev-server.js").read_text()
        demo = subprocess.run([str(BIN / "flask"), "sandbox", "demo"], cwd=ROOT, env=dev_env, capture_output=True,
                              text=True, timeout=60)  # no --url: it finds the server make run started
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "journey complete" in demo.stdout and "notification answered SUCCESS" in demo.stdout
    finally:
        stop(proc)
    assert f"serving the sandbox at http://127.0.0.1:{port}" in proc.stdout.read().decode(errors="replace")


def test_make_run_refuses_a_taken_port_it_was_asked_for(dev_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([str(BIN / "flask"), "sandbox", "port", "--port", str(port)], cwd=ROOT, env=dev_env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr and f"PORT={port + 1}" in result.stderr


def test_without_a_port_a_taken_default_moves_to_the_next_free_one_and_says_so(dev_env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        default = taken.getsockname()[1]
        chosen, note = devserver.choose_port("127.0.0.1", None, default)
        assert chosen > default and devserver.port_free("127.0.0.1", chosen)
        assert f"port {default} is taken" in note and f"serving on {chosen} instead" in note
        result = subprocess.run([str(BIN / "flask"), "sandbox", "port", "--default", str(default)], cwd=ROOT,
                                env=dev_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    port = int(result.stdout)
    assert port != default and f"port {default} is taken" in result.stderr
    assert json.loads((tmp_path / "dev-server.json").read_text())["url"] == f"http://127.0.0.1:{port}"
    free_default = free_port()
    assert devserver.choose_port("127.0.0.1", None, free_default) == (free_default, None)


# -- the in-app sandbox notifies the host the notify URL names --------------------------------------

def test_in_app_sandbox_delivers_to_another_host_over_http_off_the_request_path(app, client, receiver):
    hook = receiver(fail_first=1, hold=True)

    def post(path, body):
        return client.post(path, data=body, content_type="text/xml").data

    prepay = sdk_order(post, hook.url, "sdkorder0001")
    started = time.monotonic()
    paid = client.post("/sandbox/control/pay", json=jsapi_pay_params(prepay["prepay_id"]))
    assert paid.status_code == 200, paid.get_json()
    note = paid.get_json()["notification"]
    assert note["queued"] is True and note["url"] == hook.url and not note["acknowledged"]
    assert hook.arrived.wait(10), "the first attempt never left"
    assert time.monotonic() - started < 10 and not hook.release.is_set()  # answered while the host held on
    hook.release.set()
    assert wait_until(lambda: len(hook.bodies) >= 2), "FAIL was not retried on WeChat's schedule"
    first, second = (xmlcodec.loads(b) for b in hook.bodies[:2])
    assert first["out_trade_no"] == second["out_trade_no"] == "sdkorder0001"
    assert signing.verify(first, SANDBOX_PAY_KEY) and TRANSACTION_ID.fullmatch(first["transaction_id"])
    assert wait_until(lambda: any(e["acknowledged"] for e in client.get(
        "/sandbox/control/notifications", query_string={"out_trade_no": "sdkorder0001"}).get_json()["items"]))
    log = client.get("/sandbox/control/notifications", query_string={"out_trade_no": "sdkorder0001"}).get_json()
    assert [e["attempt"] for e in log["items"]][:2] == [1, 2] and {e["url"] for e in log["items"]} == {hook.url}


def test_in_app_sandbox_hands_a_url_naming_the_app_to_the_app_itself(app, client, user, order, receiver):
    from .test_pay import pay

    params = pay(client, user, order).get_json()
    note = client.post("/sandbox/control/pay", json=params).get_json()["notification"]
    assert "queued" not in note and note["acknowledged"] and note["url"].startswith("http://localhost/")
    assert client.get(f"/api/orders/{order['out_trade_no']}", headers=user["headers"]).get_json()["status"] == "paid"


# -- the sandbox's data in WeChat's shape ----------------------------------------------------------

def test_native_payer_has_a_stable_real_looking_openid_and_ids_are_wechats_shape(app, client, user):
    def native_paid(payer=None):
        created = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]},
                              headers=user["headers"]).get_json()
        code = client.post(f"/api/orders/{created['out_trade_no']}/native", headers=user["headers"]).get_json()
        body = {"code_url": code["code_url"], **({"payer": payer} if payer else {})}
        paid = client.post("/sandbox/control/scan", json=body)
        assert paid.status_code == 200, paid.get_json()
        return created["out_trade_no"], paid.get_json()["transaction_id"]

    emu = app.extensions["sandbox"]
    first, second, alice = native_paid(), native_paid(), native_paid("alice")
    openids = [emu.payer_openid(emu.load_order(no)) for no, _ in (first, second, alice)]
    assert OPENID.fullmatch(openids[0]) and openids[0] == openids[1] != openids[2]
    assert openids[2] == emu.openid_for("alice#2")  # the person who logs in as alice is the one who scanned
    assert all(TRANSACTION_ID.fullmatch(txn) for _, txn in (first, second, alice))
    assert client.post("/sandbox/control/scan", json={"code_url": "weixin://x", "payer": 5}).status_code == 400
    if app.config["WECHAT_PAY_API"] == "v3":
        answer = app.extensions["wechat"].pay_v3.query(out_trade_no=first[0])
        assert answer["payer"] == {"openid": openids[0]} and answer["transaction_id"] == first[1]
    else:
        answer = app.extensions["wechat"].pay.order_query(out_trade_no=first[0])
        assert answer["openid"] == openids[0] and answer["transaction_id"] == first[1]


@pytest.mark.pay_api("v3")
def test_v3_query_of_a_native_order_answers_the_payers_openid(app, client, user):
    created = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]},
                          headers=user["headers"]).get_json()
    code = client.post(f"/api/orders/{created['out_trade_no']}/native", headers=user["headers"]).get_json()
    unpaid = app.extensions["wechat"].pay_v3.query(out_trade_no=created["out_trade_no"])
    assert "payer" not in unpaid  # nobody has paid a NATIVE order yet: WeChat knows no payer
    assert client.post("/sandbox/control/scan", json={"code_url": code["code_url"]}).status_code == 200
    answer = app.extensions["wechat"].pay_v3.query(out_trade_no=created["out_trade_no"])
    assert answer["trade_state"] == "SUCCESS" and OPENID.fullmatch(answer["payer"]["openid"])
    assert TRANSACTION_ID.fullmatch(answer["transaction_id"])


def test_refund_ids_are_wechats_29_digits(app, client, user, order, runner):
    from .test_pay import pay

    assert client.post("/sandbox/control/pay", json=pay(client, user, order).get_json()).status_code == 200
    result = runner.invoke(args=["orders", "refund", order["out_trade_no"], "--json"])
    assert result.exit_code == 0, result.output
    emu = app.extensions["sandbox"]
    refund_ids = [r["refund_id"] for r in emu.load_order(order["out_trade_no"])["refunds"]]
    assert refund_ids and all(re.fullmatch(r"50\d{27}", r) for r in refund_ids)
