"""gunicorn's access log without secrets: `logger_class` in gunicorn.conf.py.

The request line carries the query string, and some of our links are capabilities: the checkout
link's `sig` opens an order's payment page for a day, and the message-push URL check carries
`signature`/`echostr`. Such values are replaced by `[redacted]` in every atom that holds a URL
(`%(r)s`, `%(q)s`, the Referer `%(f)s`), whatever access_log_format an operator picks.
"""

from __future__ import annotations

import re

from gunicorn.glogging import Logger

# Query parameters whose values are secrets or capabilities.
SECRET_PARAMS = ("sig", "sign", "signature", "msg_signature", "paySign", "token", "access_token", "key",
                 "echostr", "code", "session_key", "secret", "js_code")
_PARAM = re.compile(r"(?i)([?&;](?:%s)=)[^&#\s\"]*" % "|".join(re.escape(p) for p in SECRET_PARAMS))


def redact_url(text: str | None) -> str | None:
    """`text` with the values of SECRET_PARAMS replaced (a bare query string counts as starting with '?')."""
    if not text:
        return text
    bare = not text.startswith(("?", "&")) and "?" not in text and "=" in text
    cleaned = _PARAM.sub(r"\1[redacted]", ("?" + text) if bare else text)
    return cleaned[1:] if bare else cleaned


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name in ("r", "q", "f"):
            if isinstance(atoms.get(name), str):
                atoms[name] = redact_url(atoms[name])
        if isinstance(atoms.get("{referer}i"), str):
            atoms["{referer}i"] = redact_url(atoms["{referer}i"])
        return atoms
