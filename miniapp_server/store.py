"""The key-value store behind sessions, rate limits, locks and token caches.

Two back ends with one small interface: Redis when `REDIS_URL` is set, and an
embedded store otherwise. The embedded store is a SQLite file in WAL mode, so
that every gunicorn worker on the machine sees the same keys (an in-process dict
would give each worker its own sessions).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sqlite3
import threading
import time
from typing import Iterator, Protocol


DEFAULT_TIMEOUT = 0.5  # seconds: a store that does not answer by then is down, for this request


class LockTimeout(RuntimeError):
    """Someone else held the lock for longer than we were willing to wait."""


class StoreUnavailable(RuntimeError):
    """The store did not answer in time, or refused: the API answers 503 store_unavailable with Retry-After.

    Each back end turns its own errors into this one, so callers never see redis-py's or sqlite3's.
    Nothing is cached across it: the next call tries again, so the app recovers by itself.
    """


def _translated(method):
    """Decorate a store method so that its back end's `outage` errors leave it as StoreUnavailable."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except self.outage as exc:
            raise StoreUnavailable(f"the store did not answer ({type(exc).__name__})") from None
    return call


class Store(Protocol):
    def get(self, key: str) -> str | None: ...
    def get_many(self, keys: list[str]) -> list[str | None]: ...
    def set(self, key: str, value: str, ttl: float | None = None) -> None: ...
    def add(self, key: str, value: str, ttl: float | None = None) -> bool: ...
    def delete(self, key: str) -> None: ...
    def incr(self, key: str, ttl: float) -> int: ...
    def ttl(self, key: str) -> float | None: ...
    def lock(self, name: str, timeout: float = 30, wait: float = 10) -> contextlib.AbstractContextManager[None]: ...
    def ping(self) -> bool: ...


class RedisStore:
    """Redis via redis-py; locks are redis-py's own (token-checked release)."""

    def __init__(self, url: str, prefix: str = "miniapp:", timeout: float = DEFAULT_TIMEOUT) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Short timeouts and one immediate retry (a pooled connection that died with a Redis restart is
        # replaced at once): a stopped or frozen Redis costs a request about 2 x timeout, then a 503.
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                           socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1))
        self._prefix = prefix
        # What "Redis is not there" looks like (a bug such as WRONGTYPE stays a bug: a 500).
        self.outage = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
                       redis.exceptions.OutOfMemoryError)

    def _k(self, key: str) -> str:
        return self._prefix + key

    @_translated
    def get(self, key: str) -> str | None:
        return self._redis.get(self._k(key))

    @_translated
    def get_many(self, keys: list[str]) -> list[str | None]:
        """Several values in one round trip (MGET), in the order of `keys`."""
        return self._redis.mget([self._k(key) for key in keys])

    @_translated
    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._redis.set(self._k(key), value, px=int(ttl * 1000) if ttl else None)

    @_translated
    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        return bool(self._redis.set(self._k(key), value, px=int(ttl * 1000) if ttl else None, nx=True))

    @_translated
    def delete(self, key: str) -> None:
        self._redis.delete(self._k(key))

    @_translated
    def incr(self, key: str, ttl: float) -> int:
        pipe = self._redis.pipeline()
        pipe.incr(self._k(key))
        pipe.pexpire(self._k(key), int(ttl * 1000), nx=True)
        count, _ = pipe.execute()
        return int(count)

    @_translated
    def ttl(self, key: str) -> float | None:
        ms = self._redis.pttl(self._k(key))
        return None if ms < 0 else ms / 1000

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 30, wait: float = 10) -> Iterator[None]:
        lock = self._redis.lock(self._k("lock:" + name), timeout=timeout, blocking_timeout=wait)
        if not _translated(lambda _self: lock.acquire())(self):
            raise LockTimeout(name)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired meanwhile: nothing of ours to release
                lock.release()

    @_translated
    def ping(self) -> bool:
        return bool(self._redis.ping())


