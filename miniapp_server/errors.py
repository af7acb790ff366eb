"""One way out for every error: `{"error": {"code", "message"}}` with a fitting status."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge, RequestTimeout

from .store import StoreUnavailable
from .wechat.errors import WeChatError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API answers as it is; raise it from services and views."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)


STORE_RETRY_AFTER = "1"  # seconds: a store outage is either over quickly or an operator's problem


def error_response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def too_large(response):
    """A 413 ends the connection: the rest of the body is never read (gunicorn would otherwise drain it)."""
    response.status_code = 413
    response.headers["Connection"] = "close"
    return response


def _component(err: Exception) -> str:
    """Which part failed, for the error counter: the database, the store (Redis or the embedded one), or code."""
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(err, SQLAlchemyError):
        return "database"
    module = type(err).__module__ or ""
    if isinstance(err, StoreUnavailable) or module.startswith("redis") or type(err).__name__ == "LockTimeout":
        return "store"
    return "app"


def register_errorhandlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err.status, err.code, err.message)

    @app.errorhandler(WeChatError)
    def _wechat_error(err: WeChatError):
        log.warning("wechat error on %s: %s %s", request.path, type(err).__name__, err.code)
        return error_response(err.http_status, err.api_code, f"WeChat: {err.message}")

    @app.before_request
    def _body_incomplete():
        from .body_buffer import INCOMPLETE

        state = request.environ.get(INCOMPLETE)
        if state == "timeout":
            raise RequestTimeout("the request body did not arrive in time")
        if state == "broken":
            raise BadRequest("the request body was cut short or malformed")

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(err: StoreUnavailable):
        from . import metrics

        metrics.error("store")
        log.warning("store unavailable on %s %s: %s", request.method, request.path, err)
        response = error_response(503, "store_unavailable", "the session store is not answering; try again shortly")
        response.headers["Retry-After"] = STORE_RETRY_AFTER
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(err: RequestEntityTooLarge):
        return too_large(error_response(413, "body_too_large", "the request body is larger than this server takes"))

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = (err.name or "error").lower().replace(" ", "_")
        response = error_response(err.code or 500, code, err.description or err.name)
        for name, value in err.get_headers():  # Allow on a 405 (RFC 9110), Retry-After, ...: all but its HTML's type
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        from . import metrics

        metrics.error(_component(err))
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "something went wrong on our side")
