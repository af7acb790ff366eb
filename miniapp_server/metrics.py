"""Prometheus metrics, correct under several gunicorn workers (prometheus_client's multiprocess mode).

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it to a fresh directory and cleans up after dead
workers in child_exit), every worker writes its samples to files there and /metrics adds them up. Without it
(flask run, tests) the process's own registry is read.

What is counted, and where: requests by URL rule and status with latency (before/after_request here, a dict
lookup and a perf_counter each); calls to WeChat by endpoint and outcome with latency, and access-token
fetches (the audit hook `audit.outgoing`, which sees every exchange); notifications by verdict
(`audit.incoming`); reconcile's outcomes (services/reconcile.py); store and database errors (errors.py).
Backlogs are read from the database when /metrics is scraped (see `BacklogCollector`), never per request.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from typing import Iterable

from flask import Flask, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

REQUESTS = Counter("miniapp_http_requests_total", "HTTP requests answered, by URL rule, method and status",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("miniapp_http_request_duration_seconds", "Time to answer, by URL rule and method",
                            ["route", "method"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
WECHAT_CALLS = Counter("miniapp_wechat_calls_total", "Calls to WeChat's APIs, by endpoint and outcome",
                       ["endpoint", "outcome"])
WECHAT_SECONDS = Histogram("miniapp_wechat_call_duration_seconds", "Time WeChat took to answer, by endpoint",
                           ["endpoint"], buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15))
TOKEN_FETCHES = Counter("miniapp_access_token_fetches_total", "access_token fetches from WeChat (refreshes)",
                        ["endpoint", "outcome"])
NOTIFICATIONS = Counter("miniapp_notifications_total", "Notifications from WeChat Pay, by kind and verdict",
                        ["kind", "verdict", "acknowledged"])
RECONCILE = Counter("miniapp_reconcile_outcomes_total", "What `flask orders reconcile` did, by item kind and outcome",
                    ["kind", "outcome"])
ERRORS = Counter("miniapp_errors_total", "Store and database errors met while answering", ["component"])

TOKEN_PATHS = ("/cgi-bin/token", "/cgi-bin/stable_token")
# A path segment that carries an id (an out_trade_no, a transaction id, ...): one label, not one per order.
_ID_SEGMENT = re.compile(r"/(?=(?:[^/\d]*\d){4})[^/]{10,}")  # 10+ characters, 4+ of them digits
_STARTED = "miniapp.metrics_started"
_request_children: dict[tuple[str, str, int], tuple] = {}  # bounded: URL rules x methods x statuses
_VERDICT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def endpoint(path: str) -> str:
    return _ID_SEGMENT.sub("/{id}", path.split("?", 1)[0])[:80]


def wechat_exchange(path: str, outcome: str, seconds: float) -> None:
    """Called by the audit hook for every call to WeChat. Never raises."""
    try:
        name = endpoint(path)
        kind = "ok" if outcome == "ok" else (outcome.split(":", 1)[0] or "error")[:40]
        WECHAT_CALLS.labels(name, kind).inc()
        WECHAT_SECONDS.labels(name).observe(seconds)
        if name.endswith(TOKEN_PATHS):
            TOKEN_FETCHES.labels(name.rsplit("/", 1)[-1], kind).inc()
    except Exception:  # noqa: BLE001 - metrics never break a payment
        log.debug("metrics: wechat exchange not counted", exc_info=True)


def notification(path: str, acknowledged: bool, verdict: str) -> None:
    kind = "refund" if "refund" in path else "payment"
    # Verdicts are snake_case words (paid, duplicate, amount_mismatch, ...); free-text reasons are one label.
    NOTIFICATIONS.labels(kind, verdict if _VERDICT.match(verdict or "") else "rejected",
                         "true" if acknowledged else "false").inc()


def error(component: str) -> None:
    ERRORS.labels(component).inc()


# -- the app side ----------------------------------------------------------------------------------------

def init_app(app: Flask) -> None:
    networks = _networks(app.config.get("METRICS_ALLOW", ""))

    # The start time rides on the WSGI environ, not on `g`: the in-app sandbox's requests run inside the
    # request that calls WeChat, in the same app context.
    @app.before_request
    def _start_timer() -> None:
        request.environ[_STARTED] = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        started = request.environ.pop(_STARTED, None)
        if started is not None:
            rule = request.url_rule
            key = (rule.rule if rule is not None else "unmatched", request.method, response.status_code)
            children = _request_children.get(key)
            if children is None:  # labels() takes a lock and builds a key each time: once per series instead
                children = _request_children.setdefault(key, (REQUESTS.labels(key[0], key[1], str(key[2])),
                                                              REQUEST_SECONDS.labels(key[0], key[1])))
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics():
        if not _allowed(request.remote_addr, networks):
            abort(404)  # as if there were nothing here
        return Response(scrape(), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Cache-Control": "no-store"})


def _networks(setting: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for part in (p.strip() for p in setting.split(",")):
        if part:
            out.append(ipaddress.ip_network(part, strict=False))
    return out


def _allowed(addr: str | None, networks) -> bool:
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return False
    return any(ip in net for net in networks)


def scrape() -> bytes:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = CollectorRegistry()
        registry.register(_Process())
    registry.register(BacklogCollector(current_app._get_current_object()))  # type: ignore[attr-defined]
    return generate_latest(registry)


class _Process(Collector):
    """This process's own metrics (single-process mode)."""

    def collect(self) -> Iterable:
        return REGISTRY.collect()


class BacklogCollector(Collector):
    """What is waiting to reach WeChat or to be settled, counted in the database at scrape time."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterable:
        from .services import backlog

        family = GaugeMetricFamily("miniapp_backlog", "Items waiting: reconcile's and the outboxes' queues",
                                   labels=["queue"])
        try:
            for queue, count in backlog.counts().items():
                family.add_metric([queue], count)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
            log.warning("metrics: backlog not counted (%s)", type(exc).__name__)
            error("database")
        yield family
