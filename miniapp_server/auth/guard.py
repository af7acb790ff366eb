"""`login_required`: a valid Bearer token or a 401; the session lands on `g.session`."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from ..errors import ApiError
from . import sessions


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing_token", "log in first: send Authorization: Bearer <token>")
    return token.strip()


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        token = bearer_token()
        session = sessions.lookup(token)
        if session is None:
            raise ApiError(401, "invalid_token", "the token is invalid or has expired; log in again")
        g.session, g.token = session, token
        return view(*args, **kwargs)

    return wrapper
