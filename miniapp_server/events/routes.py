"""`GET/POST /api/wechat/events`: thin views over services/events.py, each exchange in the audit trail."""

import time

from flask import Response, request

from .. import audit
from ..errors import error_response
from ..services import events
from ..wechat.push import MAX_PUSH_BODY
from . import bp


def _answer(answer: events.PushAnswer) -> Response:
    if answer.ok:
        return Response(answer.message, status=200, mimetype="text/plain")
    response = error_response(answer.status, answer.verdict, answer.message)
    if answer.retry_after:
        response.headers["Retry-After"] = str(answer.retry_after)
    return response


def _record(answer: events.PushAnswer, started: float) -> None:
    outcome = f"{answer.status}:{answer.verdict}"
    audit.record("in", request.path, answer.audit, {"status": answer.status, "answer": answer.message[:200]},
                 outcome, time.perf_counter() - started, out_trade_no=answer.out_trade_no)


@bp.get("/events")
def url_check():
    started = time.perf_counter()
    answer = events.check_url(request.args.to_dict())
    _record(answer, started)
    return _answer(answer)


@bp.post("/events")
def receive():
    started = time.perf_counter()
    if request.content_length is not None and request.content_length > MAX_PUSH_BODY:
        answer = events.PushAnswer(413, "too_large", "the push body is too large",
                                   {"query": request.args.to_dict(), "body_bytes": request.content_length})
    else:
        body = request.stream.read(MAX_PUSH_BODY + 1)  # chunked bodies too: never more than the limit
        if len(body) > MAX_PUSH_BODY:
            answer = events.PushAnswer(413, "too_large", "the push body is too large",
                                       {"query": request.args.to_dict(), "body_bytes": len(body)})
        else:
            answer = events.handle_push(request.args.to_dict(), body)
    _record(answer, started)
    return _answer(answer)
