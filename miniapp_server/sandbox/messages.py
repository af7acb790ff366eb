"""The emulator's subscribe messages: `cgi-bin/message/subscribe/send`, and the person's accepts.

As WeChat does (its subscribeMessage.send documentation and the errcodes it lists):
- the access_token first: 41001 missing, 40001 unknown or retired, 42001 expired;
- a body that is no JSON object: 47001; a `template_id` this mini-program does not have: 40037;
  a `touser` that is no user of this mini-program: 40003; a `page` not in the mini-program's
  app.json: 41030; a `data` missing one of the template's keys, or a value that breaks its
  kind's rule (wechat/subscribe.py): 47003 "argument invalid! data.thing3.value invalid";
  a `miniprogram_state` or `lang` outside WeChat's values: 47003 too;
- then the person's credit for that template: none is 43101 "user refuse to accept the msg";
  a message sent spends one. Each accept in `wx.requestSubscribeMessage` adds one (`grant`,
  the control call the mini-program's shim makes), and accepts accumulate.

The templates it knows are the sandbox's own (message_settings.SANDBOX_TEMPLATES) and any the
app is configured with; a key's kind is its name (`thing3` is a thing), as at WeChat.
Every send is logged, delivered or not (`GET /sandbox/control/messages`). No Flask here.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from ..message_settings import LANGS, STATES
from ..store import Store
from ..wechat.subscribe import kind_of, valid
from .emulator import ORDER_TTL, SandboxError
from .tokens import TokenAuthority

MAX_PER_REQUEST = 3  # wx.requestSubscribeMessage asks for at most 3 templates at a time
CREDIT_TTL = 30 * 24 * 3600
LOG_SIZE = 500


def _error(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}"}


class MessageDesk:
    def __init__(self, store: Store, appid: str, templates: Mapping[str, Iterable[str]],
                 tokens: Callable[[], TokenAuthority], known_openid: Callable[[str], bool],
                 pages: set[str] | None, count: Callable[[str], None]) -> None:
        self.store = store
        self.appid = appid
        # template id -> its keys (each names its kind)
        self.templates: dict[str, tuple[str, ...]] = {tid: tuple(keys) for tid, keys in templates.items()}
        self._tokens = tokens
        self._known_openid = known_openid
        self.pages = pages  # None: the mini-program's pages are not known here, any page goes
        self._count = count

    def _credit_key(self, openid: str, template_id: str) -> str:
        return f"sandbox:subscribe:{self.appid}:{openid}:{template_id}"

    def credits(self, openid: str, template_id: str) -> int:
        return int(self.store.get(self._credit_key(openid, template_id)) or 0)

    # -- the person's phone: wx.requestSubscribeMessage ------------------------------------------------

    def grant(self, openid: str, template_ids: object) -> dict[str, Any]:
        """The person accepted these templates once each: one more message of each may be sent to them."""
        if not isinstance(template_ids, list) or not template_ids or \
                not all(isinstance(t, str) and t for t in template_ids):
            raise SandboxError(400, "invalid_params", 'send {"openid" or "code", "template_ids": ["..."]}')
        if len(template_ids) > MAX_PER_REQUEST or len(set(template_ids)) != len(template_ids):
            # wx.requestSubscribeMessage: errCode 20003, 模板消息id数量超过上限 (at most 3, each once)
            raise SandboxError(400, "too_many_templates", f"at most {MAX_PER_REQUEST} different template ids at once")
        unknown = [t for t in template_ids if t not in self.templates]
        if unknown:
            # wx.requestSubscribeMessage: errCode 20001, No template data return, verify the template id exist
            raise SandboxError(400, "unknown_template", "not a template of this mini-program: " + ", ".join(unknown))
        given = {}
        for tid in template_ids:
            key = self._credit_key(openid, tid)
            with self.store.lock("sandbox-subscribe:" + key, timeout=10, wait=10):
                given[tid] = self.credits(openid, tid) + 1
                self.store.set(key, str(given[tid]), ttl=CREDIT_TTL)
        return {"openid": openid, "credits": given}

    # -- api.weixin.qq.com -------------------------------------------------------------------------------

    def send(self, access_token: str, body: object) -> dict[str, Any]:
        self._count("subscribe_send")
        refused = self._tokens().refusal(access_token)
        if refused:
            return refused
        if not isinstance(body, dict):
            return _error(47001, "data format error")
        forced = self._forced_failure()
        answer = forced or self._check(body)
        if answer is None:
            answer = self._spend(body)
        self._log(body, answer)
        return answer

    def _check(self, body: dict[str, Any]) -> dict[str, Any] | None:
        template_id, touser, page = body.get("template_id"), body.get("touser"), body.get("page")
        if not isinstance(template_id, str) or template_id not in self.templates:
            return _error(40037, "invalid template_id")
        if not isinstance(touser, str) or not self._known_openid(touser):
            return _error(40003, "invalid openid")
        if page not in (None, ""):
            path = str(page).split("?", 1)[0].lstrip("/")
            if not isinstance(page, str) or (self.pages is not None and path not in self.pages):
                return _error(41030, "invalid page")
        if body.get("miniprogram_state", "formal") not in STATES:
            return _error(47003, "argument invalid! miniprogram_state invalid")
        if body.get("lang", "zh_CN") not in LANGS:
            return _error(47003, "argument invalid! lang invalid")
        data = body.get("data")
        if not isinstance(data, dict):
            return _error(47003, "argument invalid! data is empty")
        for key in self.templates[template_id]:
            entry = data.get(key)
            value = entry.get("value") if isinstance(entry, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if value in (None, ""):
                return _error(47003, f"argument invalid! data.{key}.value is emtpy")  # sic: WeChat's spelling
            if not isinstance(value, str) or not valid(kind_of(key) or "", value):
                return _error(47003, f"argument invalid! data.{key}.value invalid")
        return None

    def _spend(self, body: dict[str, Any]) -> dict[str, Any]:
        key = self._credit_key(body["touser"], body["template_id"])
        with self.store.lock("sandbox-subscribe:" + key, timeout=10, wait=10):
            left = self.credits(body["touser"], body["template_id"])
            if left <= 0:
                return _error(43101, "user refuse to accept the msg")
            self.store.set(key, str(left - 1), ttl=CREDIT_TTL)
        return {"errcode": 0, "errmsg": "ok", "msgid": int.from_bytes(secrets.token_bytes(7), "big")}

    # -- control -----------------------------------------------------------------------------------------

    def fail_next(self, errcode: object, count: object = 1) -> dict[str, Any]:
        """The next `count` sends (with a good token) answer `errcode`: -1 busy, 45009 quota, 47003, ..."""
        if not isinstance(errcode, int) or isinstance(errcode, bool) or errcode == 0 or \
                not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 100:
            raise SandboxError(400, "invalid_params", 'send {"fail_next": <errcode>, "count": 1}')
        self.store.set("sandbox:messages:fail", json.dumps({"errcode": errcode, "left": count}), ttl=ORDER_TTL)
        return {"fail_next": errcode, "count": count}

    def _forced_failure(self) -> dict[str, Any] | None:
        with self.store.lock("sandbox-messages-fail", timeout=10, wait=10):
            raw = self.store.get("sandbox:messages:fail")
            if not raw:
                return None
            plan = json.loads(raw)
            if plan["left"] <= 0:
                return None
            plan["left"] -= 1
            self.store.set("sandbox:messages:fail", json.dumps(plan), ttl=ORDER_TTL)
        return _error(plan["errcode"], "system error" if plan["errcode"] == -1 else "sandbox: failing as asked")

    def _log(self, body: dict[str, Any], answer: dict[str, Any]) -> None:
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        entry = {
            "at": datetime.fromtimestamp(time.time(), timezone.utc).isoformat(),
            "touser": body.get("touser"), "template_id": body.get("template_id"), "page": body.get("page"),
            "data": {k: v.get("value") if isinstance(v, dict) else v for k, v in data.items()},
            "miniprogram_state": body.get("miniprogram_state"), "lang": body.get("lang"),
            "errcode": answer.get("errcode", 0), "errmsg": answer.get("errmsg"),
            "delivered": answer.get("errcode") == 0,
            "msgid": answer.get("msgid"),
        }
        with self.store.lock("sandbox-messages", timeout=10, wait=10):
            entries = json.loads(self.store.get("sandbox:messages") or "[]")
            entries.append(entry)
            self.store.set("sandbox:messages", json.dumps(entries[-LOG_SIZE:], ensure_ascii=False))

    def sent(self, openid: str | None = None, template_id: str | None = None, out_trade_no: str | None = None,
             delivered: bool | None = None) -> list[dict[str, Any]]:
        entries = json.loads(self.store.get("sandbox:messages") or "[]")
        return [e for e in entries
                if (openid is None or e["touser"] == openid)
                and (template_id is None or e["template_id"] == template_id)
                and (delivered is None or e["delivered"] == delivered)
                and (out_trade_no is None or f"out_trade_no={out_trade_no}" in str(e.get("page") or "")
                     or out_trade_no in (e.get("data") or {}).values())]
