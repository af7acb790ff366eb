"""The shipped deployment (deploy/), run: Debian's nginx with deploy/nginx/miniapp-pay.conf itself in front of
gunicorn (gunicorn.conf.py), its two machine-local snippets supplied by the test (a loopback listener without
TLS, this test's gunicorn). Shows what issue 14 asks of the edge: stalled clients do not delay WeChat's
notifications, a 200 MB chunked body is refused at the edge, the login limit sees each client's own address,
and links never carry a forged host. Plus: the systemd units' and the cron line's commands run as written."""

from __future__ import annotations

import configparser
import http.client
import json
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from miniapp_server.config import SANDBOX_APPID, SANDBOX_MCH_ID, SANDBOX_PAY_KEY
from miniapp_server.wechat.pay import signing, xmlcodec
from miniapp_server.wechat.pay.client import ACK_SUCCESS

from .conftest import ROOT, free_port

NGINX = "/usr/sbin/nginx"
DEPLOY = ROOT / "deploy"
DOMAIN = "shop.example.com"  # the site file's server_name
PUBLIC = f"https://{DOMAIN}"



def nginx_conf(prefix: Path, port: int, upstream: str) -> Path:
    """A minimal nginx.conf around the shipped site file, which is copied as it is."""
    (prefix / "snippets").mkdir(parents=True)
    (prefix / "sites").mkdir()
    shutil.copy(DEPLOY / "nginx" / "miniapp-pay.conf", prefix / "sites" / "miniapp-pay.conf")
    (prefix / "snippets" / "miniapp-pay-listen.conf").write_text(
        f"listen 127.0.0.1:{port};\naccess_log {prefix}/access.log miniapp_pay;\n")
    (prefix / "snippets" / "miniapp-pay-upstream.conf").write_text(f"server {upstream};\n")
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / temp).mkdir()
    conf = prefix / "nginx.conf"
    # As root, nginx's workers would drop to 'nobody', who cannot write this test's temporary folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"""daemon off;
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include sites/miniapp-pay.conf;
}}
""")
    return conf


@pytest.fixture
def edge(gunicorn, tmp_path):
    """nginx (the shipped site) in front of gunicorn (1 worker, 4 threads: few, to make the point)."""
    assert Path(NGINX).exists(), "Debian's nginx is needed (apt-get install nginx; .ci/run does)"
    server = gunicorn("--workers", "1", "--threads", "4", extra_env={
        "PROXY_FIX_HOPS": "1", "PUBLIC_BASE_URL": PUBLIC, "LOGIN_RATE_LIMIT": "3", "BODY_READ_TIMEOUT": "10"})
    port = free_port()
    prefix = tmp_path / "nginx"
    conf = nginx_conf(prefix, port, server.url.removeprefix("http://"))
    check = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.05)
    yield {"port": port, "server": server, "prefix": prefix}
    proc.terminate()
    proc.wait(10)


def call(edge, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         source: str = "127.0.0.1", host: str = DOMAIN, timeout: float = 10) -> tuple[int, dict, bytes]:
    """One request through nginx from the loopback address `source` (each is a client of its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", edge["port"], timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def login(edge, code: str, source: str = "127.0.0.1", headers: dict | None = None) -> tuple[int, dict]:
    status, _, body = call(edge, "POST", "/api/auth/login", json.dumps({"code": code}).encode(),
                           {"Content-Type": "application/json", **(headers or {})}, source=source)
    return status, json.loads(body)


def new_order(edge, token: str) -> dict:
    status, _, body = call(edge, "POST", "/api/orders", json.dumps({"items": [{"product_id": 1, "quantity": 1}]}).encode(),
                           {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert status == 201, body
    return json.loads(body)


def signed_notification(order: dict, n: int) -> bytes:
    fields = {"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": SANDBOX_APPID, "mch_id": SANDBOX_MCH_ID,
              "nonce_str": signing.nonce(), "openid": "o-edge", "trade_type": "JSAPI",
              "total_fee": str(order["total_fee"]), "cash_fee": str(order["total_fee"]), "fee_type": "CNY",
              "bank_type": "OTHERS", "transaction_id": f"42000000992026120100000{n:05d}",
              "out_trade_no": order["out_trade_no"], "time_end": "20261201120000"}
    fields["sign"] = signing.sign(fields, SANDBOX_PAY_KEY)
    return xmlcodec.dumps(fields)


def wait_for_line(path: Path, fragment: str, seconds: float = 10) -> str:
    """The log once it holds `fragment` (nginx writes a request's line just after answering it)."""
    deadline = time.monotonic() + seconds
    while True:
        text = path.read_text() if path.exists() else ""
        if fragment in text or time.monotonic() > deadline:
            assert fragment in text, text[-2000:]
            return text
        time.sleep(0.05)


def test_fifty_stalled_clients_do_not_delay_notifications(edge):
    _, session = login(edge, "edge-buyer")
    orders = [new_order(edge, session["token"]) for _ in range(5)]
    stalled = []
    for n in range(50):  # each announces 1000 bytes, sends a few, and stalls; nginx holds them, not gunicorn
        sock = socket.create_connection(("127.0.0.1", edge["port"]), timeout=10)
        sock.sendall(f"POST /api/auth/login HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 1000\r\n\r\n{{\"code\": ".encode())
        stalled.append(sock)
    try:
        time.sleep(0.2)  # let nginx take them all in
        for n, order in enumerate(orders):
            started = time.monotonic()
            status, _, body = call(edge, "POST", "/api/pay/notify", signed_notification(order, n),
                                   {"Content-Type": "text/xml"}, timeout=5)
            took = time.monotonic() - started
            assert status == 200 and body == ACK_SUCCESS, body
            assert took < 1.0, f"notification {n} waited {took:.2f}s behind the stalled clients"
        for order in orders:
            status, _, body = call(edge, "GET", f"/api/orders/{order['out_trade_no']}",
                                   headers={"Authorization": f"Bearer {session['token']}"})
            assert json.loads(body)["status"] == "paid"
    finally:
        for sock in stalled:
            sock.close()


def test_a_200_mb_chunked_body_is_refused_at_the_edge(edge):
    sock = socket.create_connection(("127.0.0.1", edge["port"]), timeout=10)
    sock.sendall(f"POST /api/auth/login HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Type: application/json\r\n"
                 f"Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent, answer = 0, b""
    sock.settimeout(0.005)
    try:
        while sent < 200 * 1024 * 1024 and not answer:
            try:
                sock.sendall(chunk)
                sent += 65536
            except OSError:
                break
            try:
                answer = sock.recv(65536)
            except socket.timeout:
                pass
        sock.settimeout(5)
        while b"}}" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "body_too_large"
    assert sent < 16 * 1024 * 1024, sent  # refused after about 1 MB, not 200
    assert "/api/auth/login" not in edge["server"].log()  # gunicorn never saw it


def test_a_notify_url_past_the_limit_answers_in_wechats_format(edge):
    status, headers, body = call(edge, "POST", "/api/pay/notify", b"<xml>" + b" " * (2 * 1024 * 1024) + b"</xml>",
                                 {"Content-Type": "text/xml"})
    assert status == 413 and xmlcodec.loads(body)["return_code"] == "FAIL"
    status, headers, body = call(edge, "POST", "/api/pay/notify", b"{" + b" " * (2 * 1024 * 1024) + b"}",
                                 {"Content-Type": "application/json", "Wechatpay-Signature": "x"})
    assert status == 413 and json.loads(body)["code"] == "FAIL"


def test_the_login_limit_sees_each_clients_own_address(edge):
    for _ in range(3):  # 127.0.0.2 sends junk codes until its own limit (LOGIN_RATE_LIMIT=3)
        assert login(edge, "bad-code", source="127.0.0.2")[0] == 400
    assert login(edge, "bad-code", source="127.0.0.2")[0] == 429
    # ... and cannot walk around it with X-Forwarded-For: nginx replaces what the client sent
    assert login(edge, "fine", source="127.0.0.2", headers={"X-Forwarded-For": "198.51.100.77"})[0] == 429
    for n in range(3):  # another client through the same nginx is not locked out
        assert login(edge, f"someone-{n}", source="127.0.0.3")[0] == 200
    log = wait_for_line(edge["prefix"] / "access.log", "127.0.0.3 ")
    assert "127.0.0.2 " in log


def test_checkout_links_never_carry_a_forged_host(edge):
    _, session = login(edge, "edge-native", source="127.0.0.4")
    order = new_order(edge, session["token"])
    forged = {"Authorization": f"Bearer {session['token']}", "X-Forwarded-Host": "evil.example",
              "X-Forwarded-Port": "8443", "Forwarded": "host=evil.example"}
    status, headers, body = call(edge, "POST", f"/api/orders/{order['out_trade_no']}/native", b"", forged)
    assert status == 200, body
    links = json.loads(body)
    assert links["checkout_url"].startswith(f"{PUBLIC}/pay/native/{order['out_trade_no']}?sig=")
    assert links["qrcode_url"].startswith(f"{PUBLIC}/pay/native/")
    assert headers["Cache-Control"] == "no-store"
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):  # another Host: no answer at all
        call(edge, "POST", f"/api/orders/{order['out_trade_no']}/native", b"", forged, host="evil.example")
    page = links["checkout_url"].removeprefix(PUBLIC)
    status, _, _ = call(edge, "GET", page)
    assert status == 200
    nginx_log = wait_for_line(edge["prefix"] / "access.log", "GET /pay/native/")  # written just after answering
    assert "sig=" not in nginx_log  # neither log holds the link's signature
    # gunicorn writes its access line after the answer too (on a busy machine, after nginx has written its own)
    gunicorn_log = wait_for_line(edge["server"].log_path, "GET /pay/native/")
    assert "sig=[redacted]" in gunicorn_log and page.split("sig=")[1] not in edge["server"].log()
    assert call(edge, "GET", "/sandbox/control/calls")[0] == 404  # never exposed through the edge


# -- the units and the cron line run what they say ------------------------------------------------------------

def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def _ours(command: str) -> list[str]:
    """The unit's command with the installation's paths replaced by this checkout's."""
    import sys

    args = shlex.split(command)
    args[0] = str(Path(sys.executable).parent / Path(args[0]).name)
    return args


def test_the_units_commands_run_as_written(gunicorn, tmp_path):
    app_unit, watcher = unit("miniapp-pay.service"), unit("miniapp-pay-reconcile.service")
    assert app_unit["Service"]["ExecStart"].endswith("gunicorn -c gunicorn.conf.py wsgi:app")
    assert "flask db upgrade" in app_unit["Service"]["ExecStartPre"]
    server = gunicorn()  # gunicorn -c gunicorn.conf.py ... wsgi:app, as the unit runs it
    args = _ours(watcher["Service"]["ExecStart"])
    assert args[1:5] == ["orders", "reconcile", "--watch", "--interval"] and "--json" in args
    done = subprocess.run(args + ["--iterations", "1"], capture_output=True, text=True, cwd=ROOT,
                          env={**server.env}, timeout=60)
    assert done.returncode == 0, done.stderr
    first_pass = json.loads(done.stdout.splitlines()[0])
    assert first_pass["errors"] == 0 and "checked" in first_pass and first_pass["run_id"]
    cron = [line for line in (DEPLOY / "cron" / "miniapp-pay").read_text().splitlines()
            if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(cron) == 1
    command = cron[0].split(".venv/bin/flask ", 1)[1].split(">>")[0]
    done = subprocess.run(_ours("flask " + command), capture_output=True, text=True, cwd=ROOT, env={**server.env},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["errors"] == 0
