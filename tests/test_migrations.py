"""`flask db upgrade` on an empty database builds exactly the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade
from sqlalchemy import inspect, text

from miniapp_server.extensions import db


def test_upgrade_from_empty_matches_the_models(make_app):
    app = make_app()
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        assert not inspect(db.engine).get_table_names()
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        assert {"users", "products", "orders", "order_items", "payments", "payment_notifications"} <= tables
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata)
        assert diff == [], f"models and migrations differ: {diff}"


def test_every_lookup_has_an_index(make_app):
    app = make_app()
    with app.app_context():
        insp = inspect(db.engine)
        order_indexes = {tuple(ix["column_names"]) for ix in insp.get_indexes("orders")}
        order_uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("orders")}
        assert ("out_trade_no",) in order_uniques | order_indexes
        assert ("user_id", "created_at") in order_indexes  # a user's orders, newest first
        assert ("status", "created_at") in order_indexes  # reconciliation
        assert ("transaction_id",) in order_indexes
        user_uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("users")}
        assert ("openid",) in user_uniques | {tuple(ix["column_names"]) for ix in insp.get_indexes("users") if ix["unique"]}
        payment_uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("payments")}
        assert ("transaction_id",) in payment_uniques | {
            tuple(ix["column_names"]) for ix in insp.get_indexes("payments") if ix["unique"]}
