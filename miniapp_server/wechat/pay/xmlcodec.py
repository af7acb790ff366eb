"""WeChat Pay's flat `<xml>` documents, written escaped and read defensively.

Reading refuses DTDs and entities (billion laughs, external entities) and bodies over
a size limit, and flattens the document to a `dict[str, str]`.
"""

from __future__ import annotations

from typing import Mapping

import xmltodict
from xml.parsers.expat import ExpatError

MAX_BODY = 1024 * 1024  # 1 MB: WeChat's documents are a few hundred bytes


class XMLError(ValueError):
    """The body is not a flat WeChat `<xml>` document we are willing to read."""


def dumps(params: Mapping[str, object]) -> bytes:
    body = {"xml": {k: str(v) for k, v in params.items() if v is not None}}
    return xmltodict.unparse(body, full_document=False).encode("utf-8")


def loads(body: bytes | str, max_size: int = MAX_BODY, root_name: str = "xml") -> dict[str, str]:
    """A flat document's fields; `root_name` is "root" for a refund notification's decrypted req_info."""
    root = parse_tree(body, max_size, root_name)
    flat: dict[str, str] = {}
    for key, value in root.items():
        if value is None:
            flat[key] = ""
        elif isinstance(value, str):
            flat[key] = value
        else:
            raise XMLError(f"field {key!r} is not a plain value")
    return flat


def parse_tree(body: bytes | str, max_size: int = MAX_BODY, root_name: str = "xml") -> dict:
    """The root element's children, nested elements as dicts (or lists when repeated), attributes dropped.

    The same defences as `loads` (size, no DTDs or entities); for documents that are not flat, such as
    some of WeChat's message pushes.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not body or not body.strip():
        raise XMLError("empty body")
    if len(body) > max_size:
        raise XMLError("body too large")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise XMLError("DTDs and entities are refused")
    try:
        doc = xmltodict.parse(body, disable_entities=True, xml_attribs=False)
    except (ExpatError, ValueError) as exc:
        raise XMLError(f"not well-formed XML ({type(exc).__name__})") from None
    root = doc.get(root_name) if isinstance(doc, dict) else None
    if root is None:
        raise XMLError(f"root element is not <{root_name}>")
    if not isinstance(root, dict):
        raise XMLError(f"<{root_name}> has no fields")
    return dict(root)
