"""Login sessions: code2session, the user upsert, and random tokens kept in the store.

The store is keyed by a hash of the token, so a copy of the store does not hand
out working tokens. The `session_key` stays in the store; nothing here returns it
to a caller outside the server.
"""

from __future__ import annotations

import hashlib
import logging
import json
import secrets
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import bindparam, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import fast_sql
from ..errors import ApiError, bad_request
from ..extensions import db, store, wechat
from ..models import User, utcnow
from ..wechat.errors import InvalidCode

log = logging.getLogger(__name__)

MAX_CODE_LENGTH = 128


@dataclass(frozen=True)
class LoginSession:
    user_id: int
    openid: str
    session_key: str

    def __repr__(self) -> str:
        return f"LoginSession(user_id={self.user_id}, openid={self.openid!r})"


def _key(token: str) -> str:
    return "session:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_code(code: object) -> str:
    if not isinstance(code, str) or not code.strip():
        raise bad_request("missing_code", "code is required: the string wx.login gave you")
    if len(code) > MAX_CODE_LENGTH or not code.isprintable():
        raise bad_request("invalid_code", "code is not a wx.login code")
    return code


RATE_WINDOW = 60  # seconds: LOGIN_RATE_LIMIT is per minute


def _rate_key(outcome: str, client: str) -> str:
    return f"ratelimit:login:{outcome}:{client}"


def check_rate(client: str) -> None:
    """429 if this client address had LOGIN_RATE_LIMIT logins, or as many refused codes, this minute.

    Logins and refusals are counted apart, per true client address (behind PROXY_FIX_HOPS proxies):
    one client sending junk codes fills only its own refusal count and locks out only itself; our own
    429s are not counted, so waiting a minute always ends it.
    """
    limit = current_app.config["LOGIN_RATE_LIMIT"]
    if not limit:
        return
    counts = store.get_many([_rate_key("ok", client), _rate_key("refused", client)])  # one round trip
    if any(int(count or 0) >= limit for count in counts):
        raise ApiError(429, "too_many_logins", "too many logins from this client; wait a minute")


def count_login(client: str, ok: bool) -> None:
    if current_app.config["LOGIN_RATE_LIMIT"]:
        store.incr(_rate_key("ok" if ok else "refused", client), RATE_WINDOW)


_UPSERTS: dict = {}


def _upsert_statement(dialect: str):
    """The login's upsert, built once per dialect: every login runs it."""
    stmt = _UPSERTS.get(dialect)
    if stmt is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        users, now = User.__table__, bindparam("u_now")
        stmt = insert(users).values(openid=bindparam("u_openid"), unionid=bindparam("u_unionid"), created_at=now,
                                    updated_at=now, last_login_at=now)
        stmt = _UPSERTS[dialect] = stmt.on_conflict_do_update(
            index_elements=[users.c.openid],
            set_={"last_login_at": now, "updated_at": now, "unionid": func.coalesce(stmt.excluded.unionid, users.c.unionid)},
        ).returning(*users.c)
    return stmt


def upsert_user(openid: str, unionid: str | None) -> User:
    """The user for this openid, made on first login; safe when two logins race.

    One INSERT ... ON CONFLICT DO UPDATE ... RETURNING (PostgreSQL and SQLite): the database settles a
    race between two first logins, instead of a SELECT, then an INSERT or an UPDATE, and a retry.
    """
    now = utcnow()
    stmt = _upsert_statement(db.session.get_bind().dialect.name)
    row = fast_sql.execute(db.session.connection(), stmt,
                           {"u_openid": openid, "u_unionid": unionid, "u_now": now}).first()
    db.session.commit()
    return User(**row._asdict())  # the row as committed, not attached to the session (nothing to reload)


def login(raw_code: object, client: str) -> tuple[str, int, User]:
    check_rate(client)
    try:
        code = validate_code(raw_code)
        wx_session = wechat.miniapp.code2session(code)
    except (ApiError, InvalidCode):  # a code that is no code, or one WeChat refused (40029, 40163)
        count_login(client, ok=False)
        raise
    user = upsert_user(wx_session.openid, wx_session.unionid)
    token = secrets.token_urlsafe(32)  # 256 bits
    ttl = current_app.config["SESSION_TTL"]
    payload = {"user_id": user.id, "openid": wx_session.openid, "session_key": wx_session.session_key}
    store.set(_key(token), json.dumps(payload), ttl=ttl)
    count_login(client, ok=True)
    log.info("login: user %s, session for %ss", user.id, ttl)  # never the token or the session_key
    return token, ttl, user


def lookup(token: str) -> LoginSession | None:
    if not token or len(token) > 256:
        return None
    raw = store.get(_key(token))
    if raw is None:
        return None
    data = json.loads(raw)
    return LoginSession(user_id=int(data["user_id"]), openid=data["openid"], session_key=data["session_key"])


def revoke(token: str) -> None:
    store.delete(_key(token))


def remaining_ttl(token: str) -> float | None:
    return store.ttl(_key(token))
