"""miniapp-pay: a Flask backend for WeChat mini-program shops."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from flask import Flask

from .config import Config, ConfigError
from .extensions import db, migrate, store, wechat

__all__ = ["create_app", "ConfigError"]

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment; `config` overrides single settings (tests use it)."""
    app = Flask(__name__, instance_relative_config=True)
    from .http_utils import BoundedJSONProvider

    app.json = BoundedJSONProvider(app)  # every get_json(): too deep is bad JSON (400), never a RecursionError
    if env is None:
        env = {**_dotenv_values(), **os.environ}  # the real environment wins over .env
    cfg = Config.from_env(env, instance_path=app.instance_path)
    for key, value in (config or {}).items():
        setattr(cfg, key, value) if hasattr(cfg, key) else cfg.extra.__setitem__(key, value)
    cfg.check()
    app.config.from_mapping(cfg.as_flask())
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = _engine_options(cfg.DATABASE_URL)
    os.makedirs(app.instance_path, exist_ok=True)

    configure_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_shell_context(app)
    register_commands(app)
    register_metrics(app)
    from .body_buffer import BufferedBody

    # Innermost: every body read whole, bounded (MAX_CONTENT_LENGTH) and within BODY_READ_TIMEOUT.
    app.wsgi_app = BufferedBody(app.wsgi_app, cfg.MAX_CONTENT_LENGTH, cfg.BODY_READ_TIMEOUT)  # type: ignore[method-assign]
    from .config import networks
    from .proxy import TrustedProxyFix

    # Outermost: the client's address (X-Forwarded-For from our own proxies only; never a forwarded host).
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, cfg.PROXY_FIX_HOPS,  # type: ignore[method-assign]
                                   networks(cfg.TRUSTED_PROXIES, "TRUSTED_PROXIES"))
    if cfg.APP_ENV == "production" and not cfg.PUBLIC_BASE_URL:
        app.logger.warning("PUBLIC_BASE_URL is not set: checkout links cannot be made (503 not_configured)")
    if cfg.WECHAT_SANDBOX:
        app.logger.warning("WECHAT SANDBOX MODE: WeChat is emulated at /sandbox; no real money moves")
    from .services.doctor import log_expiry_warnings_at_start

    log_expiry_warnings_at_start(app)  # certificates expiring within 30 days, in the log (never blocks start-up)
    return app


def _dotenv_values() -> dict[str, str]:
    """`.env` from the working directory (or a parent), without touching os.environ."""
    from dotenv import dotenv_values, find_dotenv

    path = find_dotenv(usecwd=True)
    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path else {}


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 15}}
    # No pool_pre_ping: pg_liveness checks each checkout without its round trip (see register_extensions).
    return {"pool_size": 5, "max_overflow": 5}


def configure_logging(app: Flask) -> None:
    from .logging_setup import setup_logging

    setup_logging(app)


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations"))
    store.init_app(app)
    wechat.init_app(app)
    from .services import messages

    messages.install()  # subscribe messages go out only after their transaction commits
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        from .sqlite_tuning import tune_sqlite

        with app.app_context():
            tune_sqlite(db.engine)
    else:
        from . import pg_liveness

        with app.app_context():
            pg_liveness.install(db.engine)  # a connection the server closed is never handed out


def register_blueprints(app: Flask) -> None:
    from .auth import bp as auth_bp
    from .pay import bp as pay_bp
    from .shop import bp as shop_bp
    from .user import bp as user_bp

    app.register_blueprint(auth_bp, url_prefix="/api/auth")
    app.register_blueprint(shop_bp, url_prefix="/api")
    app.register_blueprint(pay_bp, url_prefix="/api/pay")
    from .checkout import bp as checkout_bp

    app.register_blueprint(checkout_bp, url_prefix="/pay")
    app.register_blueprint(user_bp, url_prefix="/api/user")
    from .events import bp as events_bp

    app.register_blueprint(events_bp, url_prefix="/api/wechat")
    from .apidoc import bp as apidoc_bp

    app.register_blueprint(apidoc_bp, url_prefix="/api")
    if app.config["WECHAT_SANDBOX"]:
        from .sandbox import bp as sandbox_bp

        app.register_blueprint(sandbox_bp, url_prefix="/sandbox")

        @app.after_request
        def _mark_sandbox(response):
            response.headers["X-WeChat-Sandbox"] = "1"
            return response

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "sandbox": bool(app.config["WECHAT_SANDBOX"])}


def register_errorhandlers(app: Flask) -> None:
    from .errors import register_errorhandlers as register

    register(app)


def register_shell_context(app: Flask) -> None:
    from .shell import shell_context

    app.shell_context_processor(shell_context)


def register_metrics(app: Flask) -> None:
    from . import metrics

    metrics.init_app(app)


def register_commands(app: Flask) -> None:
    from .cli import register

    register(app)
