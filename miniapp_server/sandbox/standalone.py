"""The sandbox as a process of its own (benchmarks, staging): only WeChat's paths, nothing of the shop.

    flask sandbox serve --port 5100
    WECHAT_API_BASE=http://127.0.0.1:5100/sandbox WECHAT_PAY_BASE=http://127.0.0.1:5100/sandbox gunicorn wsgi:app
"""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from ..config import Config


def create_sandbox_app(config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Flask:
    from ..extensions import store
    from . import bp

    app = Flask("miniapp_sandbox", instance_relative_config=True)
    cfg = Config.from_env(env, instance_path=app.instance_path)
    cfg.WECHAT_SANDBOX = True
    cfg.apply_defaults()
    cfg.check_sandbox()
    app.config.from_mapping(cfg.as_flask())
    app.config["SANDBOX_STANDALONE"] = True
    app.config["EMBEDDED_STORE_PATH"] = cfg.EMBEDDED_STORE_PATH.replace("store.sqlite3", "sandbox-store.sqlite3")
    app.config.update(config or {})
    store.init_app(app)
    app.register_blueprint(bp, url_prefix="/sandbox")

    @app.after_request
    def _mark(response):
        response.headers["X-WeChat-Sandbox"] = "1"
        return response

    return app
