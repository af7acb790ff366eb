"""Orders: priced by the server from its own products, owned by their creator."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from flask import current_app
from sqlalchemy import func, insert, select
from sqlalchemy.orm import joinedload, selectinload

from ..errors import bad_request, not_found
from ..extensions import db
from ..sqlite_tuning import begin_write
from ..models import MAX_ID, Order, OrderItem, OrderStatus, Product, new_out_trade_no, order_dict, utcnow

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


def create_order(user_id: int, raw_items: Any) -> dict[str, Any]:
    """A new unpaid order of the caller's, priced from the products table; what the API shows of it.

    Core statements (one INSERT ... RETURNING for the order, one for its lines): the same rows the ORM
    would write, without building and flushing objects for an answer that is a dict anyway.
    """
    wanted = parse_items(raw_items)
    begin_write(db.session)
    conn = db.session.connection()
    products = conn.execute(
        select(Product.id, Product.name, Product.price_fen).where(Product.id.in_(wanted), Product.active.is_(True))
    ).all()
    by_id = {p.id: p for p in products}
    missing = sorted(set(wanted) - set(by_id))
    if missing:
        db.session.rollback()
        raise bad_request("unknown_product", f"no such product: {', '.join(map(str, missing))}")
    lines = [{"product_id": pid, "name": by_id[pid].name, "unit_price_fen": by_id[pid].price_fen, "quantity": qty}
             for pid, qty in wanted.items()]
    now = utcnow()
    order = conn.execute(insert(Order).values(
        out_trade_no=new_out_trade_no(), user_id=user_id, status=OrderStatus.UNPAID.value,
        total_fee=sum(line["unit_price_fen"] * line["quantity"] for line in lines),
        body=describe([line["name"] for line in lines]), created_at=now, updated_at=now, refunded_fee=0,
        expires_at=now + timedelta(seconds=current_app.config["ORDER_TTL"]),
    ).returning(*Order.__table__.c)).one()
    conn.execute(insert(OrderItem), [{**line, "order_id": order.id} for line in lines])
    db.session.commit()
    return order_dict(order, [SimpleNamespace(**line) for line in lines])


def get_own_order(user_id: int, out_trade_no: str, *, with_items: bool = False) -> Order:
    """The caller's order; someone else's is simply not found.

    `with_items` loads its lines and shipments in the same query (a join), for a caller that
    shows them: lazily they would cost more round trips to the database.
    """
    if not out_trade_no or len(out_trade_no) > 32:
        raise not_found("no such order")
    query = db.select(Order).filter_by(out_trade_no=out_trade_no, user_id=user_id)
    if with_items:
        query = query.options(joinedload(Order.items), joinedload(Order.shipments))
    order = db.session.execute(query).unique().scalar_one_or_none()
    if order is None:
        raise not_found("no such order")
    return order


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