class EmbeddedStore:
    """A SQLite file shared by every process on the machine; expiry is checked on read."""

    # Locked past the busy timeout, unreadable, read-only, disk full: the store is not there for now.
    outage: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
    _SCHEMA = "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL, exp REAL)"

    def __init__(self, path: str, timeout: float = 2 * DEFAULT_TIMEOUT) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.timeout = timeout  # how long a write waits for another process's; past it, StoreUnavailable
        self._local = threading.local()
        with self._tx() as db:
            db.execute(self._SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        # A forked worker must not reuse its parent's connection.
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")  # take the write lock now: no read-then-upgrade races between processes
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _exp(ttl: float | None) -> float | None:
        return time.time() + ttl if ttl else None

    @_translated
    def get(self, key: str) -> str | None:
        row = self._conn().execute(
            "SELECT v FROM kv WHERE k = ? AND (exp IS NULL OR exp > ?)", (key, time.time())
        ).fetchone()
        return row[0] if row else None

    @_translated
    def get_many(self, keys: list[str]) -> list[str | None]:
        marks = ",".join("?" * len(keys))
        found = dict(self._conn().execute(
            f"SELECT k, v FROM kv WHERE k IN ({marks}) AND (exp IS NULL OR exp > ?)", (*keys, time.time())
        ).fetchall())
        return [found.get(key) for key in keys]

    @_translated
    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO kv (k, v, exp) VALUES (?, ?, ?)", (key, value, self._exp(ttl)))

    @_translated
    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM kv WHERE k = ? AND exp IS NOT NULL AND exp <= ?", (key, time.time()))
            cur = db.execute("INSERT OR IGNORE INTO kv (k, v, exp) VALUES (?, ?, ?)", (key, value, self._exp(ttl)))
            return cur.rowcount == 1

    @_translated
    def delete(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM kv WHERE k = ?", (key,))

    @_translated
    def incr(self, key: str, ttl: float) -> int:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT v FROM kv WHERE k = ? AND (exp IS NULL OR exp > ?)", (key, now)).fetchone()
            if row is None:
                db.execute("INSERT OR REPLACE INTO kv (k, v, exp) VALUES (?, '1', ?)", (key, now + ttl))
                return 1
            count = int(row[0]) + 1
            db.execute("UPDATE kv SET v = ? WHERE k = ?", (str(count), key))
            return count

    @_translated
    def ttl(self, key: str) -> float | None:
        row = self._conn().execute("SELECT exp FROM kv WHERE k = ? AND (exp IS NULL OR exp > ?)",
                                   (key, time.time())).fetchone()
        return None if row is None or row[0] is None else row[0] - time.time()

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 30, wait: float = 10) -> Iterator[None]:
        key, token = "lock:" + name, secrets.token_hex(16)
        deadline = time.monotonic() + wait
        while not self.add(key, token, ttl=timeout):
            if time.monotonic() >= deadline:
                raise LockTimeout(name)
            time.sleep(0.01)
        try:
            yield
        finally:
            self._release(key, token)

    @_translated
    def _release(self, key: str, token: str) -> None:
        with self._tx() as db:  # release only our own lock, not one taken after ours expired
            db.execute("DELETE FROM kv WHERE k = ? AND v = ?", (key, token))

    @_translated
    def purge_expired(self) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM kv WHERE exp IS NOT NULL AND exp <= ?", (time.time(),)).rowcount

    @_translated
    def ping(self) -> bool:
        return self._conn().execute("SELECT 1").fetchone() == (1,)


def make_store(redis_url: str, embedded_path: str, prefix: str = "miniapp:", timeout: float = DEFAULT_TIMEOUT) -> Store:
    """Redis if a URL is given, else the embedded store; `timeout` (STORE_TIMEOUT) bounds each call's wait."""
    return RedisStore(redis_url, prefix, timeout) if redis_url else EmbeddedStore(embedded_path, 2 * timeout)
