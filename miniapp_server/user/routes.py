from flask import current_app, g

from ..auth.guard import login_required
from ..http_utils import json_body
from ..services import subscriptions as subscriptions_service
from ..services import user_data
from . import bp


@bp.post("/phone")
@login_required
def phone():
    """`{"code"}` from the getPhoneNumber button: the number is kept on the user, and answered masked."""
    return user_data.bind_phone(g.session.user_id, json_body().get("code"))


@bp.post("/decrypt")
@login_required
def decrypt():
    """`{"encryptedData", "iv"}` from wx.getUserInfo & co: decrypted with this login's session_key."""
    body = json_body()
    return user_data.decrypt_for_session(g.session.session_key, current_app.config["WECHAT_APPID"],
                                         body.get("encryptedData"), body.get("iv"))


@bp.get("/subscriptions")
@login_required
def subscriptions():
    """The templates to ask for with wx.requestSubscribeMessage, and this person's credits for each."""
    return subscriptions_service.overview(g.session.user_id)


@bp.post("/subscriptions")
@login_required
def report_subscriptions():
    """`{"accepted": [template ids], "rejected": [...]}` from wx.requestSubscribeMessage's answer."""
    return subscriptions_service.record_choices(g.session.user_id, json_body())
