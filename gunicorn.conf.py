"""gunicorn settings: `gunicorn wsgi:app` reads this file.

gthread workers: each request spends most of its time waiting on WeChat or the
database, so a few threads per process keep the CPU busy without gevent's
monkey-patching. Two processes per core-pair is the usual start; tune with
WEB_CONCURRENCY and GUNICORN_THREADS.
"""

import multiprocessing
import os
import shutil
import tempfile

# Metrics from every worker (prometheus_client's multiprocess mode): each worker writes its samples into this
# directory and /metrics adds them up. It must be set before any worker imports prometheus_client, so here.
# Set PROMETHEUS_MULTIPROC_DIR yourself (an empty directory) to share it with `flask orders reconcile` runs;
# otherwise each server start gets a fresh one, removed when the server stops.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="miniapp-metrics-")

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", min(multiprocessing.cpu_count(), 4)))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", 4))
timeout = 30  # a WeChat call times out long before this (read timeout 10 s)
graceful_timeout = 20
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 0))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
access_log_format = '%(h)s %(p)s "%(r)s" %(s)s %(b)s %(L)ss rid=%({x-request-id}o)s'
# The access log never holds a link's signature or a secret from a query string (sig=, signature=, ...).
logger_class = "miniapp_server.gunicorn_logging.RedactingLogger"
control_socket_disable = True  # several servers on one machine (tests, benchmarks) would share its path
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_worker_init(worker):
    """Ask WeChat once per start whether the mini-program is trade-managed, and log it (in the background:
    a WeChat that cannot be reached never delays or fails the start; one worker asks for all)."""
    from miniapp_server.services.trade_management import check_at_start

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "app_context"):
        check_at_start(app)


def on_starting(server):
    # Samples of an earlier run's processes (whose pids may come again) must not count as this run's.
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    # A dead worker's counters stay (they are history); its live gauges go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
