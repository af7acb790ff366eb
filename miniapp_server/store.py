"""The key-value store behind sessions, rate limits, locks and token caches.

Two back ends with one small interface: Redis when `REDIS_URL` is set, and an
embedded store otherwise. The embedded store is a SQLite file in WAL mode, so
that every gunicorn worker on the machine sees the same keys (an in-process dict
would give each worker its own sessions).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
from typing import Iterator, Protocol


class LockTimeout(RuntimeError):
    """Someone else held the lock for longer than we were willing to wait."""


class Store(Protocol):
    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str, ttl: float | None = None) -> None: ...
    def add(self, key: str, value: str, ttl: float | None = None) -> bool: ...
    def delete(self, key: str) -> None: ...
    def incr(self, key: str, ttl: float) -> int: ...
    def ttl(self, key: str) -> float | None: ...
    def lock(self, name: str, timeout: float = 30, wait: float = 10) -> contextlib.AbstractContextManager[None]: ...
    def ping(self) -> bool: ...


class RedisStore:
    """Redis via redis-py; locks are redis-py's own (token-checked release)."""

    def __init__(self, url: str, prefix: str = "miniapp:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=3)
        self._prefix = prefix

    def _k(self, key: str) -> str:
        return self._prefix + key

    def get(self, key: str) -> str | None:
        return self._redis.get(self._k(key))

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._redis.set(self._k(key), value, px=int(ttl * 1000) if ttl else None)

    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        return bool(self._redis.set(self._k(key), value, px=int(ttl * 1000) if ttl else None, nx=True))

    def delete(self, key: str) -> None:
        self._redis.delete(self._k(key))

    def incr(self, key: str, ttl: float) -> int:
        pipe = self._redis.pipeline()
        pipe.incr(self._k(key))
        pipe.pexpire(self._k(key), int(ttl * 1000), nx=True)
        count, _ = pipe.execute()
        return int(count)

    def ttl(self, key: str) -> float | None:
        ms = self._redis.pttl(self._k(key))
        return None if ms < 0 else ms / 1000

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 30, wait: float = 10) -> Iterator[None]:
        lock = self._redis.lock(self._k("lock:" + name), timeout=timeout, blocking_timeout=wait)
        if not lock.acquire():
            raise LockTimeout(name)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired meanwhile: nothing of ours to release
                lock.release()

    def ping(self) -> bool:
        return bool(self._redis.ping())


class EmbeddedStore:
    """A SQLite file shared by every process on the machine; expiry is checked on read."""

    _SCHEMA = "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL, exp REAL)"

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._tx() as db:
            db.execute(self._SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        # A forked worker must not reuse its parent's connection.
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
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

    def get(self, key: str) -> str | None:
        row = self._conn().execute(
            "SELECT v FROM kv WHERE k = ? AND (exp IS NULL OR exp > ?)", (key, time.time())
        ).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO kv (k, v, exp) VALUES (?, ?, ?)", (key, value, self._exp(ttl)))

    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM kv WHERE k = ? AND exp IS NOT NULL AND exp <= ?", (key, time.time()))
            cur = db.execute("INSERT OR IGNORE INTO kv (k, v, exp) VALUES (?, ?, ?)", (key, value, self._exp(ttl)))
            return cur.rowcount == 1

    def delete(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM kv WHERE k = ?", (key,))

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
            with self._tx() as db:  # release only our own lock, not one taken after ours expired
                db.execute("DELETE FROM kv WHERE k = ? AND v = ?", (key, token))

    def purge_expired(self) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM kv WHERE exp IS NOT NULL AND exp <= ?", (time.time(),)).rowcount

    def ping(self) -> bool:
        return self._conn().execute("SELECT 1").fetchone() == (1,)


def make_store(redis_url: str, embedded_path: str, prefix: str = "miniapp:") -> Store:
    return RedisStore(redis_url, prefix) if redis_url else EmbeddedStore(embedded_path)
