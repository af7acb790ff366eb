"""Schemathesis over every operation of /api/openapi.json, against a live instance (`make fuzz`; CI runs it).

Starts gunicorn (two workers, sandbox mode, a throwaway SQLite database and embedded store unless
DATABASE_URL / REDIS_URL say otherwise), logs in through the sandbox's wx.login, creates one order (so that
some generated calls find something), runs schemathesis with a bounded number of examples and a time
budget, stops the server and exits with schemathesis's code. No 500s, no answer that breaks the schema,
no hang (a request timeout and a per-response time limit).

    .venv/bin/python tests/fuzz/run_schemathesis.py [--max-examples 20] [--max-time 120] [-- extra st args]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# The checkout page's operations get a real order and its signed link, so that they reach their logic.
CONFIG = """
# Every check (the default), but: valid data need not succeed (a generated out_trade_no is nobody's order,
# 404; a generated notification is rightly refused).
[checks.positive_data_acceptance]
enabled = false

[checks.negative_data_rejection]
# 413 (body over the limit) and 414 (request line over gunicorn's limit) reject invalid data too.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429"]

[[operations]]
include-path-regex = "^/api/pay/"
# WeChat Pay v2 answers every notification with HTTP 200 and return_code FAIL in its XML, as WeChat reads it.
checks.negative_data_rejection.enabled = false

[[operations]]
include-path-regex = "^/pay/native/"
parameters = {{ out_trade_no = "{out_trade_no}", sig = "{sig}" }}
"""


def login(base: str, code: str) -> str:
    return requests.post(base + "/api/auth/login", json={"code": code}, timeout=10).json()["token"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--max-time", type=int, default=150, help="seconds for the whole run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("extra", nargs="*", help="more schemathesis arguments (after --)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="miniapp-fuzz-"))
    env = {**os.environ, "FLASK_APP": "wsgi:app", "APP_ENV": "development", "SECRET_KEY": "fuzz-secret",
           "EMBEDDED_STORE_PATH": str(work / "store.sqlite3"), "SANDBOX_V3_KEY_DIR": str(work / "v3"),
           "SANDBOX_TIME_SCALE": "0.001", "LOGIN_RATE_LIMIT": "100000", "PYTHONUNBUFFERED": "1",
           "STORE_PREFIX": f"fuzz:{os.getpid()}:"}
    env.setdefault("DATABASE_URL", f"sqlite:///{work / 'fuzz.sqlite3'}")
    for step in (["db", "upgrade"], ["products", "demo"]):
        done = subprocess.run([str(BIN / "flask"), *step], cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            print(f"flask {' '.join(step)} failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return 2
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(work / "gunicorn.log", "w")
    server = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                               "--workers", str(args.workers), "--access-logfile", "-", "wsgi:app"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print((work / "gunicorn.log").read_text(), file=sys.stderr)
                return 2
            time.sleep(0.2)
        token = login(base, "schemathesis")
        auth = {"Authorization": f"Bearer {token}"}
        order = requests.post(base + "/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]}, timeout=10,
                              headers=auth).json()
        native = requests.post(f"{base}/api/orders/{order['out_trade_no']}/native", headers=auth, timeout=10).json()
        sig = parse_qs(urlsplit(native["checkout_url"]).query)["sig"][0]
        config = work / "schemathesis.toml"
        config.write_text(CONFIG.format(out_trade_no=order["out_trade_no"], sig=sig))
        common = [
            str(BIN / "schemathesis"), "--config-file", str(config), "run", base + "/api/openapi.json", "--url", base,
            "--request-timeout", "10", "--max-response-time", "5",
            # One worker: CPython 3.11's AST constructor is not thread-safe, and schemathesis compiles code as it
            # generates ("SystemError: AST constructor recursion depth mismatch" with two).
            "--workers", "1",
            "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all", "--no-shrink",
            *(["--seed", str(args.seed)] if args.seed is not None else []),
        ]
        started = time.monotonic()
        # Everything but logout (which would end the session every other call runs in), then logout on its own.
        code = subprocess.run([*common, "-H", f"Authorization: Bearer {token}", "--exclude-operation-id", "logout",
                               "--max-examples", str(args.max_examples), "--max-time", str(args.max_time),
                               *args.extra], cwd=ROOT, env=env).returncode
        code = code or subprocess.run([*common, "-H", f"Authorization: Bearer {login(base, 'schemathesis-out')}",
                                       "--include-operation-id", "logout", "--max-examples", "10", "--max-time", "30",
                                       *args.extra], cwd=ROOT, env=env).returncode
        print(f"schemathesis: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            print(f"server log: {work / 'gunicorn.log'}", file=sys.stderr)
        return code
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
