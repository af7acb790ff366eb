"""WeChat's bill format, read from WeChat's own published samples (tests/fixtures/bills/README.md names them)."""

from __future__ import annotations

import gzip
import hashlib
import tracemalloc
from pathlib import Path

import pytest

from miniapp_server.wechat.pay import bills

FIXTURES = Path(__file__).parent / "fixtures" / "bills"


def read(name: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    with bills.BillFile.from_bytes((FIXTURES / name).read_bytes()) as file:
        reader = bills.BillReader(file.lines())
        rows = list(reader)
    return rows, reader.summary


@pytest.mark.parametrize("text, fen", [("6.00", 600), ("`0.01", 1), ("0.04000", 4), ("-0.27000", -27), ("0.0", 0),
                                       ("1299.02", 129902), ("7.79000", 779), ("0.00500", 1), ("0.00499", 0),
                                       ("0", 0), ("20.0", 2000)])
def test_yuan_become_fen_exactly(text, fen):
    assert bills.to_fen(text) == fen


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "١٢.٠٠", "1e2", "0x10", "12,00"])
def test_what_is_not_an_amount_is_refused(text):
    with pytest.raises(bills.BillFormatError):
        bills.to_fen(text)


def test_the_all_bill_of_wxjava():
    rows, summary = read("tradebill_all_wxjava.csv")
    assert len(rows) == 1
    line = bills.trade_line(rows[0])
    assert (line.time, line.trade_type, line.trade_state) == ("2019-07-25 08:35:41", "JSAPI", "SUCCESS")
    assert (line.total_fen, line.settlement_fen, line.fee_fen, line.refund_fen) == (600, 600, 4, 0)
    assert line.is_payment and not line.is_refund
    assert (line.refund_id, line.out_refund_no) == ("", "")  # '0' on a payment line means none
    assert rows[0]["费率备注"] == ""
    s = bills.trade_summary(summary)
    assert (s.count, s.settlement_fen, s.refund_fen, s.recharge_refund_fen, s.fee_fen, s.total_fen,
            s.applied_refund_fen) == (48, 576, 142, 0, 1, 576, 142)


def test_the_success_bill_has_no_refund_columns():
    rows, summary = read("tradebill_success_wxjava.csv")
    assert "微信退款单号" not in rows[0]
    line = bills.trade_line(rows[0])
    assert (line.total_fen, line.fee_fen, line.refund_fen) == (1, 0, 0)
    assert bills.trade_summary(summary).count == 31  # the summary line ends the file without a newline


def test_the_refund_bill():
    rows, summary = read("tradebill_refund_wxjava.csv")
    line = bills.trade_line(rows[0])
    assert line.is_refund and line.refund_status == "SUCCESS"
    assert (line.refund_fen, line.refund_settlement_fen, line.total_fen) == (1, 1, 0)
    assert rows[0]["退款成功时间"] == "2019-07-23 20:53:40"
    s = bills.trade_summary(summary)
    assert (s.count, s.refund_fen, s.fee_fen, s.applied_refund_fen) == (4, 202, -2, 202)


def test_the_old_format_of_wechats_own_page():
    rows, summary = read("tradebill_v2_doc_2014.csv")
    lines = [bills.trade_line(r) for r in rows]
    assert [(x.out_trade_no, x.transaction_id, x.total_fen) for x in lines] == [
        ("1415640626", "1001690740201411100005734289", 1), ("1415635270", "1002780740201411100005729794", 1)]
    s = bills.trade_summary(summary)
    assert (s.count, s.settlement_fen, s.total_fen) == (2, 2, None)  # 总交易额; no 订单总金额 in the old format


def test_a_v3_trade_bill_adds_up():
    rows, summary = read("tradebill_v3_native.csv")
    lines = [bills.trade_line(r) for r in rows]
    s = bills.trade_summary(summary)
    assert s.count == len(lines) == 3
    assert sum(x.total_fen for x in lines) == s.total_fen == 3
    assert lines[0].out_trade_no == "S20210128170702357723"
    assert rows[0]["商户数据包"] == "cipher code"


