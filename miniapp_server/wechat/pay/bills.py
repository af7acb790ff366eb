"""WeChat Pay's daily bills (对账单): the trade bill and the fund-flow bill, downloaded and read as a stream.

The file is the same in v2 (`/pay/downloadbill`, `/pay/downloadfundflow`) and v3 (`/v3/bill/tradebill`,
`/v3/bill/fundflowbill`, then the file at `download_url`):

    交易时间,公众账号ID,商户号,...                 <- the header line (no backticks)
    `2019-07-25 08:35:41,`wx...,`1900000109,...    <- one line per trade or refund, every field after a backtick
    总交易单数,应结订单总金额,退款总金额,...         <- the summary's header
    `48,`5.76,`1.42,...                            <- the summary line

Columns differ between bill types (SUCCESS has no refund columns, REFUND adds 退款申请时间 and 退款成功时间, old
merchants' bills say 总金额 for 订单金额), so fields are read by their header's name, never by position.
Amounts are yuan with two decimals (fees with five, `0.04000`) and become integer fen without floats.

A download is streamed into a spooled temporary file (bounded memory; disk beyond a megabyte) while its
SHA-1 is computed, because nothing of a v3 bill may be believed before its hash checks out, and only then
read line by line (gunzipped on the fly when it is a gzip file). No Flask here.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import re
import tempfile
from dataclasses import dataclass
from typing import IO, Iterable, Iterator

from ..errors import WeChatError, WeChatUnavailable

GZIP_MAGIC = b"\x1f\x8b"
SPOOL_IN_MEMORY = 1024 * 1024  # beyond this a download goes to a temporary file
MAX_BILL_BYTES = 4 * 1024 ** 3  # a sanity bound on one download (WeChat's largest bills are far smaller)
CHUNK = 64 * 1024


class BillFormatError(ValueError):
    """The file is not a bill in WeChat's format (or was cut short)."""


class BillIntegrityError(WeChatError):
    """The downloaded file's hash is not the one WeChat announced: believe none of it."""

    api_code = "wechat_bill_corrupt"
    should_retry = True


class BillNotReady(WeChatUnavailable):
    """WeChat is still making that day's bill (v2 `Bill Creating`, v3 `STATEMENT_CREATING`): ask again later."""


# -- amounts ------------------------------------------------------------------------------------------

_AMOUNT = re.compile(r"([+-]?)([0-9]{1,13})(?:\.([0-9]{1,8}))?")


def to_fen(text: str) -> int:
    """`'6.00'` -> 600, `'-0.27000'` -> -27, `'0.0'` -> 0: exact, integer arithmetic only.

    Digits beyond the fen are rounded half up (WeChat rounds fees to the fen and pads them to five places).
    """
    value = text.strip().lstrip("`").strip()
    m = _AMOUNT.fullmatch(value)
    if not m:
        raise BillFormatError(f"not an amount in yuan: {value[:24]!r}")
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    fen = int(whole) * 100 + int((frac + "00")[:2])
    if len(frac) > 2 and frac[2] in "56789":
        fen += 1
    return -fen if sign == "-" else fen


def to_count(text: str) -> int:
    """A count in a summary line: `'48'`, or `'20.0'` as the fund-flow bill writes it."""
    value = text.strip().lstrip("`").strip()
    m = re.fullmatch(r"([0-9]{1,12})(?:\.0+)?", value)
    if not m:
        raise BillFormatError(f"not a count: {value[:24]!r}")
    return int(m.group(1))


# -- the file's lines ---------------------------------------------------------------------------------

def _fields(line: str) -> list[str]:
    """A data line's values: every field starts with a backtick (so Excel keeps long numbers as text);
    splitting on ',`' keeps a comma inside a value (an attach, a product name) in its field."""
    return line[1:].split(",`")


def _names(line: str) -> list[str]:
    # 收支金额（元） and 收支金额(元) both occur: one spelling for both.
    return [n.strip().replace("（", "(").replace("）", ")") for n in line.split(",")]


