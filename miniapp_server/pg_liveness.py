"""Is a pooled PostgreSQL connection still usable? Checked at every checkout, without a round trip.

SQLAlchemy's `pool_pre_ping` sends `SELECT 1` before each checkout: 80 us of CPU and a round trip on
every request (bench/README.md), to learn what the socket already says. A server that restarts,
or a backend ended by `pg_terminate_backend`, an idle timeout or a failover, writes its FATAL message
and closes the connection; the client's socket is readable from then on. An idle connection in the
pool has nothing to read otherwise (we LISTEN to nothing), so one zero-timeout poll of its socket
tells a dead connection from a live one for about 1 us.

A dead one raises `InvalidatePoolError` (a `DisconnectionError`) in the pool's checkout event: the
pool drops every connection older than now (a restart ended them all) and hands out a fresh one,
exactly as a failed pre-ping does.
What neither check catches: a server that vanished without closing anything (a cut cable). A ping
then hangs until TCP gives up; here the first statement fails, which is the same answer sooner.
"""

from __future__ import annotations

import select

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidatePoolError

_HUNG_UP = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


def socket_has_news(fd: int) -> bool:
    """True if an idle connection's socket is readable, closed or broken: its server has spoken or hung up."""
    poller = select.poll()  # not select.select: it cannot watch a descriptor past 1023
    poller.register(fd, _HUNG_UP)
    return bool(poller.poll(0))


def connection_is_dead(dbapi_connection) -> bool:
    """For a psycopg 3 connection; any other driver's connection is taken as alive (no opinion)."""
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:
        return False
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    try:
        return socket_has_news(pgconn.socket)
    except Exception:  # noqa: BLE001 - no socket any more (psycopg raises OperationalError): dead
        return True


def install(engine: Engine) -> None:
    """Check each checkout of `engine`'s pool (instead of `pool_pre_ping`)."""
    if getattr(engine, "_miniapp_liveness", False):
        return
    engine._miniapp_liveness = True  # type: ignore[attr-defined]

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection, _record, _proxy) -> None:
        if connection_is_dead(dbapi_connection):
            raise InvalidatePoolError("the server closed this idle connection")
