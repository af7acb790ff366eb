from flask import g

from ..http_utils import client_address, json_body
from . import bp, sessions
from .guard import login_required


@bp.post("/login")
def login():
    token, ttl, user = sessions.login(json_body().get("code"), client=client_address())
    return {"token": token, "expires_in": ttl, "user": user.to_dict()}


@bp.post("/logout")
@login_required
def logout():
    sessions.revoke(g.token)
    return "", 204


@bp.post("/check")
@login_required
def check():
    ttl = sessions.remaining_ttl(g.token)
    return {"valid": True, "expires_in": int(ttl) if ttl is not None else None}
