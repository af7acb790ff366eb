"""WeChat Pay's flat `<xml>` documents, written escaped and read defensively.

Reading refuses DTDs and entities (billion laughs, external entities) and bodies over
a size limit, and flattens the document to a `dict[str, str]`.

The parse is the standard library's expat, read as UTF-8 whatever the body declares,
refusing in the parser itself, as defusedxml does, any DOCTYPE, entity declaration or
external reference (a textual check for `<!DOCTYPE` cannot see one in UTF-16). Without a
DTD expat refuses every entity reference but the five predefined ones. Fields are
collected straight from expat's callbacks: for a flat document of a few hundred bytes
that is several times cheaper than xmltodict's nested dicts or an ElementTree
(bench/README.md, "XML"). `parse_tree` keeps xmltodict for the rare nested document.
"""

from __future__ import annotations

from typing import Mapping
from xml.parsers import expat
from xml.parsers.expat import ExpatError
from xml.sax.saxutils import escape

import xmltodict

MAX_BODY = 1024 * 1024  # 1 MB: WeChat's documents are a few hundred bytes


class XMLError(ValueError):
    """The body is not a flat WeChat `<xml>` document we are willing to read."""


def dumps(params: Mapping[str, object], root_name: str = "xml") -> bytes:
    """A flat document; values escaped (`&`, `<`, `>`); the keys are our own field names."""
    fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in params.items() if v is not None)
    return f"<{root_name}>{fields}</{root_name}>".encode("utf-8")


def _refuse_dtd(*_args: object) -> None:
    raise XMLError("DTDs and entities are refused")


def _sized(body: bytes | str, max_size: int) -> bytes:
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not body or not body.strip():
        raise XMLError("empty body")
    if len(body) > max_size:
        raise XMLError("body too large")
    return body


def loads(body: bytes | str, max_size: int = MAX_BODY, root_name: str = "xml") -> dict[str, str]:
    """A flat document's fields; `root_name` is "root" for a refund notification's decrypted req_info."""
    body = _sized(body, max_size)
    flat: dict[str, str] = {}
    path: list[str] = []  # the open elements: the root, then at most one field
    text: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        if not path:
            if name != root_name:
                raise XMLError(f"root element is not <{root_name}>")
        elif len(path) > 1 or attrs:
            raise XMLError(f"field {path[-1] if len(path) > 1 else name!r} is not a plain value")
        elif name in flat:  # which copy would the signature cover? Neither: refuse
            raise XMLError(f"field {name!r} appears twice")
        path.append(name)
        text.clear()

    def end(name: str) -> None:
        path.pop()
        if path:  # a field closed; the root's own text between fields is ignored
            flat[name] = "".join(text).strip()  # trimmed, as xmltodict (and so wechatpy) read them
        text.clear()

    parser = expat.ParserCreate("UTF-8")  # WeChat's documents are UTF-8, whatever one claims
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.UnparsedEntityDeclHandler = _refuse_dtd
    parser.ExternalEntityRefHandler = _refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise XMLError(f"not well-formed XML ({type(exc).__name__})") from None
    if not flat:
        raise XMLError(f"<{root_name}> has no fields")
    return flat


def parse_tree(body: bytes | str, max_size: int = MAX_BODY, root_name: str = "xml") -> dict:
    """The root element's children, nested elements as dicts (or lists when repeated), attributes dropped.

    The same defences as `loads` (size, no DTDs or entities); for documents that are not flat, such as
    some of WeChat's message pushes. Read as UTF-8 whatever the body declares, so that the check for
    `<!DOCTYPE` below sees what expat sees (a UTF-16 body could hide one from it otherwise).
    """
    body = _sized(body, max_size)
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise XMLError("DTDs and entities are refused")
    try:
        doc = xmltodict.parse(body, encoding="utf-8", disable_entities=True, xml_attribs=False)
    except (ExpatError, ValueError) as exc:
        raise XMLError(f"not well-formed XML ({type(exc).__name__})") from None
    root = doc.get(root_name) if isinstance(doc, dict) else None
    if root is None:
        raise XMLError(f"root element is not <{root_name}>")
    if not isinstance(root, dict):
        raise XMLError(f"<{root_name}> has no fields")
    return dict(root)
