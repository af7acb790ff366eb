"""Slow clients against gunicorn reached directly (issue 14, finding 9): bodies that stall or trickle hold a
worker thread for BODY_READ_TIMEOUT at most (miniapp_server/body_buffer.py), so the server keeps answering;
and a chunked body past the limit is refused after reading no more than the limit."""

from __future__ import annotations

import socket
import time

import requests

BODY_TIMEOUT = 0.5


def stalled_client(url: str, path: str = "/api/auth/login", declared: int = 1000) -> socket.socket:
    """Announce `declared` bytes, send ten, then say nothing more."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {declared}\r\n\r\n{{\"code\": \"".encode())
    return sock


def answer_of(sock: socket.socket, data: bytes = b"") -> bytes:
    """The whole answer (head and a Content-Length body) read from `sock`."""
    sock.settimeout(10)
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return head + b"\r\n\r\n" + body


def test_stalled_and_trickling_bodies_do_not_hang_the_server_and_chunked_is_bounded(gunicorn):
    server = gunicorn("--workers", "1", "--threads", "4", extra_env={"BODY_READ_TIMEOUT": str(BODY_TIMEOUT)})
    sixteen_stalled_bodies_do_not_hang_the_server(server)
    a_trickling_body_is_cut_at_the_deadline(server)
    a_chunked_body_past_the_limit_is_refused_having_read_no_more_than_the_limit(server)
    the_access_log_holds_no_link_signature(server)


def the_access_log_holds_no_link_signature(server):
    """Finding 13: the checkout link's sig (a capability for a day) was written into the access log."""
    secret = "eyJTHISISTHESIGNATURE.abc123"
    requests.get(server.url + f"/pay/native/20261201000000000000000000000001?sig={secret}&v=7", timeout=10)
    requests.get(server.url + f"/healthz?signature={secret}&echostr={secret}", timeout=10)
    deadline = time.monotonic() + 10  # the access-log line is written just after the answer
    while server.log().count("[redacted]") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log()
    assert "/pay/native/20261201000000000000000000000001?sig=[redacted]&v=7" in log
    assert secret not in log


def sixteen_stalled_bodies_do_not_hang_the_server(server):
    stalled = [stalled_client(server.url) for _ in range(16)]
    try:
        started = time.monotonic()
        resp = requests.get(server.url + "/healthz", timeout=15)
        waited = time.monotonic() - started
        assert resp.status_code == 200
        # 16 stalled bodies on 4 threads: four rounds of BODY_READ_TIMEOUT at worst, never a hang
        assert waited < 16 / 4 * BODY_TIMEOUT + 2.5, waited
        for sock in stalled:
            answer = answer_of(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert b'"code":"request_timeout"' in answer.replace(b" ", b""), answer
    finally:
        for sock in stalled:
            sock.close()


def a_trickling_body_is_cut_at_the_deadline(server):
    """One byte at a time, never pausing long enough to trip a per-read timeout: the deadline is for the whole."""
    sock = stalled_client(server.url, declared=100)
    started = time.monotonic()
    sock.settimeout(0.1)
    head = b""
    try:
        while time.monotonic() - started < 10 and not head:
            try:
                sock.sendall(b" ")
            except OSError:
                break
            try:
                head = sock.recv(65536)
            except socket.timeout:
                pass
        assert head.startswith(b"HTTP/1.1 408"), head[:80]
        assert time.monotonic() - started < BODY_TIMEOUT + 2
    finally:
        sock.close()


def a_chunked_body_past_the_limit_is_refused_having_read_no_more_than_the_limit(server):
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent, head = 0, b""
    sock.settimeout(0.01)
    try:
        while sent < 200 * 1024 * 1024 and not head:
            try:
                sock.sendall(chunk)
                sent += 65536
            except OSError:
                break  # the server closed the connection on us: it read no more
            try:
                head = sock.recv(65536)
            except socket.timeout:
                pass
        head = answer_of(sock, head)
    finally:
        sock.close()
    assert head.startswith(b"HTTP/1.1 413"), head[:80]
    assert b'"code":"body_too_large"' in head.replace(b" ", b""), head
    assert sent < 8 * 1024 * 1024, sent  # refused after about the limit (1 MB), not 200 MB