def test_the_fund_flow_samples():
    rows, summary = read("fundflow_doc.csv")  # with the blank lines of WeChat's page
    line = bills.fund_line(rows[0])
    assert (line.business, line.income, line.amount_fen, line.balance_fen) == ("退款", False, 2, 17)
    assert line.voucher == "REF4200000068201801293084726067"
    s = bills.fund_summary(summary)
    assert (s.count, s.income_count, s.income_fen, s.expense_count, s.expense_fen) == (20, 17, 35, 3, 18)
    rows, summary = read("fundflow_v3.csv")  # 收支金额(元) with ASCII parentheses
    assert [bills.fund_line(r).amount_fen for r in rows] == [1, 1]
    assert bills.fund_summary(summary).expense_fen == 2


def test_gzip_and_crlf_and_a_bom_read_the_same():
    raw = (FIXTURES / "tradebill_v3_native.csv").read_bytes()
    plain = read("tradebill_v3_native.csv")
    for variant in (gzip.compress(raw), b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n")):
        with bills.BillFile.from_bytes(variant) as file:
            reader = bills.BillReader(file.lines())
            assert (list(reader), reader.summary) == plain


def test_a_comma_inside_a_value_stays_in_its_field():
    text = ("交易时间,微信订单号,商户订单号,交易状态,订单金额,商户数据包\n"
            '`2024-01-01 10:00:00,`42,`A1,`SUCCESS,`1.00,`{"a":1,"b":2}\n'
            "总交易单数,订单总金额\n`1,`1.00\n")
    rows = list(bills.BillReader(text.splitlines(keepends=True)))
    assert rows[0]["商户数据包"] == '{"a":1,"b":2}'


@pytest.mark.parametrize("text", [
    "",  # nothing at all
    "交易时间,商户订单号\n`2024-01-01,`A1\n",  # cut before the summary
    "交易时间,商户订单号\n`2024-01-01,`A1,`extra\n总交易单数\n`1\n",  # a line with more fields than the header
    "`2024-01-01,`A1\n",  # no header
    "交易时间,商户订单号\n`2024-01-01,`A1\n总交易单数\n`1\n`2024-01-02,`A2\n",  # data after the summary
])
def test_what_is_not_a_whole_bill_is_refused(text):
    with pytest.raises(bills.BillFormatError):
        list(bills.BillReader(text.splitlines(keepends=True)))


def test_the_announced_hash_is_checked_on_the_bytes_received():
    raw = gzip.compress((FIXTURES / "tradebill_v3_native.csv").read_bytes())
    good = hashlib.sha1(raw).hexdigest()
    with bills.BillFile.receive([raw[:10], raw[10:]], expected_sha1=good.upper()) as file:
        assert file.sha1 == good and file.size == len(raw)
    with pytest.raises(bills.BillIntegrityError):
        bills.BillFile.receive([raw[:-1] + bytes([raw[-1] ^ 1])], expected_sha1=good)


def _big_bill(lines: int) -> bytes:
    header = (FIXTURES / "tradebill_all_wxjava.csv").read_text().splitlines()[0]
    row = ("`2019-07-25 08:35:41,`wx2421b1c4370ec43b,`1900000109,`0,`,`4200000001{n:018d},`ORDER{n:027d},"
           "`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,`6.00,`0.00,`0,`0,`0.00,`0.00,`,`,"
           "`拿铁咖啡 Latte,`rid:0123456789abcdef,`0.04000,`0.60%,`6.00,`0.00,`")
    body = "\n".join(row.format(n=n) for n in range(lines))
    fees = f"{lines * 4 // 100}.{lines * 4 % 100:02d}000"
    summary = f"总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n" \
              f"`{lines},`{lines * 6}.00,`0.00,`0.00,`{fees},`{lines * 6}.00,`0.00\n"
    return gzip.compress((header + "\n" + body + "\n" + summary).encode("utf-8"), compresslevel=1)


def test_a_100000_line_bill_is_read_in_bounded_memory():
    raw = _big_bill(100_000)
    chunks = [raw[i:i + 65536] for i in range(0, len(raw), 65536)]
    del raw
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with bills.BillFile.receive(iter(chunks), expected_sha1=None) as file:
            reader = bills.BillReader(file.lines())
            total = fees = 0
            for row in reader:
                line = bills.trade_line(row)
                total += line.total_fen
                fees += line.fee_fen
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    summary = bills.trade_summary(reader.summary)
    assert reader.count == summary.count == 100_000
    assert total == summary.total_fen == 60_000_000 and fees == summary.fee_fen == 400_000
    # The uncompressed bill is ~30 MB; spooled to disk beyond 1 MB and read a line at a time, the
    # reading never holds more than a few megabytes (the spool's in-memory part, gzip's window, a line).
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes"
