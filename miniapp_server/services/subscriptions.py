"""What a person allowed in `wx.requestSubscribeMessage`, as the mini-program reports it.

WeChat's one-time subscribe messages (一次性订阅消息) allow one message per accept: "用户订阅
一次，开发者可下发一条", and accepting the same template again allows one more ("订阅1次可下发1次";
WeChat has no call to read the count, so the server keeps it: https://developers.weixin.qq.com/
miniprogram/dev/framework/open-ability/subscribe-message-overview.html and WeChat's answer in
https://developers.weixin.qq.com/community/develop/doc/000e2221f58ca8a2ea61a87ff66800). So every
reported accept adds one credit, and credits accumulate; sending spends one (services/messages.py).
A reject (or a "ban" or "filter" the mini-program files as rejected) adds nothing and takes nothing.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import bad_request
from ..extensions import db
from ..models import MessageCredit, utcnow

MAX_IDS = 10  # wx.requestSubscribeMessage takes at most 3 at a time; this leaves room, and bounds the work
CHOICES = {"accepted": "accept", "rejected": "reject"}


def configured() -> dict[str, str]:
    """event -> template id, for the events that have a message."""
    return {event: t.template_id for event, t in current_app.config["WECHAT_MESSAGES"].items()}


def overview(user_id: int) -> dict[str, Any]:
    """The templates to ask for (each once, in event order) and the person's credits for each."""
    templates = configured()
    rows = db.session.execute(db.select(MessageCredit).filter_by(user_id=user_id)).scalars().all()
    credits = {r.template_id: r.credits for r in rows}
    choices = {r.template_id: r.last_choice for r in rows}
    ids = list(dict.fromkeys(templates.values()))
    return {
        "template_ids": ids,
        "items": [{"event": event, "template_id": tid, "credits": credits.get(tid, 0),
                   "last_choice": choices.get(tid)} for event, tid in templates.items()],
    }


def _ids(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise bad_request("invalid_subscriptions", f"{name} must be a list of template ids (strings)")
    if len(value) > MAX_IDS:
        raise bad_request("invalid_subscriptions", f"{name} holds at most {MAX_IDS} template ids")
    if len(set(value)) != len(value):
        raise bad_request("invalid_subscriptions", f"{name} names a template twice")
    return value


def record_choices(user_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Apply `{"accepted": [...], "rejected": [...]}`: +1 credit per accepted template. All or nothing."""
    unknown_keys = set(body) - set(CHOICES)
    if unknown_keys:
        raise bad_request("invalid_subscriptions", "only accepted and rejected may be given, not "
                          + ", ".join(sorted(map(str, unknown_keys)))[:200])
    accepted, rejected = _ids(body, "accepted"), _ids(body, "rejected")
    if not accepted and not rejected:
        raise bad_request("invalid_subscriptions", "give accepted and/or rejected template ids")
    both = set(accepted) & set(rejected)
    if both:
        raise bad_request("invalid_subscriptions", "a template cannot be both accepted and rejected: "
                          + ", ".join(sorted(both))[:200])
    known = set(configured().values())
    unknown = [tid for tid in accepted + rejected if tid not in known]
    if unknown:
        raise bad_request("unknown_template", "not a template of this shop's messages: " + ", ".join(unknown)[:200]
                          + "; GET /api/user/subscriptions lists them")
    now = utcnow()
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    for tid, choice in [(t, "accept") for t in accepted] + [(t, "reject") for t in rejected]:
        gain = 1 if choice == "accept" else 0
        stmt = insert(MessageCredit).values(user_id=user_id, template_id=tid, credits=gain, last_choice=choice,
                                            updated_at=now)
        # One statement, so that two reports at once both count (no read-then-write).
        db.session.execute(stmt.on_conflict_do_update(
            index_elements=["user_id", "template_id"],
            set_={"credits": MessageCredit.credits + gain, "last_choice": choice, "updated_at": now}))
    db.session.commit()
    return overview(user_id)
