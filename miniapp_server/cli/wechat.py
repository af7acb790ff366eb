"""`flask wechat doctor`: every configured credential tried against WeChat, with what to do about each finding.

Exit codes: 0 nothing wrong (warnings allowed), 1 a finding is an error, 3 WeChat could not be asked.
"""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from ..logging_setup import run_id
from .orders import _emit

wechat_cli = AppGroup("wechat", help="Check the WeChat settings against WeChat itself.")

ERRORS, UNREACHABLE = 1, 3
MARK = {"ok": "ok  ", "warning": "WARN", "error": "FAIL", "skipped": "--  "}


@wechat_cli.command("doctor")
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """Try every credential with a harmless call; check certificates' expiry, callback URLs, trade management."""
    from ..services.doctor import ERROR, run_doctor

    with run_id():
        findings = [f.to_dict() for f in run_doctor()]

    def table(data):
        for f in data["findings"]:
            click.echo(f"[{MARK.get(f['level'], f['level'])}] {f['check']:<22} {f['message']}")
            if f["advice"] and f["level"] in ("warning", "error"):
                click.echo(f"       {'':<22} -> {f['advice']}")

    _emit({"findings": findings}, as_json, table)
    errors = [f for f in findings if f["level"] == ERROR]
    if any(not f["unreachable"] for f in errors):
        sys.exit(ERRORS)
    if errors:
        sys.exit(UNREACHABLE)
