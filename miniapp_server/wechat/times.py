"""WeChat Pay's times: `yyyyMMddHHmmss` in China Standard Time (UTC+8)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

CHINA = timezone(timedelta(hours=8))


def china_now() -> datetime:
    return datetime.now(CHINA)


def wechat_time(dt: datetime) -> str:
    return dt.astimezone(CHINA).strftime("%Y%m%d%H%M%S")


def parse_wechat_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=CHINA)
    except (TypeError, ValueError):
        return None
