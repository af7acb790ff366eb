"""The built-in WeChat emulator, mounted at /sandbox when WECHAT_SANDBOX=1 (never in production)."""

from flask import Blueprint

bp = Blueprint("sandbox", __name__)

from . import control_guard, push_routes, routes, v3_routes  # noqa: E402,F401