class BillReader:
    """Iterate over a bill's data lines as `{header name: value}`; once exhausted, `summary` holds the
    summary line the same way and `count` the number of data lines. Raises BillFormatError on a file
    that is not a bill or ends before its summary (a truncated download)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = lines
        self.header: list[str] = []
        self.summary: dict[str, str] = {}
        self.count = 0
        self.complete = False

    def __iter__(self) -> Iterator[dict[str, str]]:
        state, summary_names, number = "header", [], 0
        for raw in self._lines:
            number += 1
            line = raw.rstrip("\r\n")
            if state == "header":
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue  # WeChat's own samples have blank lines between the parts
            if not line.startswith("`"):
                if state == "header":
                    self.header, state = _names(line), "rows"
                elif state == "rows":
                    summary_names, state = _names(line), "summary"
                else:
                    raise BillFormatError(f"line {number}: an unexpected title line")
                continue
            values = _fields(line)
            if state == "rows":
                if len(values) != len(self.header):
                    raise BillFormatError(f"line {number}: {len(values)} fields where the header has "
                                          f"{len(self.header)}")
                self.count += 1
                yield dict(zip(self.header, (v.strip() for v in values)))
            elif state == "summary":
                if len(values) != len(summary_names):
                    raise BillFormatError(f"line {number}: the summary has {len(values)} fields for "
                                          f"{len(summary_names)} names")
                self.summary, state = dict(zip(summary_names, (v.strip() for v in values))), "end"
            else:
                raise BillFormatError(f"line {number}: data before the header or after the summary")
        if state != "end":
            raise BillFormatError("the bill ends before its summary line (cut short?)")
        self.complete = True


def _pick(row: dict[str, str], *names: str) -> str | None:
    for name in names:
        if name in row:
            return row[name]
    return None


def _fen(row: dict[str, str], *names: str) -> int | None:
    value = _pick(row, *names)
    return None if value is None or value == "" else to_fen(value)


# -- the trade bill -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TradeLine:
    """One line of a trade bill: a payment (trade_state SUCCESS) or a refund (REFUND), in fen."""

    time: str  # 交易时间, China time
    appid: str
    mch_id: str
    transaction_id: str
    out_trade_no: str
    trade_type: str
    trade_state: str  # SUCCESS, REFUND, REVOKED
    total_fen: int  # 订单金额 (总金额 in the old format): what the order cost, coupons included
    settlement_fen: int  # 应结订单金额
    refund_id: str
    out_refund_no: str
    refund_fen: int  # 申请退款金额 (what was asked; 退款金额 in the old format)
    refund_settlement_fen: int  # 退款金额
    refund_status: str  # SUCCESS, PROCESSING, FAIL, CHANGE (the bill's words, not the refund API's)
    fee_fen: int  # 手续费; negative on refunds (the fee given back)

    @property
    def is_payment(self) -> bool:
        return self.trade_state == "SUCCESS"

    @property
    def is_refund(self) -> bool:
        return self.trade_state == "REFUND"


def trade_line(row: dict[str, str]) -> TradeLine:
    try:
        settlement = _fen(row, "应结订单金额", "总金额")
        total = _fen(row, "订单金额", "总金额", "应结订单金额")
        refund_settlement = _fen(row, "退款金额") or 0
        return TradeLine(
            time=row.get("交易时间", ""), appid=row.get("公众账号ID", ""), mch_id=row.get("商户号", ""),
            transaction_id=row.get("微信订单号", ""), out_trade_no=row.get("商户订单号", ""),
            trade_type=row.get("交易类型", ""), trade_state=row.get("交易状态", ""),
            total_fen=total or 0, settlement_fen=settlement or 0,
            refund_id=_clean_zero(row.get("微信退款单号", "")), out_refund_no=_clean_zero(row.get("商户退款单号", "")),
            refund_fen=_fen(row, "申请退款金额") if "申请退款金额" in row else refund_settlement,
            refund_settlement_fen=refund_settlement, refund_status=row.get("退款状态", ""),
            fee_fen=_fen(row, "手续费") or 0)
    except BillFormatError as err:
        raise BillFormatError(f"{row.get('商户订单号', '?')}: {err}") from None


def _clean_zero(value: str) -> str:
    return "" if value in ("", "0") else value  # payment lines say 0 where a refund's numbers would be


@dataclass(frozen=True)
class TradeSummary:
    count: int  # 总交易单数
    settlement_fen: int  # 应结订单总金额 (总交易额 in the old format)
    refund_fen: int  # 退款总金额
    recharge_refund_fen: int  # 充值券退款总金额
    fee_fen: int  # 手续费总金额
    total_fen: int | None  # 订单总金额 (absent in the old format)
    applied_refund_fen: int | None  # 申请退款总金额


def trade_summary(summary: dict[str, str]) -> TradeSummary:
    return TradeSummary(
        count=to_count(summary.get("总交易单数", "0")),
        settlement_fen=_fen(summary, "应结订单总金额", "总交易额") or 0,
        refund_fen=_fen(summary, "退款总金额", "总退款金额") or 0,
        recharge_refund_fen=_fen(summary, "充值券退款总金额", "总代金券或立减优惠退款金额") or 0,
        fee_fen=_fen(summary, "手续费总金额") or 0,
        total_fen=_fen(summary, "订单总金额"),
        applied_refund_fen=_fen(summary, "申请退款总金额"))


# -- the fund-flow bill -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FundLine:
    time: str  # 记账时间
    wechat_no: str  # 微信支付业务单号
    flow_no: str  # 资金流水单号
    business: str  # 业务名称: 交易, 退款, 提现, ...
    business_type: str  # 业务类型: 交易, 退款, 扣除交易手续费, ...
    income: bool  # 收支类型 收入 (else 支出)
    amount_fen: int  # 收支金额(元)
    balance_fen: int  # 账户结余(元)
    voucher: str  # 业务凭证号: our out_trade_no / out_refund_no, or WeChat's


def fund_line(row: dict[str, str]) -> FundLine:
    direction = row.get("收支类型", "")
    if direction not in ("收入", "支出"):
        raise BillFormatError(f"收支类型 is {direction[:8]!r}, not 收入 or 支出")
    return FundLine(time=row.get("记账时间", ""), wechat_no=row.get("微信支付业务单号", ""),
                    flow_no=row.get("资金流水单号", ""), business=row.get("业务名称", ""),
                    business_type=row.get("业务类型", ""), income=direction == "收入",
                    amount_fen=_fen(row, "收支金额(元)") or 0, balance_fen=_fen(row, "账户结余(元)") or 0,
                    voucher=row.get("业务凭证号", ""))


@dataclass(frozen=True)
class FundSummary:
    count: int  # 资金流水总笔数
    income_count: int
    income_fen: int
    expense_count: int
    expense_fen: int


def fund_summary(summary: dict[str, str]) -> FundSummary:
    return FundSummary(count=to_count(summary.get("资金流水总笔数", "0")),
                       income_count=to_count(summary.get("收入笔数", "0")),
                       income_fen=_fen(summary, "收入金额") or 0,
                       expense_count=to_count(summary.get("支出笔数", "0")),
                       expense_fen=_fen(summary, "支出金额") or 0)


# -- the downloaded file ------------------------------------------------------------------------------

class BillFile:
    """A downloaded bill: its bytes spooled (in memory up to a megabyte, then on disk), read as lines."""

    def __init__(self, spool: IO[bytes], size: int, sha1: str) -> None:
        self._spool = spool
        self.size = size
        self.sha1 = sha1

    @classmethod
    def receive(cls, chunks: Iterable[bytes], expected_sha1: str | None = None) -> "BillFile":
        """Spool `chunks` while hashing them; with `expected_sha1`, refuse a file whose SHA-1 differs."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        digest, size = hashlib.sha1(), 0
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > MAX_BILL_BYTES:
                    raise WeChatUnavailable("the bill download is larger than any bill can be")
                digest.update(chunk)
                spool.write(chunk)
        except Exception:
            spool.close()
            raise
        sha1 = digest.hexdigest()
        if expected_sha1 is not None and not hmac.compare_digest(sha1, expected_sha1.strip().lower()):
            spool.close()
            raise BillIntegrityError("the bill's SHA-1 is not the one WeChat announced", "hash_mismatch")
        spool.seek(0)
        return cls(spool, size, sha1)

    @classmethod
    def from_bytes(cls, data: bytes) -> "BillFile":
        return cls.receive([data])

    def lines(self) -> Iterator[str]:
        """The bill's text lines, gunzipped on the fly when the file is gzip (v2 tar_type=GZIP, v3 likewise)."""
        self._spool.seek(0)
        magic = self._spool.read(2)
        self._spool.seek(0)
        raw: IO[bytes] = gzip.GzipFile(fileobj=self._spool, mode="rb") if magic == GZIP_MAGIC else self._spool
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
        try:
            yield from text
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise BillFormatError(f"the bill file is unreadable ({type(exc).__name__})") from None
        finally:
            try:
                text.detach()  # leave the spool open: the bill is read twice
            except ValueError:
                pass  # the file was closed before the reading was finished

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> "BillFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
