"""SQLite settings that make it safe for several worker processes, and write transactions.

WAL lets readers run beside a writer. A plain transaction begins DEFERRED (so a
reader never blocks anyone); a transaction that will read and then write starts
with `begin_write()`, which on SQLite begins IMMEDIATE: it takes the write lock
up front and waits for it (busy timeout), instead of failing when two processes
both read and then try to upgrade to a write. On PostgreSQL `begin_write()` is a
plain BEGIN; the services take row locks (SELECT ... FOR UPDATE) there.
"""

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session

IMMEDIATE = "miniapp_immediate"


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

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(IMMEDIATE) else "BEGIN")


def begin_write(session: Session | scoped_session) -> None:
    """Start the session's next transaction as a writer. Ends a read-only transaction first."""
    if isinstance(session, scoped_session):
        session = session()
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={IMMEDIATE: True})
