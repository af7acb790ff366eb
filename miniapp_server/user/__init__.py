"""The signed-in user's own data from WeChat: the phone number, and decrypted `encryptedData`."""

from flask import Blueprint

bp = Blueprint("user", __name__)

from . import routes  # noqa: E402,F401
