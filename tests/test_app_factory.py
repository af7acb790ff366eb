"""The app factory and its configuration, as the contract's table says."""

import pytest

from miniapp_server import ConfigError, create_app
from miniapp_server.config import SANDBOX_APPID, Config


def test_sandbox_is_the_default_without_an_appid(tmp_path):
    cfg = Config.from_env({}, instance_path=str(tmp_path))
    assert cfg.WECHAT_SANDBOX and cfg.WECHAT_APPID == SANDBOX_APPID and cfg.WECHAT_PAY_KEY
    assert cfg.DATABASE_URL == f"sqlite:///{tmp_path}/miniapp.sqlite3"
    assert len(cfg.SECRET_KEY) >= 32 and cfg.WECHAT_SIGN_TYPE == "MD5"


def test_real_credentials_turn_the_sandbox_off(tmp_path):
    cfg = Config.from_env({"WECHAT_APPID": "wx123", "WECHAT_APPSECRET": "s"}, instance_path=str(tmp_path))
    assert not cfg.WECHAT_SANDBOX and cfg.WECHAT_PAY_KEY == ""
    assert Config.from_env({"WECHAT_APPID": "wx1", "WECHAT_SANDBOX": "1"}, instance_path=str(tmp_path)).WECHAT_SANDBOX


def test_bad_settings_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="WECHAT_SIGN_TYPE"):
        Config.from_env({"WECHAT_SIGN_TYPE": "SHA1"}, instance_path=str(tmp_path))
    with pytest.raises(ConfigError, match="APP_ENV"):
        Config.from_env({"APP_ENV": "staging"}, instance_path=str(tmp_path))
    with pytest.raises(ConfigError, match="SESSION_TTL"):
        Config.from_env({"SESSION_TTL": "soon"}, instance_path=str(tmp_path))


PRODUCTION = {
    "APP_ENV": "production", "SECRET_KEY": "k" * 40, "WECHAT_APPID": "wx0123456789abcdef",
    "WECHAT_APPSECRET": "appsecret-value-1234", "WECHAT_MCH_ID": "1900000001", "WECHAT_PAY_KEY": "p" * 32,
    "WECHAT_NOTIFY_URL": "https://shop.example.com/api/pay/notify",
}


@pytest.mark.parametrize("change, message", [
    ({"WECHAT_SANDBOX": "1"}, "sandbox"),
    ({"SECRET_KEY": ""}, "SECRET_KEY"),
    ({"WECHAT_PAY_KEY": ""}, "WECHAT_PAY_KEY"),
    ({"WECHAT_APPSECRET": ""}, "WECHAT_APPSECRET"),
    ({"WECHAT_APPID": ""}, "sandbox"),  # no appid means sandbox mode, which production refuses
    ({"WECHAT_NOTIFY_URL": "http://shop.example.com/notify"}, "https"),
])
def test_production_refuses_to_start_half_configured(tmp_path, change, message):
    env = {**PRODUCTION, "EMBEDDED_STORE_PATH": str(tmp_path / "s.db"),
           "DATABASE_URL": f"sqlite:///{tmp_path}/p.db", **change}
    with pytest.raises(ConfigError, match=message) as err:
        create_app(env=env)
    for secret in ("k" * 40, "p" * 32, "appsecret-value-1234"):
        assert secret not in str(err.value)


def test_production_starts_without_the_sandbox(tmp_path):
    app = create_app(env={**PRODUCTION, "EMBEDDED_STORE_PATH": str(tmp_path / "s.db"),
                          "DATABASE_URL": f"sqlite:///{tmp_path}/p.db"})
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert not any(r.startswith("/sandbox") for r in rules)
    resp = app.test_client().get("/healthz")
    assert "X-WeChat-Sandbox" not in resp.headers
    assert app.extensions["wechat"].pay.base == "https://api.mch.weixin.qq.com"
    assert app.extensions["wechat"].miniapp.base == "https://api.weixin.qq.com"


def test_sandbox_is_loud(make_app, caplog):
    caplog.set_level("WARNING")
    app = make_app()
    assert "SANDBOX" in caplog.text
    resp = app.test_client().get("/api/products")
    assert resp.headers["X-WeChat-Sandbox"] == "1"


def test_errors_are_json_in_the_contracts_shape(client):
    resp = client.get("/api/nowhere")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    resp = client.delete("/api/products")
    assert resp.status_code == 405 and set(resp.get_json()["error"]) == {"code", "message"}


def test_dotenv_is_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"WECHAT_SIGN_TYPE=HMAC-SHA256\nEMBEDDED_STORE_PATH={tmp_path}/s.db\n"
                                   f"DATABASE_URL=sqlite:///{tmp_path}/d.db\n")
    monkeypatch.chdir(tmp_path)
    for name in ("WECHAT_SIGN_TYPE", "EMBEDDED_STORE_PATH", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    app = create_app()
    assert app.config["WECHAT_SIGN_TYPE"] == "HMAC-SHA256"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/d.db"
