"""Orders: priced by the server, bounded, and visible only to their owner."""

import pytest

from miniapp_server.extensions import db
from miniapp_server.models import Order, OrderItem, Product

from .conftest import bearer, login


def test_products_are_listed_with_integer_prices(client):
    items = client.get("/api/products").get_json()["items"]
    assert [(p["id"], p["price_fen"]) for p in items] == [(1, 1800), (2, 1200)]


def test_the_server_prices_the_order(client, user):
    resp = client.post("/api/orders", headers=user["headers"], json={
        "items": [{"product_id": 1, "quantity": 2}, {"product_id": 2, "quantity": 1}, {"product_id": 1, "quantity": 1}]})
    assert resp.status_code == 201
    order = resp.get_json()
    assert order["total_fee"] == 3 * 1800 + 1200 and order["status"] == "unpaid"
    assert sorted((i["product_id"], i["quantity"], i["unit_price_fen"]) for i in order["items"]) == [(1, 3, 1800), (2, 1, 1200)]
    assert len(order["out_trade_no"]) == 32 and order["out_trade_no"].isalnum()
    assert order["created_at"].endswith("+00:00")


def test_item_prices_are_copied_at_purchase_time(client, user, order):
    db.session.get(Product, 1).price_fen = 9999
    db.session.commit()
    again = client.get(f"/api/orders/{order['out_trade_no']}", headers=user["headers"]).get_json()
    assert again["total_fee"] == 3600 and again["items"][0]["unit_price_fen"] == 1800


def test_order_numbers_are_unique_and_unguessable(client, user):
    numbers = {client.post("/api/orders", headers=user["headers"], json={"items": [{"product_id": 2, "quantity": 1}]})
               .get_json()["out_trade_no"] for _ in range(20)}
    assert len(numbers) == 20
    suffixes = [n[8:] for n in numbers]  # after the date: 24 random hex digits, no sequence
    assert len(set(s[:6] for s in suffixes)) > 15


@pytest.mark.parametrize("body, code", [
    ({}, "invalid_items"),
    ({"items": []}, "invalid_items"),
    ({"items": "1"}, "invalid_items"),
    ({"items": [1]}, "invalid_items"),
    ({"items": [{"product_id": "1", "quantity": 1}]}, "invalid_items"),
    ({"items": [{"product_id": 1, "quantity": 1.5}]}, "invalid_items"),
    ({"items": [{"product_id": 1, "quantity": True}]}, "invalid_items"),
    ({"items": [{"product_id": 1, "quantity": 0}]}, "invalid_quantity"),
    ({"items": [{"product_id": 1, "quantity": -3}]}, "invalid_quantity"),
    ({"items": [{"product_id": 1, "quantity": 100}]}, "invalid_quantity"),
    ({"items": [{"product_id": 1, "quantity": 60}, {"product_id": 1, "quantity": 60}]}, "invalid_quantity"),
    ({"items": [{"product_id": 1, "quantity": 10**30}]}, "invalid_quantity"),
    ({"items": [{"product_id": 99, "quantity": 1}]}, "unknown_product"),
    ({"items": [{"product_id": 0, "quantity": 1}]}, "invalid_items"),
    ({"items": [{"product_id": 1, "quantity": 1, "price_fen": 1}]}, "invalid_items"),
    ({"items": [{"product_id": i, "quantity": 1} for i in range(1, 30)]}, "invalid_items"),
])
def test_bad_orders_are_refused_and_write_nothing(client, user, body, code):
    resp = client.post("/api/orders", headers=user["headers"], json=body)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == code
    assert db.session.execute(db.select(db.func.count(Order.id))).scalar_one() == 0
    assert db.session.execute(db.select(db.func.count(OrderItem.id))).scalar_one() == 0


def test_inactive_products_cannot_be_bought(client, user):
    db.session.get(Product, 2).active = False
    db.session.commit()
    resp = client.post("/api/orders", headers=user["headers"], json={"items": [{"product_id": 2, "quantity": 1}]})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "unknown_product"
    assert [p["id"] for p in client.get("/api/products").get_json()["items"]] == [1]


def test_orders_need_a_login(client):
    resp = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]})
    assert resp.status_code == 401


def test_an_order_belongs_to_its_creator(client, user, order):
    other = bearer(login(client, "mallory")["token"])
    no = order["out_trade_no"]
    for method, path in [("get", f"/api/orders/{no}"), ("post", f"/api/orders/{no}/pay"), ("post", f"/api/orders/{no}/sync")]:
        resp = getattr(client, method)(path, headers=other)
        assert resp.status_code == 404, path
        assert resp.get_json()["error"]["code"] == "not_found"
    assert client.get("/api/orders", headers=other).get_json()["items"] == []
    assert client.get(f"/api/orders/{'x' * 200}", headers=user["headers"]).status_code == 404


def test_own_orders_are_paged_newest_first(client, user):
    made = [client.post("/api/orders", headers=user["headers"], json={"items": [{"product_id": 2, "quantity": q}]})
            .get_json()["out_trade_no"] for q in range(1, 6)]
    page1 = client.get("/api/orders?per_page=2", headers=user["headers"]).get_json()
    page3 = client.get("/api/orders?per_page=2&page=3", headers=user["headers"]).get_json()
    assert [o["out_trade_no"] for o in page1["items"]] == made[::-1][:2]
    assert page1["total"] == 5 and page1["has_more"] and not page3["has_more"]
    assert [o["out_trade_no"] for o in page3["items"]] == [made[0]]
    for bad in ("page=0", "per_page=500", "page=x"):
        resp = client.get(f"/api/orders?{bad}", headers=user["headers"])
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_argument"
