"""A `requests` transport that hands a request straight to a WSGI app, in this thread.

In sandbox mode the backend is its own WeChat; calling itself over HTTP from a
sync worker can deadlock when every worker waits the same way. This adapter
answers without touching the network.
"""

from __future__ import annotations

from io import BytesIO
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from werkzeug.test import EnvironBuilder, run_wsgi_app


class WSGIAdapter(BaseAdapter):
    def __init__(self, app) -> None:
        super().__init__()
        self.app = app

    def send(self, request: requests.PreparedRequest, stream=False, timeout=None, verify=True, cert=None,
             proxies=None) -> requests.Response:
        url = urlsplit(request.url)
        body = request.body.encode("utf-8") if isinstance(request.body, str) else (request.body or b"")
        builder = EnvironBuilder(
            path=url.path, query_string=url.query, method=request.method,
            base_url=f"{url.scheme}://{url.netloc}", headers=dict(request.headers), data=body,
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        try:
            app_iter, status, headers = run_wsgi_app(self.app, builder.get_environ(), buffered=True)
            content = b"".join(app_iter)
        finally:
            builder.close()
        response = requests.Response()
        response.status_code = int(status.split(" ", 1)[0])
        response.reason = status.split(" ", 1)[1] if " " in status else ""
        response.headers = CaseInsensitiveDict(headers.items())
        response.raw = BytesIO(content)
        response._content = content
        response.url = request.url
        response.request = request
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        return response

    def close(self) -> None:
        pass
