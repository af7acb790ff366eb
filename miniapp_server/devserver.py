"""Where `make run` serves: the port, chosen once and written down for `flask sandbox demo` and the mini-program.

Port 5000 is the default, but it is often taken (macOS's AirPlay Receiver listens on it, or another project):
then, as Vite and create-react-app do, the next free port is used and the console says so. A port asked for
by name (`make run PORT=5050`) is a promise: if it is taken, nothing starts and the message says what to do.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

DEFAULT_PORT = 5000
TRIES = 20  # 5000..5019


class PortTaken(Exception):
    pass


def port_free(host: str, port: int) -> bool:
    """Nothing listens there, and we could listen (as the development server will, with SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def choose_port(host: str, requested: int | None, default: int = DEFAULT_PORT) -> tuple[int, str | None]:
    """The port to serve on and, when it is not the one expected, a sentence that says why."""
    if requested is not None:
        if not port_free(host, requested):
            raise PortTaken(f"port {requested} on {host} is taken by another program; "
                            f"stop it or choose another port: make run PORT={requested + 1}")
        return requested, None
    for port in range(default, default + TRIES):
        if port_free(host, port):
            if port == default:
                return port, None
            return port, (f"port {default} is taken by another program: serving on {port} instead "
                          f"(`flask sandbox demo` and the mini-program follow; make run PORT=... to choose)")
    raise PortTaken(f"ports {default}-{default + TRIES - 1} on {host} are all taken: make run PORT=<a free port>")


def record_paths(instance_path: str, root: str) -> tuple[Path, Path]:
    """The record for the CLI (instance/dev-server.json) and for the mini-program (utils/dev-server.js);
    both are outside git. DEV_SERVER_JSON / DEV_SERVER_JS move them (the tests do, to leave the tree alone)."""
    record = os.environ.get("DEV_SERVER_JSON") or os.path.join(instance_path, "dev-server.json")
    script = os.environ.get("DEV_SERVER_JS") or os.path.join(root, "miniprogram", "utils", "dev-server.js")
    return Path(record), Path(script)


def remember(host: str, port: int, instance_path: str, root: str) -> None:
    record, script = record_paths(instance_path, root)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"url": f"http://{host}:{port}"}) + "\n")
    if script.parent.is_dir():  # host and port, not a URL: utils/config.js stays the one place that holds URLs
        script.write_text("// Written by `make run` (not in git): where it serves. utils/config.js reads it.\n"
                          f"module.exports = {{ host: {json.dumps(host)}, port: {int(port)} }}\n")


def remembered_url(instance_path: str, root: str) -> str:
    """The address `make run` last served at, else the default one."""
    record, _ = record_paths(instance_path, root)
    try:
        url = json.loads(record.read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        url = None
    return url if isinstance(url, str) and url.startswith("http") else f"http://127.0.0.1:{DEFAULT_PORT}"
