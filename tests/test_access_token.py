"""The shared access_token: one fetch for many askers, early refresh, one refetch when WeChat refuses it;
and the sandbox's token calls (cgi-bin/token, cgi-bin/stable_token, getuserphonenumber) as WeChat answers them.

Fetches are counted by the sandbox itself (`/sandbox/control/calls`), so what is counted is what
WeChat's daily quota would count. The suite runs on the embedded store and on Redis (CI runs both).
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from miniapp_server import ConfigError
from miniapp_server.extensions import store, wechat
from miniapp_server.wechat.errors import InvalidCredential, WeChatUnavailable
from miniapp_server.wechat.miniapp import AccessToken
from miniapp_server.wechat.token import AccessTokenManager

from .conftest import bearer, login

ENDPOINTS = ["stable_token", "token"]


def calls(client) -> dict[str, int]:
    return client.get("/sandbox/control/calls").get_json()


def fetches(client, endpoint: str = "stable_token") -> int:
    return calls(client)[endpoint]


def slow_fetch(manager: AccessTokenManager, seconds: float = 0.2) -> list[bool]:
    """Make WeChat slow to answer, so that every asker arrives while the first fetch is under way."""
    real, forced = manager._fetch, []

    def fetch(force_refresh: bool) -> AccessToken:
        forced.append(force_refresh)
        time.sleep(seconds)
        return real(force_refresh)

    manager._fetch = fetch
    return forced


def run_threads(n: int, target) -> list:
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


# -- the cache ------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_one_token_is_fetched_once_and_reused(make_app, endpoint):
    app = make_app(WECHAT_TOKEN_ENDPOINT=endpoint)
    client = app.test_client()
    with app.app_context():
        first = wechat.access_token.get()
        assert wechat.access_token.get() == first and len(first) >= 64
        assert fetches(client, endpoint) == 1
        other = ({"stable_token", "token"} - {endpoint}).pop()
        assert fetches(client, other) == 0  # only the configured call is used


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_hundred_concurrent_askers_cause_one_fetch(make_app, endpoint):
    app = make_app(WECHAT_TOKEN_ENDPOINT=endpoint)
    with app.app_context():
        manager = wechat.access_token
        slow_fetch(manager)
        tokens = run_threads(100, lambda i: manager.get())
        assert len(set(tokens)) == 1 and tokens[0]
        assert fetches(app.test_client(), endpoint) == 1


def test_two_apps_on_one_store_share_one_token(make_app):
    # Two app objects stand in for two worker processes: same store, same cached token.
    one, two = make_app(), make_app()
    with one.app_context():
        token = wechat.access_token.get()
    with two.app_context():
        assert wechat.access_token.get() == token
    assert fetches(one.test_client()) == 1


def test_workers_of_a_real_server_share_one_fetch(gunicorn):
    # Separate processes (gunicorn workers), each with its own memory: only the store is shared.
    server = gunicorn("--workers", "3", "--threads", "4")
    http = requests.Session()
    token = http.post(server.url + "/api/auth/login", json={"code": "phone-owner"}, timeout=10).json()["token"]

    def bind(i: int) -> int:
        resp = requests.post(server.url + "/api/user/phone", json={"code": f"tel:1390000{i:04d}"},
                             headers=bearer(token), timeout=30)
        return resp.status_code

    assert run_threads(24, bind) == [200] * 24
    counted = http.get(server.url + "/sandbox/control/calls", timeout=10).json()
    assert counted["stable_token"] == 1, server.log()
    assert counted["getuserphonenumber"] == 24


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_token_is_refreshed_before_it_expires(make_app, endpoint):
    app = make_app(WECHAT_TOKEN_ENDPOINT=endpoint)
    client = app.test_client()
    with app.app_context():
        now = [time.time()]
        real = wechat.access_token
        manager = AccessTokenManager(store.backend, wechat.miniapp.fetch_access_token, wechat.miniapp.appid,
                                     clock=lambda: now[0])
        first = manager.get()
        now[0] += 7200 - 300 - 5  # five seconds before the refresh point: still the cached token
        assert manager.get() == first and fetches(client, endpoint) == 1
        now[0] += 10  # inside the last five minutes of WeChat's two hours: fetch anew
        second = manager.get()
        assert fetches(client, endpoint) == 2
        assert real.cached() == second  # stored where every worker finds it
        if endpoint == "token":
            assert second != first  # the classic call issues a new token every time


def test_the_store_forgets_the_token_before_wechat_does(app):
    wechat.access_token.get()
    ttl = store.ttl(wechat.access_token.key)
    assert ttl is not None and 7200 - 300 - 60 < ttl <= 7200 - 300


def test_a_short_lived_token_is_kept_for_half_its_life_not_refetched_at_once(app):
    # stable_token may hand out a token with only minutes left; refreshing 5 minutes early would mean
    # refetching on every call.
    now, fetched = [1000.0], []

    def fetch(force_refresh: bool) -> AccessToken:
        fetched.append(force_refresh)
        return AccessToken(f"t{len(fetched)}", 300)

    manager = AccessTokenManager(store.backend, fetch, "wxshort", clock=lambda: now[0])
    assert manager.get() == "t1" and manager.get() == "t1"
    now[0] += 149
    assert manager.get() == "t1"
    now[0] += 2
    assert manager.get() == "t2" and fetched == [False, False]


def test_a_failed_fetch_releases_the_lock_and_the_next_asker_fetches(app):
    answers = [WeChatUnavailable("no answer from WeChat"), AccessToken("good", 7200)]

    def fetch(force_refresh: bool) -> AccessToken:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    manager = AccessTokenManager(store.backend, fetch, "wxflaky")
    with pytest.raises(WeChatUnavailable):
        manager.get()
    assert manager.get() == "good" and answers == []


def test_an_unreadable_cache_entry_is_replaced(app):
    manager = AccessTokenManager(store.backend, lambda force: AccessToken("fresh", 7200), "wxjunk")
    store.set(manager.key, "not json", ttl=60)
    assert manager.get() == "fresh"


# -- WeChat refuses the token ---------------------------------------------------------------------

@pytest.mark.parametrize("reason, errcode", [("revoked", 40001), ("expired", 42001)])
def test_a_refused_token_is_refreshed_once_and_the_call_retried_once(app, client, reason, errcode):
    manager = wechat.access_token
    stale = manager.get()
    resp = client.post("/sandbox/control/revoke-token", json={"reason": reason})
    assert resp.get_json() == {"revoked": 1, "errcode": errcode}
    seen = []

    def get_phone(token: str) -> dict:
        seen.append(token)
        return wechat.miniapp.get_phone_number(token, "tel:13800138000")

    info = manager.call(get_phone)
    assert info["purePhoneNumber"] == "13800138000"
    assert seen[0] == stale and seen[1] != stale and len(seen) == 2
    assert fetches(client) == 2  # the first fetch, and exactly one refetch
    assert manager.get() == seen[1]


def test_many_callers_refused_at_once_cause_one_refetch(app, client):
    manager = wechat.access_token
    stale = manager.get()
    client.post("/sandbox/control/revoke-token", json={})
    forced = slow_fetch(manager)
    before = calls(client)
    all_hold_the_stale_token = threading.Barrier(30)
    miniapp = wechat.miniapp  # the threads have no app context: take the client with them

    def bind(i: int) -> dict:
        attempts = []

        def get_phone(token: str) -> dict:
            attempts.append(token)
            if len(attempts) == 1:
                all_hold_the_stale_token.wait()  # nobody refreshes before everybody was refused
            return miniapp.get_phone_number(token, f"tel:1380000{i:04d}")

        return manager.call(get_phone)

    infos = run_threads(30, bind)
    assert sorted(info["purePhoneNumber"] for info in infos) == [f"1380000{i:04d}" for i in range(30)]
    after = calls(client)
    assert after["stable_token"] - before["stable_token"] == 1 and forced == [False]
    assert after["getuserphonenumber"] - before["getuserphonenumber"] == 60  # each: refused once, then good
    assert manager.get() != stale


@pytest.mark.parametrize("endpoint, refetches", [
    ("token", 1),
    # WeChat still holds the token current, so stable_token's normal mode hands it back; then one forced call.
    ("stable_token", 2),
])
def test_refused_again_after_the_refresh_gives_up(make_app, endpoint, refetches):
    app = make_app(WECHAT_TOKEN_ENDPOINT=endpoint)
    attempts = []

    def always_refused(token: str):
        attempts.append(token)
        raise InvalidCredential("invalid credential", 40001)

    with app.app_context(), pytest.raises(InvalidCredential):
        wechat.access_token.call(always_refused)
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # one retry with a new token: no loop
    assert fetches(app.test_client(), endpoint) == 1 + refetches


def test_stable_token_handing_back_the_refused_token_forces_a_new_one(app):
    # stable_token's normal mode answers the current token; if that is the very token WeChat just
    # refused, only force_refresh (rationed to 20 a day) gets a new one.
    issued = {False: ["old", "old"], True: ["new"]}
    asked = []

    def fetch(force_refresh: bool) -> AccessToken:
        asked.append(force_refresh)
        return AccessToken(issued[force_refresh].pop(0), 7200)

    manager = AccessTokenManager(store.backend, fetch, "wxstuck")
    assert manager.get() == "old"
    assert manager.refresh(stale="old") == "new"
    assert asked == [False, False, True]
    assert manager.refresh(stale="older") == "new" and len(asked) == 3  # someone already refreshed


def test_a_forced_refresh_through_the_sandbox_retires_the_old_stable_token(app, client):
    creds = {"grant_type": "client_credential", "appid": app.config["WECHAT_APPID"],
             "secret": app.config["WECHAT_APPSECRET"]}
    old = client.post("/sandbox/cgi-bin/stable_token", json=creds).get_json()["access_token"]
    new = client.post("/sandbox/cgi-bin/stable_token", json={**creds, "force_refresh": True}).get_json()
    assert new["access_token"] != old and new["expires_in"] == 7200
    refused = client.post(f"/sandbox/wxa/business/getuserphonenumber?access_token={old}", json={"code": "x"})
    assert refused.get_json()["errcode"] == 40001
    # Forced again within 30 s: WeChat does not refresh, it answers the current token.
    again = client.post("/sandbox/cgi-bin/stable_token", json={**creds, "force_refresh": True}).get_json()
    assert again["access_token"] == new["access_token"]


# -- the sandbox answers as WeChat does -----------------------------------------------------------

def token_args(app, **changes) -> dict:
    args = {"grant_type": "client_credential", "appid": app.config["WECHAT_APPID"],
            "secret": app.config["WECHAT_APPSECRET"]}
    args.update(changes)
    return {k: v for k, v in args.items() if v is not None}


def test_sandbox_classic_token(app, client):
    first = client.get("/sandbox/cgi-bin/token", query_string=token_args(app)).get_json()
    assert set(first) == {"access_token", "expires_in"} and first["expires_in"] == 7200
    second = client.get("/sandbox/cgi-bin/token", query_string=token_args(app)).get_json()
    assert second["access_token"] != first["access_token"]
    # The previous token keeps working through WeChat's five-minute overlap.
    for token, code in ((first["access_token"], "tel:13700000001"), (second["access_token"], "tel:13700000002")):
        resp = client.post("/sandbox/wxa/business/getuserphonenumber", query_string={"access_token": token},
                           json={"code": code})
        assert resp.get_json()["errcode"] == 0


@pytest.mark.parametrize("changes, errcode", [
    ({"grant_type": "authorization_code"}, 40002),
    ({"grant_type": None}, 40002),
    ({"appid": None}, 41002),
    ({"appid": "wx0000000000000000"}, 40013),
    ({"secret": None}, 41004),
    ({"secret": "wrong"}, 40125),
])
def test_sandbox_token_refusals(app, client, changes, errcode):
    classic = client.get("/sandbox/cgi-bin/token", query_string=token_args(app, **changes)).get_json()
    stable = client.post("/sandbox/cgi-bin/stable_token", json=token_args(app, **changes)).get_json()
    assert classic["errcode"] == stable["errcode"] == errcode
    assert "access_token" not in classic and "access_token" not in stable


def test_sandbox_stable_token(app, client):
    first = client.post("/sandbox/cgi-bin/stable_token", json=token_args(app)).get_json()
    assert set(first) == {"access_token", "expires_in"} and 7190 <= first["expires_in"] <= 7200
    again = client.post("/sandbox/cgi-bin/stable_token", json=token_args(app, force_refresh=False)).get_json()
    assert again["access_token"] == first["access_token"]  # normal mode: the same token while it lives
    assert 300 <= again["expires_in"] <= first["expires_in"]
    bad = client.post("/sandbox/cgi-bin/stable_token", json=token_args(app, force_refresh="yes")).get_json()
    assert bad["errcode"] == 40097
    not_json = client.post("/sandbox/cgi-bin/stable_token", data="grant_type=client_credential")
    assert not_json.get_json()["errcode"] == 47001
    assert fetches(client) == 4


def test_sandbox_phone_number(app, client):
    token = wechat.access_token.get()
    url = "/sandbox/wxa/business/getuserphonenumber"
    resp = client.post(url, query_string={"access_token": token}, json={"code": "tel:13912345678"}).get_json()
    assert resp["errcode"] == 0 and resp["errmsg"] == "ok"
    info = resp["phone_info"]
    assert (info["phoneNumber"], info["purePhoneNumber"], info["countryCode"]) == ("13912345678", "13912345678", "86")
    assert info["watermark"]["appid"] == app.config["WECHAT_APPID"]
    assert abs(info["watermark"]["timestamp"] - time.time()) < 60
    one = client.post(url, query_string={"access_token": token}, json={"code": "carol#1"}).get_json()
    two = client.post(url, query_string={"access_token": token}, json={"code": "carol#2"}).get_json()
    assert one["phone_info"]["purePhoneNumber"] == two["phone_info"]["purePhoneNumber"]  # one person
    assert len(one["phone_info"]["purePhoneNumber"]) == 11
    foreign = client.post(url, query_string={"access_token": token}, json={"code": "tel:+1-2025550123"}).get_json()
    assert foreign["phone_info"]["countryCode"] == "1" and foreign["phone_info"]["purePhoneNumber"] == "2025550123"


@pytest.mark.parametrize("query, body, errcode", [
    ({}, {"code": "a"}, 41001),
    ({"access_token": "not-a-token"}, {"code": "a"}, 40001),
    ("good", {}, 40029),
    ("good", {"code": ""}, 40029),
    ("good", {"code": "bad-code"}, 40029),
    ("good", {"code": "tel:abc"}, 40029),
    ("good", {"code": "busy"}, -1),
    ("good", {"code": "frequent"}, 45011),
    ("good", ["code"], 47001),
])
def test_sandbox_phone_number_refusals(app, client, query, body, errcode):
    if query == "good":
        query = {"access_token": wechat.access_token.get()}
    resp = client.post("/sandbox/wxa/business/getuserphonenumber", query_string=query, json=body).get_json()
    assert resp["errcode"] == errcode and "phone_info" not in resp


def test_sandbox_phone_codes_are_single_use(app, client):
    query = {"access_token": wechat.access_token.get()}
    url = "/sandbox/wxa/business/getuserphonenumber"
    assert client.post(url, query_string=query, json={"code": "once"}).get_json()["errcode"] == 0
    assert client.post(url, query_string=query, json={"code": "once"}).get_json()["errcode"] == 40029


def test_sandbox_revoke_control_refuses_bad_input(client):
    for body in ({"reason": "bored"}, {"access_token": 5}):
        resp = client.post("/sandbox/control/revoke-token", json=body)
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_params"


def test_sandbox_revokes_one_given_token(app, client):
    token = wechat.access_token.get()
    resp = client.post("/sandbox/control/revoke-token", json={"access_token": token, "reason": "expired"})
    assert resp.get_json()["revoked"] == 1
    answer = client.post("/sandbox/wxa/business/getuserphonenumber", query_string={"access_token": token},
                         json={"code": "z"}).get_json()
    assert answer["errcode"] == 42001


def test_token_endpoint_setting_is_checked(make_app):
    with pytest.raises(ConfigError):
        make_app(WECHAT_TOKEN_ENDPOINT="cgi-bin/token")


def test_the_phone_endpoint_survives_a_revoked_token(client, user):
    wechat.access_token.get()
    client.post("/sandbox/control/revoke-token", json={})
    before = fetches(client)
    resp = client.post("/api/user/phone", json={"code": "tel:13600000000"}, headers=user["headers"])
    assert resp.status_code == 200, resp.get_json()
    assert fetches(client) == before + 1


def test_the_token_never_reaches_a_response_or_the_log(client, user, caplog):
    resp = client.post("/api/user/phone", json={"code": "tel:13500000000"}, headers=user["headers"])
    token = wechat.access_token.cached()
    assert token and token not in resp.get_data(as_text=True) and token not in caplog.text
    assert token not in repr(AccessToken(token, 7200))
    login(client)  # a fresh login does not touch the token cache
    assert wechat.access_token.cached() == token
