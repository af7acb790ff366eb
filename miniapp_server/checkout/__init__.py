"""The checkout page for scan-to-pay (NATIVE): server-rendered, reached only through a signed link."""

from flask import Blueprint

bp = Blueprint("checkout", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")

from . import routes  # noqa: E402,F401
