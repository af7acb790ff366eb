"""Every request's body read whole, bounded and within a deadline, before the app sees it.

WSGI middleware, so that one rule holds whatever the body's encoding and whichever view reads it:

- size: at most `max_length` bytes are read. A chunked body (no Content-Length) is read up to
  `max_length + 1` bytes and handed on with that Content-Length, so that Flask's own
  MAX_CONTENT_LENGTH check answers 413 exactly as it does for a declared length (werkzeug's
  chunked path silently truncates at the limit instead). A declared length past the limit is not
  read at all: Flask refuses it unread.
- time: under gunicorn (the only server that hands us its socket) the whole body must arrive
  within `timeout` seconds. gthread blocks a worker thread in the body read with no deadline, so
  sixteen clients that announce 1000 bytes and stall hang every thread. A per-recv socket timeout
  is not enough (a client trickling one byte a second never trips it), so one watchdog thread per
  process shuts the socket's read side at the deadline, which wakes the blocked recv at once.
  The request then carries `INCOMPLETE`, and the app answers 408 (400 for a body cut short) in the
  route's own format.

Behind nginx with request buffering (deploy/nginx) bodies arrive whole and at once; this is the
guard for gunicorn reached directly, and costs one dict lookup for a request without a body.
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
import socket
import threading
import time
from typing import Any, Callable, Iterable

INCOMPLETE = "miniapp.body_incomplete"  # "timeout" (past the deadline) or "broken" (the client went away)
_CHUNK = 64 * 1024


class _Watchdog:
    """Shuts a socket's read side at its deadline unless cancelled first: one thread for all requests."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._active: dict[int, socket.socket] = {}
        self._ids = itertools.count()
        self._pid: int | None = None
        # When the watchdog wakes by itself. A new deadline (now + the timeout) is almost never earlier, so
        # it is woken only when it is not sleeping at all: waking it on every request (a notify, a thread
        # switch, the lock passed around) was 6% of a notification's CPU under gunicorn.
        self._wakes_at = float("inf")

    def watch(self, deadline: float, sock: socket.socket) -> int:
        with self._cond:
            if self._pid != os.getpid():  # first use in this (forked) worker: its own thread
                self._pid, self._heap, self._active, self._wakes_at = os.getpid(), [], {}, float("inf")
                threading.Thread(target=self._run, name="body-deadline", daemon=True).start()
            token = next(self._ids)
            self._active[token] = sock
            heapq.heappush(self._heap, (deadline, token))
            if deadline < self._wakes_at:
                self._cond.notify()
            return token

    def cancel(self, token: int) -> bool:
        """False if the deadline had passed already (the socket was shut)."""
        with self._cond:  # under the lock: once this returns, the watchdog can no longer touch the socket
            return self._active.pop(token, None) is not None

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._active:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._wakes_at = float("inf")
                    self._cond.wait()
                    continue
                deadline, token = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._wakes_at = deadline
                    self._cond.wait(left)
                    self._wakes_at = 0.0  # awake: every watch may notify until it sleeps again
                    continue
                heapq.heappop(self._heap)
                sock = self._active.pop(token)
                try:
                    sock.shutdown(socket.SHUT_RD)  # the blocked recv returns b"" now
                except OSError:
                    pass


_watchdog = _Watchdog()


class BufferedBody:
    def __init__(self, app: Callable, max_length: int, timeout: float) -> None:
        self.app, self.max_length, self.timeout = app, max_length, timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        try:
            declared = int(environ.get("CONTENT_LENGTH") or 0) if not chunked else None
        except ValueError:
            declared = 0  # werkzeug treats it as no body
        if chunked and environ.get("wsgi.input_terminated"):
            self._buffer(environ, self.max_length + 1, exact=False)
        elif declared and declared <= self.max_length:
            self._buffer(environ, declared, exact=True)
        return self.app(environ, start_response)

    def _buffer(self, environ: dict[str, Any], most: int, exact: bool) -> None:
        stream = environ["wsgi.input"]
        sock = environ.get("gunicorn.socket")
        token = _watchdog.watch(time.monotonic() + self.timeout, sock) if sock is not None else None
        parts, size, broken = [], 0, False
        try:
            while size < most:
                part = stream.read(min(_CHUNK, most - size))
                if not part:
                    break
                parts.append(part)
                size += len(part)
        except Exception:  # noqa: BLE001 - gone, shut by the watchdog, or a malformed chunk (gunicorn's errors)
            broken = True
        finally:
            in_time = _watchdog.cancel(token) if token is not None else True
        if not in_time:
            environ[INCOMPLETE] = "timeout"
        elif broken or (exact and size < most):  # fewer bytes than announced
            environ[INCOMPLETE] = "broken"
        environ["wsgi.input"] = io.BytesIO(b"".join(parts))
        environ["CONTENT_LENGTH"] = str(size)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ.pop("wsgi.input_terminated", None)
