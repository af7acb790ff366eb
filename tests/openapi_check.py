"""Every answer the suite receives through the app is checked against miniapp_server/apidoc/openapi.yaml.

Hooked on Flask's `request_finished` (so the sandbox's in-process notifications to /api/pay/notify are
checked too); what does not conform is collected and fails the test at teardown. One compiled validator
per documented answer (jsonschema-rs), so the whole suite pays a few milliseconds.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import jsonschema_rs
from flask import Flask, request, request_finished

from miniapp_server.apidoc import UNDESCRIBED_PREFIXES, document, openapi_path

_validators: dict[tuple[str, str, str, str], Any] = {}
_lock = threading.Lock()


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        target: Any = document()
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def documented_response(path: str, method: str, status: int) -> tuple[dict[str, Any] | None, str]:
    """The response object the document gives for this answer, and the key it was found under."""
    operation = document()["paths"].get(path, {}).get(method)
    if operation is None:
        return None, ""
    responses = operation["responses"]
    for key in (str(status), f"{str(status)[0]}XX", "default"):
        if key in responses:
            return _resolve(responses[key]), key
    return None, ""


def _validator(key: tuple[str, str, str, str], schema: dict[str, Any]):
    with _lock:
        validator = _validators.get(key)
        if validator is None:
            root = {**schema, "components": document()["components"]}  # so that #/components/... resolves
            validator = _validators[key] = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
        return validator


def check(path: str, method: str, status: int, mimetype: str, body: bytes) -> str | None:
    """What is wrong with this answer, or None."""
    where = f"{method.upper()} {path} -> {status}"
    spec, key = documented_response(path, method, status)
    if spec is None:
        if not document()["paths"].get(path, {}).get(method):
            return f"{method.upper()} {path} is not described in openapi.yaml"
        return f"{where}: this status is not documented"
    content = spec.get("content")
    if not content:
        return f"{where}: answered a {mimetype} body where none is documented" if body and status != 304 else None
    media = content.get(mimetype)
    if media is None:
        return f"{where}: answered {mimetype!r}, documented {sorted(content)}"
    schema = media.get("schema")
    if schema is None:
        return None
    if mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            instance: Any = json.loads(body)
        except ValueError:
            return f"{where}: not JSON"
    elif _resolve(schema).get("type") == "string" and (mimetype.startswith("text/") or mimetype.endswith("+xml")):
        instance = body.decode("utf-8", "replace")
    else:
        return None  # binary (PNG): the media type is the contract
    errors = list(_validator((path, method, key, mimetype), schema).iter_errors(instance))
    if errors:
        first = errors[0]
        return f"{where}: {first.message} at {'/'.join(map(str, first.instance_path)) or 'the top'}"
    return None


class ResponseChecker:
    def __init__(self) -> None:
        self.violations: list[str] = []
        self.checked = 0
        self._apps: list[Flask] = []

    def watch(self, app: Flask) -> None:
        request_finished.connect(self._on_response, app, weak=False)
        self._apps.append(app)

    def close(self) -> None:
        for app in self._apps:
            request_finished.disconnect(self._on_response, app)

    def _on_response(self, sender: Flask, response, **_extra) -> None:
        rule = request.url_rule
        method = request.method.lower()
        if rule is None or method == "options" or rule.rule.startswith(UNDESCRIBED_PREFIXES):
            return  # the router's own 404/405, or a route that is not ours to describe
        if response.direct_passthrough or response.is_streamed:
            return
        method = "get" if method == "head" else method
        problem = check(openapi_path(rule.rule), method, response.status_code, response.mimetype or "",
                        response.get_data())
        self.checked += 1
        if problem:
            self.violations.append(problem)
