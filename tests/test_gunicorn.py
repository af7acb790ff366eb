"""Real worker processes: sessions shared between gunicorn workers, and notifications applied once
when WeChat's copies land on several workers at the same moment."""

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from miniapp_server.config import SANDBOX_APPID, SANDBOX_MCH_ID, SANDBOX_PAY_KEY
from miniapp_server.wechat.pay import signing, xmlcodec
from miniapp_server.wechat.pay.client import ACK_SUCCESS

ROOT = Path(__file__).resolve().parents[1]


def served_by(server, path_fragment: str) -> list[str]:
    """The worker pids that served requests whose line holds `path_fragment`, from gunicorn's access log."""
    return [m.group(1) for m in re.finditer(r"^<(\d+)> \"[A-Z]+ ([^ ]+)", server.log(), re.M)
            if path_fragment in m.group(2)]


def test_a_token_from_one_worker_works_on_another(gunicorn):
    # Each sync worker exits after one request, so every request below is served by a different process.
    server = gunicorn("--workers", "2", "--threads", "1", "--worker-class", "sync", "--max-requests", "1",
                      "--access-logformat", '%(p)s "%(r)s" %(s)s')
    http = requests.Session()
    http.headers["Connection"] = "close"
    token = http.post(server.url + "/api/auth/login", json={"code": "multi-worker"}, timeout=10).json()["token"]
    for _ in range(3):
        resp = http.post(server.url + "/api/auth/check", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert resp.status_code == 200, resp.text
    assert http.post(server.url + "/api/auth/logout", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 204
    resp = http.post(server.url + "/api/auth/check", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == 401  # revoked for every worker at once
    deadline = time.monotonic() + 10  # a worker writes its access-log line just after answering
    while len(served_by(server, "/api/auth/check")) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    login_pid = served_by(server, "/api/auth/login")[0]
    check_pids = served_by(server, "/api/auth/check")
    assert len(check_pids) == 4 and all(pid != login_pid for pid in check_pids)


def test_twenty_concurrent_copies_on_two_workers_make_one_transition(gunicorn):
    server = gunicorn("--workers", "2", "--threads", "8")
    http = requests.Session()
    token = http.post(server.url + "/api/auth/login", json={"code": "buyer"}, timeout=10).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    order = http.post(server.url + "/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]}, headers=auth,
                      timeout=10).json()
    fields = {"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": SANDBOX_APPID, "mch_id": SANDBOX_MCH_ID,
              "nonce_str": signing.nonce(), "openid": "o-buyer", "trade_type": "JSAPI", "total_fee": str(order["total_fee"]),
              "transaction_id": "4200000099202611240000000001", "out_trade_no": order["out_trade_no"],
              "time_end": "20261124120000", "cash_fee": str(order["total_fee"]), "fee_type": "CNY", "bank_type": "OTHERS"}
    fields["sign"] = signing.sign(fields, SANDBOX_PAY_KEY)
    body = xmlcodec.dumps(fields)
    start = threading.Barrier(20)
    answers: list[bytes] = []

    def send():
        with requests.Session() as s:  # its own connection, so the copies spread over both workers
            start.wait()
            answers.append(s.post(server.url + "/api/pay/notify", data=body, timeout=30).content)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [ACK_SUCCESS] * 20
    now = http.get(server.url + f"/api/orders/{order['out_trade_no']}", headers=auth, timeout=10).json()
    assert now["status"] == "paid" and now["transaction_id"] == fields["transaction_id"]
    shown = subprocess.run([sys.executable, "-m", "flask", "orders", "show", order["out_trade_no"], "--json"],
                           capture_output=True, text=True, cwd=ROOT, env=server.env, check=True)
    import json
    data = json.loads(shown.stdout)
    verdicts = [n["verdict"] for n in data["notifications"]]
    assert verdicts.count("paid") == 1 and verdicts.count("duplicate") == 19
    assert len(data["payments"]) == 1


def test_the_sandbox_journey_and_demo_command_against_a_real_server(gunicorn):
    server = gunicorn("--workers", "2", "--threads", "2")
    result = subprocess.run([sys.executable, "-m", "flask", "sandbox", "demo", "--url", server.url],
                            capture_output=True, text=True, cwd=ROOT, env=server.env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "journey complete" in result.stdout
    no = re.search(r"order (\w{32}) is paid", result.stdout).group(1)
    notes = requests.get(server.url + "/sandbox/control/notifications", params={"out_trade_no": no}, timeout=10).json()
    assert notes["items"][0]["acknowledged"] is True and notes["items"][0]["attempt"] == 1
    assert f"order {no} is shipped: SF SF" in result.stdout  # the journey goes on: shipped, uploaded to WeChat
    uploads = requests.get(server.url + "/sandbox/control/shipping", params={"out_trade_no": no}, timeout=10).json()
    assert [u["verdict"] for u in uploads["items"]] == ["ok"]
    # ... and completed: the buyer confirmed receipt, WeChat's push said so (encrypted: safe mode by default).
    assert f"order {no} is completed" in result.stdout
    state = requests.get(server.url + "/sandbox/control/shipping", params={"out_trade_no": no}, timeout=10).json()
    assert state["order_state"] == 3
    pushes = [n for n in notes_now(server, no) if n["kind"].startswith("push:")]
    assert pushes and pushes[-1]["acknowledged"] and pushes[-1]["status"] == 200


def notes_now(server, no: str) -> list[dict]:
    return requests.get(server.url + "/sandbox/control/notifications", params={"out_trade_no": no},
                        timeout=10).json()["items"]


def test_demo_command_fails_clearly_without_a_server(runner):
    result = runner.invoke(args=["sandbox", "demo", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "make run" in result.output
