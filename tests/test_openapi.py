"""The API as a document (miniapp_server/apidoc/openapi.yaml): served, complete, and checked on every answer."""

from __future__ import annotations

import yaml

from miniapp_server.apidoc import DOCUMENT, UNDESCRIBED_PREFIXES, document, openapi_path

from .openapi_check import ResponseChecker, check

METHODS = {"get", "post", "put", "patch", "delete"}


def described_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(UNDESCRIBED_PREFIXES):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((openapi_path(rule.rule), method.lower()))
    return routes


def test_every_route_is_described_and_nothing_else(app):
    """Add a route and this fails until openapi.yaml describes it (each method), and the other way round."""
    routes = described_routes(app)
    documented = {(path, method) for path, item in document()["paths"].items() for method in item if method in METHODS}
    assert routes - documented == set(), "routes missing from miniapp_server/apidoc/openapi.yaml"
    assert documented - routes == set(), "openapi.yaml describes routes the app does not have"
    assert ("/api/orders/{out_trade_no}/pay", "post") in routes and ("/api/openapi.json", "get") in routes


def test_every_path_parameter_is_declared(app):
    for path, item in document()["paths"].items():
        names = {p["name"] for p in item.get("parameters", []) if p.get("in") == "path"} | {
            p["name"] for p in _resolved(item.get("parameters", [])) if p.get("in") == "path"}
        for method, operation in item.items():
            if method not in METHODS:
                continue
            declared = names | {p["name"] for p in _resolved(operation.get("parameters", [])) if p.get("in") == "path"}
            wanted = {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert wanted <= declared, f"{method.upper()} {path} does not declare {wanted - declared}"
            assert operation.get("operationId") and "responses" in operation, f"{method.upper()} {path}"


def _resolved(parameters):
    out = []
    for p in parameters:
        if "$ref" in p:
            target = document()
            for part in p["$ref"].lstrip("#/").split("/"):
                target = target[part]
            p = target
        out.append(p)
    return out


def test_served_at_api_openapi_json(client):
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    served = resp.get_json()
    assert served == yaml.safe_load(DOCUMENT.read_text()) and served["openapi"].startswith("3.1.")
    assert "/api/orders/{out_trade_no}/pay" in served["paths"]


def test_the_checker_refuses_what_breaks_the_document():
    """The suite-wide check (conftest) is not vacuous: wrong shapes, types, statuses and routes are caught."""
    ok = b'{"items": [{"id": 1, "name": "Latte", "price_fen": 1800}]}'
    assert check("/api/products", "get", 200, "application/json", ok) is None
    assert "price_fen" in check("/api/products", "get", 200, "application/json", b'{"items": [{"id": 1, "name": "x"}]}')
    assert "is not of type" in check("/api/products", "get", 200, "application/json",
                                     b'{"items": [{"id": "1", "name": "x", "price_fen": 1}]}')
    assert "answered 'text/html'" in check("/api/products", "get", 200, "text/html", b"<p>")
    assert "not described" in check("/api/nowhere", "get", 200, "application/json", b"{}")
    assert check("/api/orders", "get", 401, "application/json",
                 b'{"error": {"code": "invalid_token", "message": "log in"}}') is None
    assert "does not match" in check("/api/orders", "get", 400, "application/json",
                                     b'{"error": {"code": "Not Snake", "message": ""}}')
    login = (b'{"token": "' + b"t" * 43 + b'", "expires_in": 7200, %s"user": {"id": 1, '
             b'"openid": "o", "has_phone": false, "created_at": "2026-01-01T00:00:00+00:00"}}')
    assert check("/api/auth/login", "post", 200, "application/json", login % b"") is None
    assert check("/api/auth/login", "post", 200, "application/json", login % b'"session_key": "leak", ') is not None
    fail_xml = b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg>x</return_msg></xml>"
    assert check("/api/pay/notify", "post", 200, "text/xml", fail_xml) is None
    assert check("/api/pay/notify", "post", 200, "text/xml", b"SUCCESS") is not None


def test_a_journey_is_checked_answer_by_answer(make_app):
    app = make_app()
    checker = ResponseChecker()
    checker.watch(app)
    client = app.test_client()
    token = client.post("/api/auth/login", json={"code": "checked"}).get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    order = client.post("/api/orders", json={"items": [{"product_id": 1, "quantity": 1}]}, headers=headers).get_json()
    params = client.post(f"/api/orders/{order['out_trade_no']}/pay", headers=headers).get_json()
    client.post("/sandbox/control/pay", json=params)  # its notification to /api/pay/notify is checked too
    client.get(f"/api/orders/{order['out_trade_no']}", headers=headers)
    client.get("/api/orders?page=0", headers=headers)
    checker.close()
    assert checker.checked >= 6 and checker.violations == []


# -- what schemathesis found (tests/fuzz/run_schemathesis.py), pinned ------------------------------------

def test_a_method_not_allowed_says_which_are(client):
    resp = client.open("/api/auth/check", method="TRACE")
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "method_not_allowed"
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"POST", "OPTIONS"}  # RFC 9110


def test_an_empty_qr_format_is_refused_not_taken_for_png(client, user, order):
    native = client.post(f"/api/orders/{order['out_trade_no']}/native", headers=user["headers"]).get_json()
    assert client.get(native["qrcode_url"]).mimetype == "image/png"
    resp = client.get(native["qrcode_url"] + "&format=")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_format"


def test_an_order_line_without_quantity_is_one(client, user):
    resp = client.post("/api/orders", json={"items": [{"product_id": 1}]}, headers=user["headers"])
    assert resp.status_code == 201 and resp.get_json()["items"][0]["quantity"] == 1  # as documented: default 1


def test_an_empty_page_argument_is_refused_not_taken_for_the_default(client, user):
    for query in ("page=", "per_page="):
        resp = client.get(f"/api/orders?{query}", headers=user["headers"])
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_argument", query
    assert client.get("/api/orders", headers=user["headers"]).get_json()["page"] == 1


def test_the_readme_api_table_lists_every_route_and_only_those(app):
    """README's API table, route by route, against app.url_map (the sandbox has its own table)."""
    import re

    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## The API"):readme.index("## Settings")]
    rows = set(re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^` ?]*)", table, flags=re.M))
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(UNDESCRIBED_PREFIXES):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method, rule.rule.replace("<out_trade_no>", "<no>")))
    assert routes - rows == set(), "routes missing from README's API table"
    assert rows - routes == set(), "README's API table names routes the app does not have"
