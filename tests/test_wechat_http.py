"""miniapp_server/wechat/http.py: the pooled session every WeChat client uses, against a real local server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from miniapp_server.wechat.http import make_session


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as WeChat's servers
    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        seen = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                           "headers": {k.lower(): v for k, v in self.headers.items()},
                           "port": self.client_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "tracker=1; Path=/")
        self.send_header("Content-Length", str(len(seen)))
        self.end_headers()
        self.wfile.write(seen)

    do_GET = do_POST = _answer


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_call_carries_its_query_body_and_headers_and_the_sessions(server, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    session = make_session()
    assert session.trust_env is False  # no proxy configured: the direct path
    got = session.post(server + "/pay/unifiedorder", params={"access_token": "T", "n": "1"}, data=b"<xml/>",
                       headers={"Content-Type": "text/xml"}).json()
    assert got["method"] == "POST" and got["path"] == "/pay/unifiedorder?access_token=T&n=1"
    assert got["body"] == "<xml/>" and got["headers"]["content-type"] == "text/xml"
    assert got["headers"]["user-agent"] == "miniapp-pay/1.0" and got["headers"]["content-length"] == "6"
    sent_json = session.post(server + "/x", json={"a": "中"}).json()
    assert json.loads(sent_json["body"]) == {"a": "中"} and sent_json["headers"]["content-type"] == "application/json"
    # The pooled connection is kept alive and used again.
    assert session.get(server + "/a").json()["port"] == session.get(server + "/b").json()["port"]
    # WeChat sets no cookies we keep; a redirect is answered as it is, never followed.
    assert not session.cookies
    redirected = session.get(server + "/redirect")
    assert redirected.status_code == 302 and redirected.history == []


def test_a_header_given_as_none_removes_the_sessions_own(server):
    session = make_session()
    got = session.get(server + "/", headers={"User-Agent": None}).json()["headers"]
    assert got.get("user-agent", "") != "miniapp-pay/1.0"


def test_every_call_has_a_timeout(monkeypatch):
    seen = {}

    def send(self, request, **kwargs):
        seen.update(kwargs)
        raise requests.ConnectionError("stop here")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    session = make_session(connect_timeout=1.5, read_timeout=7)
    with pytest.raises(requests.ConnectionError):
        session.get("http://127.0.0.1:9/")
    assert seen["timeout"] == (1.5, 7)


def test_a_configured_proxy_keeps_requests_own_handling(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    session = make_session()
    assert session.trust_env is True  # NO_PROXY and the rest stay requests' business


def test_a_client_certificate_reaches_the_adapter(monkeypatch):
    """v2's refund (secapi) presents the merchant's certificate: given per call, or the session's own."""
    seen = []

    def send(self, request, **kwargs):
        seen.append(kwargs["cert"])
        raise requests.ConnectionError("stop here")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    session = make_session()
    for cert in (("/etc/cert.pem", "/etc/key.pem"), None):
        with pytest.raises(requests.ConnectionError):
            session.post("https://127.0.0.1:9/secapi/pay/refund", data=b"<xml/>", cert=cert)
    session.cert = "/etc/both.pem"
    with pytest.raises(requests.ConnectionError):
        session.post("https://127.0.0.1:9/secapi/pay/refund", data=b"<xml/>")
    assert seen == [("/etc/cert.pem", "/etc/key.pem"), None, "/etc/both.pem"]
