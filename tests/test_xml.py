"""The XML codec: what it writes is escaped; what it reads is defended."""

import pytest

from miniapp_server.wechat.pay import xmlcodec


def test_round_trip_escapes_markup():
    doc = {"body": "a<b>&c]]></xml>", "total_fee": 1}
    raw = xmlcodec.dumps(doc)
    assert b"<b>" not in raw and raw.count(b"</xml>") == 1
    assert xmlcodec.loads(raw) == {"body": "a<b>&c]]></xml>", "total_fee": "1"}


def test_cdata_and_empty_fields_are_read():
    raw = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><attach></attach><x>1</x></xml>"
    assert xmlcodec.loads(raw) == {"return_code": "SUCCESS", "attach": "", "x": "1"}


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<xml><a>&lol3;</a></xml>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><a>&xxe;</a></xml>"""


@pytest.mark.parametrize("body, reason", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"not xml at all", "well-formed"),
    (b"<xml><a>1</a>", "well-formed"),
    (b"<xml><a>1</a></xm", "well-formed"),
    (BILLION_LAUGHS, "DTD"),
    (XXE, "DTD"),
    (b"<root><a>1</a></root>", "root"),
    (b"<xml><a><b>nested</b></a></xml>", "plain"),
    (b"<xml>" + b"<a>x</a>" * 200_000 + b"</xml>", "too large"),
])
def test_hostile_or_broken_bodies_are_refused(body, reason):
    with pytest.raises(xmlcodec.XMLError) as err:
        xmlcodec.loads(body)
    assert reason.lower() in str(err.value).lower()


def test_entity_without_doctype_is_refused():
    with pytest.raises(xmlcodec.XMLError):
        xmlcodec.loads(b"<xml><a>&undefined;</a></xml>")


UTF16_BILLION_LAUGHS = ('<?xml version="1.0" encoding="UTF-16"?>' + BILLION_LAUGHS.decode().split("?>", 1)[1])


@pytest.mark.parametrize("body", [
    UTF16_BILLION_LAUGHS.encode("utf-16"),  # read as UTF-8 whatever it says: its bytes are not XML then
    UTF16_BILLION_LAUGHS.encode("utf-16-le"),  # no BOM: expat alone would have detected UTF-16
    UTF16_BILLION_LAUGHS,  # the DTD itself
])
def test_a_dtd_cannot_hide_behind_another_encoding(body):
    for read in (xmlcodec.loads, xmlcodec.parse_tree):
        with pytest.raises(xmlcodec.XMLError):
            read(body)


def test_a_field_twice_or_with_attributes_is_refused_and_values_are_trimmed():
    with pytest.raises(xmlcodec.XMLError, match="twice"):
        xmlcodec.loads(b"<xml><total_fee>1</total_fee><total_fee>100</total_fee></xml>")
    with pytest.raises(xmlcodec.XMLError, match="plain"):
        xmlcodec.loads(b'<xml><total_fee currency="CNY">1</total_fee></xml>')
    assert xmlcodec.loads(b"<xml>\n  <a> 1 </a>\n  <b><![CDATA[ x ]]></b>\n</xml>") == {"a": "1", "b": "x"}


def test_a_document_is_read_as_utf8_whatever_it_declares():
    doc = '<?xml version="1.0" encoding="ISO-8859-1"?><xml><body>商品</body></xml>'.encode("utf-8")
    assert xmlcodec.loads(doc) == {"body": "商品"}


def test_dumps_of_a_refund_req_info_root():
    assert xmlcodec.loads(xmlcodec.dumps({"a": "<&>"}, root_name="root"), root_name="root") == {"a": "<&>"}
