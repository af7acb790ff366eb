"""Orders: priced by the server from its own products, owned by their creator."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from flask import current_app
from sqlalchemy import ARRAY, Integer, any_, bindparam, func, insert, select
from sqlalchemy.orm import selectinload

from .. import fast_sql
from ..errors import bad_request, not_found
from ..extensions import db
from ..sqlite_tuning import begin_write
from ..models import (MAX_ID, Order, OrderItem, OrderStatus, Product, Shipment, new_out_trade_no, order_dict,
                      utcnow)

BODY_LIMIT = 120  # WeChat's `body` is at most 128 bytes-ish characters; leave room


def _int(value: Any, field: str, high: int) -> int:
    # bool is an int in Python; "2" or 2.0 from a client is not a quantity either. Bounded here, where
    # it enters: a JSON integer has no size, and 2**63 overflows the database driver (a 500).
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request("invalid_items", f"{field} must be an integer")
    if not 1 <= value <= high:
        raise bad_request("invalid_items" if field == "product_id" else "invalid_quantity",
                          f"{field} must be between 1 and {high}")
    return value


def parse_items(raw: Any) -> dict[int, int]:
    """`[{"product_id", "quantity"}]` as {product_id: quantity}, bounded and merged."""
    cfg = current_app.config
    if not isinstance(raw, list) or not raw:
        raise bad_request("invalid_items", "items must be a non-empty list of {product_id, quantity}")
    if len(raw) > cfg["MAX_ORDER_LINES"]:
        raise bad_request("invalid_items", f"at most {cfg['MAX_ORDER_LINES']} lines per order")
    wanted: dict[int, int] = {}
    for line in raw:
        if not isinstance(line, dict):
            raise bad_request("invalid_items", "each item must be an object {product_id, quantity}")
        if "price_fen" in line or "price" in line or "total_fee" in line:
            raise bad_request("invalid_items", "prices come from the server; send product_id and quantity only")
        product_id = _int(line.get("product_id"), "product_id", MAX_ID)
        quantity = _int(line.get("quantity", 1), "quantity", cfg["MAX_ITEM_QUANTITY"])
        wanted[product_id] = wanted.get(product_id, 0) + quantity
        if not 1 <= wanted[product_id] <= cfg["MAX_ITEM_QUANTITY"]:
            raise bad_request("invalid_quantity",
                              f"quantity must be between 1 and {cfg['MAX_ITEM_QUANTITY']} for each product")
    return wanted


def describe(names: list[str]) -> str:
    body = names[0] if len(names) == 1 else f"{names[0]} 等{len(names)}件商品"
    return body[:BODY_LIMIT]


# POST /api/orders' statements, built once: building a statement per request cost more CPU than running it
# (bench/README.md).
_PRODUCTS_WANTED = (select(Product.id, Product.name, Product.price_fen)
                    .where(Product.id.in_(bindparam("ids", expanding=True)), Product.active.is_(True)))
# On PostgreSQL the same as `= ANY(array)`: one parameter, so one compiled statement for any number of ids.
_PRODUCTS_WANTED_PG = (select(Product.id, Product.name, Product.price_fen)
                       .where(Product.id == any_(bindparam("ids", type_=ARRAY(Integer))), Product.active.is_(True)))
_INSERT_ORDER = insert(Order.__table__).returning(*Order.__table__.c)
_INSERT_ITEM = insert(OrderItem.__table__)


def create_order(user_id: int, raw_items: Any) -> dict[str, Any]:
    """A new unpaid order of the caller's, priced from the products table; what the API shows of it.

    Core statements (one INSERT ... RETURNING for the order, one for its lines): the same rows the ORM
    would write, without building and flushing objects for an answer that is a dict anyway.
    """
    wanted = parse_items(raw_items)
    begin_write(db.session)
    conn = db.session.connection()
    if conn.dialect.name == "postgresql":
        products = fast_sql.fetch_all(conn, _PRODUCTS_WANTED_PG, {"ids": list(wanted)})
    else:
        products = conn.execute(_PRODUCTS_WANTED, {"ids": list(wanted)}).all()
    by_id = {p.id: p for p in products}
    missing = sorted(set(wanted) - set(by_id))
    if missing:
        db.session.rollback()
        raise bad_request("unknown_product", f"no such product: {', '.join(map(str, missing))}")
    lines = [{"product_id": pid, "name": by_id[pid].name, "unit_price_fen": by_id[pid].price_fen, "quantity": qty}
             for pid, qty in wanted.items()]
    now = utcnow()
    order = fast_sql.execute(conn, _INSERT_ORDER, dict(
        out_trade_no=new_out_trade_no(), user_id=user_id, status=OrderStatus.UNPAID.value,
        total_fee=sum(line["unit_price_fen"] * line["quantity"] for line in lines),
        body=describe([line["name"] for line in lines]), created_at=now, updated_at=now, refunded_fee=0,
        expires_at=now + timedelta(seconds=current_app.config["ORDER_TTL"]),
    )).first()
    rows = [{**line, "order_id": order.id} for line in lines]
    if len(rows) == 1:
        fast_sql.execute(conn, _INSERT_ITEM, rows[0])
    else:
        conn.execute(_INSERT_ITEM, rows)  # several lines: one executemany through SQLAlchemy
    db.session.commit()
    return order_dict(order, [SimpleNamespace(**line) for line in lines])


def _check_order_no(out_trade_no: str) -> None:
    """An order number no order can have (ours are 32 characters at most) is simply not found."""
    if not out_trade_no or len(out_trade_no) > 32:
        raise not_found("no such order")


_OWN_ORDER_TO_CHANGE = select(Order).where(Order.out_trade_no == bindparam("no"), Order.user_id == bindparam("user"))


def get_own_order(user_id: int, out_trade_no: str) -> Order:
    """The caller's order, to change; someone else's is simply not found (`own_order_view` shows one)."""
    _check_order_no(out_trade_no)
    order = db.session.execute(_OWN_ORDER_TO_CHANGE, {"no": out_trade_no, "user": user_id}).scalar_one_or_none()
    if order is None:
        raise not_found("no such order")
    return order


# GET /api/orders/<no>, the busiest read: the order with its lines and current packages in one prebuilt
# Core select (no ORM objects, no statement built per request). A row per line and package pair: a few.
_ORDERS, _ITEMS, _SHIPMENTS = Order.__table__, OrderItem.__table__, Shipment.__table__
_ITEM_COLUMNS = ("product_id", "name", "unit_price_fen", "quantity")
_SHIPMENT_COLUMNS = ("logistics_type", "express_company", "tracking_no", "item_desc")
_OWN_ORDER = (
    select(*_ORDERS.c, _ITEMS.c.id.label("item_id"), *(_ITEMS.c[n].label("item_" + n) for n in _ITEM_COLUMNS),
           _SHIPMENTS.c.id.label("shipment_id"), *(_SHIPMENTS.c[n].label("shipment_" + n) for n in _SHIPMENT_COLUMNS))
    .outerjoin(_ITEMS, _ITEMS.c.order_id == _ORDERS.c.id)
    .outerjoin(_SHIPMENTS, (_SHIPMENTS.c.order_id == _ORDERS.c.id) & _SHIPMENTS.c.superseded.is_(False))
    .where(_ORDERS.c.out_trade_no == bindparam("no"), _ORDERS.c.user_id == bindparam("user"))
    .order_by(_ITEMS.c.id, _SHIPMENTS.c.upload_no, _SHIPMENTS.c.package_no)
)
def own_order_view(user_id: int, out_trade_no: str) -> dict[str, Any]:
    """What GET /api/orders/<no> answers: the caller's order with its lines and current packages."""
    _check_order_no(out_trade_no)
    rows = fast_sql.read_all(db.engine, _OWN_ORDER, {"no": out_trade_no, "user": user_id})  # autocommit on PG
    if not rows:
        raise not_found("no such order")
    items: dict[int, SimpleNamespace] = {}
    shipments: dict[int, SimpleNamespace] = {}
    for row in rows:
        if row.item_id is not None and row.item_id not in items:
            items[row.item_id] = SimpleNamespace(**{n: getattr(row, "item_" + n) for n in _ITEM_COLUMNS})
        if row.shipment_id is not None and row.shipment_id not in shipments:
            shipments[row.shipment_id] = SimpleNamespace(**{n: getattr(row, "shipment_" + n) for n in _SHIPMENT_COLUMNS})
    # Rows come by line, then by upload and package: the first line's rows meet every package in order.
    return order_dict(rows[0], list(items.values()), list(shipments.values()))


def list_own_orders(user_id: int, page: int, per_page: int) -> dict[str, Any]:
    total = db.session.execute(db.select(func.count(Order.id)).filter_by(user_id=user_id)).scalar_one()
    orders = db.session.execute(
        db.select(Order).filter_by(user_id=user_id).order_by(Order.created_at.desc(), Order.id.desc())
        .limit(per_page).offset((page - 1) * per_page)
        .options(selectinload(Order.items), selectinload(Order.shipments))  # a query each, not one per order
    ).scalars().all()
    return {"items": [o.to_dict() for o in orders], "page": page, "per_page": per_page, "total": total,
            "has_more": page * per_page < total}


def list_products() -> list[Product]:
    return list(db.session.execute(db.select(Product).filter_by(active=True).order_by(Product.id)).scalars())
