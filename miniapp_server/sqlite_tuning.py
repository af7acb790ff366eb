"""SQLite settings that make it safe for several worker processes, and write transactions.

WAL lets readers run beside a writer. A plain transaction begins DEFERRED (so a
reader never blocks anyone); a transaction that will read and then write starts
with `begin_write()`, which on SQLite begins IMMEDIATE: it takes the write lock
up front and waits for it (busy timeout), instead of failing when two processes
both read and then try to upgrade to a write. On PostgreSQL `begin_write()` is a
plain BEGIN; the services take row locks (SELECT ... FOR UPDATE) there.
"""

import fcntl
import os
import sqlite3
import threading
import time

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session

IMMEDIATE = "miniapp_immediate"
_WRITER = "miniapp_writer_turn"
WRITER_WAIT = 15  # seconds, as the busy timeout below


def tune_sqlite(engine: Engine) -> None:
    if getattr(engine, "_miniapp_tuned", False):
        return
    engine._miniapp_tuned = True  # type: ignore[attr-defined]

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.close()

    # Writers take turns before BEGIN IMMEDIATE: the threads of a process on a lock of their own, the
    # processes on an flock of a file beside the database (polled every millisecond). A waiter goes the
    # moment the writer before it is done, where SQLite's busy handler sleeps in steps of up to 100 ms:
    # at 2 workers x 4 threads that capped notify on the embedded defaults near 4% of the bare ceiling,
    # with a p99 over a second (bench/README.md). SQLite's own lock stays the guarantee.
    writers = threading.Lock()
    database = engine.url.database or ""
    files: dict[int, object] = {}  # by pid: a forked worker must not share its parent's open file (nor its flock)

    def _turn_file():
        if not database or database == ":memory:":
            return None
        pid = os.getpid()
        if pid not in files:
            files[pid] = open(database + "-writer.lock", "a+b")  # noqa: SIM115 - lives as long as the engine
        return files[pid]

    def _take_turn() -> bool:
        deadline = time.monotonic() + WRITER_WAIT
        if not writers.acquire(timeout=WRITER_WAIT):
            return False
        turn_file = _turn_file()
        if turn_file is None:
            return True
        while True:
            try:
                fcntl.flock(turn_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    writers.release()
                    return False
                time.sleep(0.001)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if not conn.get_execution_options().get(IMMEDIATE):
            conn.exec_driver_sql("BEGIN")
            return
        if not _take_turn():
            raise OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
        conn.info[_WRITER] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn.info)
            raise

    def _release(info) -> None:
        if info.pop(_WRITER, False):
            turn_file = _turn_file()
            if turn_file is not None:
                fcntl.flock(turn_file.fileno(), fcntl.LOCK_UN)
            writers.release()

    event.listen(engine, "commit", lambda conn: _release(conn.info))
    event.listen(engine, "rollback", lambda conn: _release(conn.info))
    # Whatever ended the transaction, a connection back in the pool holds no turn.
    event.listen(engine, "checkin", lambda _dbapi, record: _release(record.info))


def begin_write(session: Session | scoped_session) -> None:
    """Start the session's next transaction as a writer. Ends a read-only transaction first."""
    if isinstance(session, scoped_session):
        session = session()
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={IMMEDIATE: True})
