"""WeChat's message push URL (`/api/wechat/events`): the URL check and the pushed events."""

from flask import Blueprint

bp = Blueprint("events", __name__)

from . import routes  # noqa: E402,F401
