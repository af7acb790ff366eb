"""The hot paths' prebuilt statements, handed to psycopg directly inside SQLAlchemy's transaction.

A prebuilt Core statement still costs SQLAlchemy about 77 us of CPU per execution on top of psycopg's
own 57 us (its execution context, parameter processing and result wrapping; bench/README.md), and a
notification runs four of them; an order page's read also pays for a Connection and its autocommit
switch. On psycopg the statement is compiled once per set of parameter names, sent on the session's
own connection (so in its transaction, after any BEGIN it made), and answered with psycopg's rows,
which read by name (`row.id`) and by position as SQLAlchemy's do.

What stays the same: the listeners of `before_cursor_execute` see every statement (the suite's
statement counts, bench/inproc.py's; `conn` is None for `read_all`'s, which have no Connection),
errors arrive as SQLAlchemy's own exception classes (`IntegrityError` for a duplicate transaction id,
`OperationalError` for a deadlock), and every other driver (SQLite) goes through SQLAlchemy as before.
A connection that breaks under a statement here is not invalidated by SQLAlchemy on the spot; the
pool's liveness check (pg_liveness.py) drops it at its next checkout.

Only for statements whose types need no conversion on the way in or out on psycopg: text, integers and
aware UTC datetimes (timestamptz takes them as they are; `UTCDateTime` would only refuse naive ones,
which `_aware` refuses here too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

_compiled: dict[tuple[int, str, tuple[str, ...]], tuple[str, dict[str, Any], list[tuple[str, Any]]]] = {}


class _Result:
    """What the callers read of a result: `.first()` and `.rowcount`, as on SQLAlchemy's."""

    __slots__ = ("_row", "rowcount")

    def __init__(self, row: Any, rowcount: int) -> None:
        self._row, self.rowcount = row, rowcount

    def first(self) -> Any:
        return self._row


def execute(conn: Connection, statement, params: Mapping[str, Any]):
    """`conn.execute(statement, params)`, straight to psycopg when that is the driver."""
    if conn.dialect.driver != "psycopg":
        return conn.execute(statement, params)
    cursor = _run(conn.connection.driver_connection, conn.dialect, conn.dispatch, conn, statement, params)
    try:
        return _Result(cursor.fetchone() if cursor.description is not None else None, cursor.rowcount)
    finally:
        cursor.close()


def plain(conn: Connection, sql: str) -> None:
    """A statement without parameters or rows (SAVEPOINT, RELEASE, ...) in the connection's transaction."""
    if conn.dialect.driver != "psycopg":
        conn.exec_driver_sql(sql)
        return
    conn.dispatch.before_cursor_execute(conn, None, sql, {}, None, False)
    try:
        conn.connection.driver_connection.execute(sql)
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, {}, exc, psycopg.Error) from exc


def fetch_all(conn: Connection, statement, params: Mapping[str, Any]) -> list[Any]:
    """`conn.execute(statement, params).all()`, straight to psycopg when that is the driver."""
    if conn.dialect.driver != "psycopg":
        return conn.execute(statement, params).all()
    cursor = _run(conn.connection.driver_connection, conn.dialect, conn.dispatch, conn, statement, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def read_all(engine: Engine, statement, params: Mapping[str, Any]) -> list[Any]:
    """Every row of a read-only statement, on a pooled connection of its own.

    On psycopg in autocommit: no BEGIN before the statement, no ROLLBACK after (two of a read's four
    round trips), and none of SQLAlchemy's Connection around it. Elsewhere an engine connection.
    """
    if engine.dialect.driver != "psycopg":
        with engine.connect() as conn:
            return conn.execute(statement, params).all()
    pooled = engine.raw_connection()  # the pool's checkout, its liveness check included
    try:
        driver = pooled.driver_connection
        driver.autocommit = True  # a local switch in psycopg (the connection is idle): no round trip
        try:
            cursor = _run(driver, engine.dialect, engine.dispatch, None, statement, params)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()
        finally:
            try:
                driver.autocommit = False
            except psycopg.Error:  # the connection broke under the read: it must not be pooled again
                pooled.invalidate()
    finally:
        pooled.close()  # back to the pool; its reset is a rollback that psycopg skips when idle


def _run(driver, dialect, dispatch, conn: Connection | None, statement, params: Mapping[str, Any]):
    sql, defaults, computed = _compile(statement, dialect, params)
    values = {**defaults, **params} if defaults else dict(params)
    for key, default in computed:  # the columns' Python-side defaults (received_at=utcnow, ...)
        values[key] = default.arg(None) if default.is_callable else default.arg
    for value in values.values():
        _aware(value)
    dispatch.before_cursor_execute(conn, None, sql, values, None, False)
    cursor = driver.cursor(row_factory=namedtuple_row)
    try:
        cursor.execute(sql, values)
    except psycopg.Error as exc:  # as SQLAlchemy's own classes: IntegrityError, OperationalError, ...
        cursor.close()
        raise DBAPIError.instance(sql, values, exc, psycopg.Error) from exc
    return cursor


def _compile(statement, dialect, params: Mapping[str, Any]) -> tuple[str, dict[str, Any], list]:
    key = (id(statement), dialect.name, tuple(sorted(params)))
    found = _compiled.get(key)
    if found is None:
        if isinstance(statement, Insert) and not statement._returning:
            statement = statement.inline()  # no implicit RETURNING of the new id nobody reads
        compiled = statement.compile(dialect=dialect, column_keys=list(params))
        # Columns left out whose defaults are Python's (SQLAlchemy "prefetches" them per execution).
        prefetch = [*getattr(compiled, "insert_prefetch", ()), *getattr(compiled, "update_prefetch", ())]
        computed = [(column.key, column.default if column in compiled.insert_prefetch else column.onupdate)
                    for column in prefetch]
        # Values fixed in the statement itself (status='paid', ...) are parameters of the compiled SQL.
        defaults = {k: v for k, v in compiled.params.items() if k not in params and k not in dict(computed)}
        found = _compiled.setdefault(key, (compiled.string, defaults, computed))
    return found


def _aware(value: Any) -> None:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("naive datetime given; use aware UTC times")
