"""The store: the embedded one must be right across processes, as Redis is."""

import multiprocessing
import os
import time

import pytest

from miniapp_server.store import EmbeddedStore, LockTimeout, RedisStore

REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.fixture(params=["embedded", "redis"] if REDIS_URL else ["embedded"])
def store(request, tmp_path, run_id):
    if request.param == "redis":
        s = RedisStore(REDIS_URL, prefix=f"test:{run_id}:{tmp_path.name}:")
        yield s
        for key in s._redis.scan_iter(match=s._prefix + "*"):
            s._redis.delete(key)
    else:
        yield EmbeddedStore(str(tmp_path / "store.sqlite3"))


def test_get_set_delete_and_ttl(store):
    assert store.get("k") is None
    store.set("k", "v")
    assert store.get("k") == "v" and store.ttl("k") is None
    store.set("t", "v", ttl=0.3)
    assert 0 < store.ttl("t") <= 0.3
    time.sleep(0.4)
    assert store.get("t") is None
    store.delete("k")
    assert store.get("k") is None


def test_get_many_answers_in_the_order_asked_and_skips_expired(store):
    store.set("a", "1")
    store.set("gone", "2", ttl=0.05)
    store.set("c", "3")
    time.sleep(0.1)
    assert store.get_many(["c", "missing", "a", "gone"]) == ["3", None, "1", None]


def test_add_only_when_absent_or_expired(store):
    assert store.add("a", "1", ttl=0.3)
    assert not store.add("a", "2")
    assert store.get("a") == "1"
    time.sleep(0.4)
    assert store.add("a", "3")
    assert store.get("a") == "3"


def test_incr_counts_in_a_window(store):
    assert [store.incr("c", ttl=0.3) for _ in range(3)] == [1, 2, 3]
    time.sleep(0.4)
    assert store.incr("c", ttl=0.3) == 1


def test_lock_excludes_and_times_out(store):
    with store.lock("x", timeout=5, wait=1):
        with pytest.raises(LockTimeout):
            with store.lock("x", timeout=5, wait=0.2):
                pass
    with store.lock("x", timeout=5, wait=0.2):  # released
        pass


def _worker(path: str, n: int) -> None:
    s = EmbeddedStore(path)
    for _ in range(n):
        with s.lock("counter", timeout=10, wait=30):
            value = int(s.get("counter") or 0)
            s.set("counter", str(value + 1))
        s.incr("hits", ttl=60)


def test_embedded_store_is_shared_and_consistent_across_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    EmbeddedStore(path).set("from-parent", "hello")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(path, 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = EmbeddedStore(path)
    # Read-modify-write under the lock lost no update; incr lost none either.
    assert s.get("counter") == "200"
    assert s.get("hits") == "200"
    assert s.get("from-parent") == "hello"
