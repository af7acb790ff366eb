"""`flask products add/list/demo` and the shell context."""

from miniapp_server.extensions import db
from miniapp_server.models import Product


def test_add_prints_the_id_and_list_shows_it(runner):
    result = runner.invoke(args=["products", "add", "抹茶 Matcha", "2200"])
    assert result.exit_code == 0 and result.output.strip() == "3"
    assert db.session.get(Product, 3).price_fen == 2200
    listed = runner.invoke(args=["products", "list"])
    assert listed.exit_code == 0 and "抹茶 Matcha" in listed.output and "2200" in listed.output


def test_bad_products_are_refused_and_nothing_is_added(runner):
    for args in (["products", "add", "Free", "0"], ["products", "add", "Neg", "-5"],
                 ["products", "add", "Yuan", "18.00"], ["products", "add", " ", "100"],
                 ["products", "add", "x" * 200, "100"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 2, args
    assert db.session.execute(db.select(db.func.count(Product.id))).scalar_one() == 2


def test_demo_adds_once(make_app):
    app = make_app()
    with app.app_context():
        db.session.execute(db.delete(Product))
        db.session.commit()
    runner = app.test_cli_runner()
    assert "added" in runner.invoke(args=["products", "demo"]).output
    assert "nothing added" in runner.invoke(args=["products", "demo"]).output
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(Product.id))).scalar_one() == 4


def test_shell_context_has_the_models_and_helpers(app, client, user, order):
    ctx = app.make_shell_context()
    for name in ("db", "select", "Order", "User", "Product", "find_order", "user_orders", "recent_anomalies"):
        assert name in ctx
    assert ctx["find_order"](order["out_trade_no"]).total_fee == 3600
    assert [o.out_trade_no for o in ctx["user_orders"](user["user"]["openid"])] == [order["out_trade_no"]]
    assert ctx["recent_anomalies"]() == []
