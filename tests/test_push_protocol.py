"""The message-push protocol layer (wechat/push.py) against the vectors WeChat and SDK test suites publish."""

import json
from pathlib import Path

import pytest

from miniapp_server.wechat import push
from miniapp_server.wechat.push import PushCipher, PushRejected

from .conftest import vector

VECTORS = {v["name"]: v for v in json.loads(
    (Path(__file__).parent / "fixtures" / "message-push-vectors.json").read_text())["vectors"]}
DOC = VECTORS["miniprogram_message_push_doc"]


def test_the_documented_url_check_answers_its_echostr():
    query = DOC["url_check"]["query"]
    assert push.check_url(query, DOC["token"]) == "4375120948345356249"
    with pytest.raises(PushRejected) as err:
        push.check_url({**query, "nonce": "1514711493"}, DOC["token"])
    assert err.value.code == "bad_signature" and err.value.status == 403
    with pytest.raises(PushRejected):
        push.check_url(query, "AAAAB")  # another Token


def test_the_documented_plain_json_push_verifies():
    case = DOC["plain_post"]
    body = json.dumps(case["body"]).encode()
    opened = push.open_push(case["query"], body, DOC["token"], None)
    assert opened.fields == case["body"] and opened.data_format == "json" and not opened.encrypted
    assert opened.timestamp == 1714037059 and opened.nonce == "486452656"
    with pytest.raises(PushRejected) as err:
        push.open_push({**case["query"], "signature": "0" * 40}, body, DOC["token"], None)
    assert err.value.code == "bad_signature"


def test_the_documented_safe_json_push_decrypts_and_the_same_bytes_come_out_of_our_encryption():
    case = DOC["safe_post"]
    cipher = PushCipher(DOC["encoding_aes_key"], DOC["appid"])
    opened = push.open_push(case["query"], json.dumps(case["body"]).encode(), DOC["token"], cipher)
    assert opened.encrypted and opened.data_format == "json"
    assert opened.fields == json.loads(case["message"])
    assert opened.fields["Event"] == "debug_demo" and opened.fields["debug_str"] == "hello world"
    # Our encryption, with the document's random prefix, gives the document's ciphertext byte for byte.
    assert cipher.encrypt(case["message"].encode(), case["random16"].encode()) == case["body"]["Encrypt"]
    assert push.signature(DOC["token"], "1714112445", "415670741", case["body"]["Encrypt"]) == \
        case["query"]["msg_signature"]


def test_the_documented_encrypted_reply():
    reply = DOC["reply"]
    cipher = PushCipher(DOC["encoding_aes_key"], DOC["appid"])
    encrypted = cipher.encrypt(reply["message"].encode(), reply["random16"].encode())
    assert encrypted == reply["Encrypt"]
    assert push.signature(DOC["token"], reply["timestamp"], reply["nonce"], encrypted) == reply["MsgSignature"]


def test_tencents_official_sample_with_the_abcdef_key_decrypts_its_xml():
    case = VECTORS["wxbizmsgcrypt_official_python_sample"]
    cipher = PushCipher(case["encoding_aes_key"], case["appid"])
    query = {"timestamp": case["timestamp"], "nonce": case["nonce"], "msg_signature": case["msg_signature"],
             "encrypt_type": "aes"}
    opened = push.open_push(query, case["from_xml"].encode(), case["token"], cipher)
    assert opened.data_format == "xml" and opened.encrypted
    assert opened.fields == {"ToUserName": "gh_10f6c3c3ac5a", "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
                             "CreateTime": "1409735668", "MsgType": "text", "Content": "abcdteT",
                             "MsgId": "6054768590064713728"}
    encrypted = case["from_xml"].split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    assert cipher.decrypt(encrypted).decode() == case["expected_message"]
    # Another mini-program's key owner cannot pass it off as theirs.
    with pytest.raises(PushRejected) as err:
        PushCipher(case["encoding_aes_key"], "wx0000000000000000").decrypt(encrypted)
    assert err.value.code == "wrong_appid"


def test_wxjava_encrypt_vector_with_the_abcdef_key():
    case = VECTORS["wxjava_wxcryptutil_encrypt"]
    cipher = PushCipher(case["encoding_aes_key"], case["appid"])
    assert cipher.encrypt(case["message"].encode("utf-8"), case["random16"].encode()) == case["expected_encrypt"]
    assert cipher.decrypt(case["expected_encrypt"]).decode("utf-8") == case["message"]


def test_the_shared_known_answer_push_vectors():
    enc = vector("push_safe_mode_encrypt_wechatpy")
    i = enc["inputs"]
    cipher = PushCipher(i["encoding_aes_key"], i["appid"])
    encrypted = cipher.encrypt(i["message"].encode(), i["random16"].encode())
    assert encrypted == enc["expected"]["Encrypt"]
    assert push.signature(i["token"], i["timestamp"], i["nonce"], encrypted) == enc["expected"]["MsgSignature"]
    dec = vector("push_safe_mode_decrypt_tencent_sample")
    i = dec["inputs"]
    assert push.signature(i["token"], i["timestamp"], i["nonce"], i["Encrypt"]) == i["msg_signature"]
    fields = push.parse_document(PushCipher(i["encoding_aes_key"], i["appid"]).decrypt(i["Encrypt"]))[1]
    assert fields["Content"] == dec["expected"]["Content"] and fields["MsgId"] == dec["expected"]["MsgId"]


def test_seal_then_open_round_trips_both_formats_and_modes():
    cipher = PushCipher("A" * 43, "wxba5fad812f8e6fb9")
    message = {"ToUserName": "gh_1", "FromUserName": "o-1", "CreateTime": 1, "MsgType": "event",
               "Event": "trade_manage_order_settlement", "merchant_trade_no": "n<o>&1"}
    for data_format in ("json", "xml"):
        for c in (None, cipher):
            query, body = push.seal_push(message, data_format, "tok", c, 1714112445, "12345")
            opened = push.open_push(query, body, "tok", c)
            assert opened.data_format == data_format and opened.encrypted is (c is not None)
            assert opened.fields["merchant_trade_no"] == "n<o>&1"
            assert opened.fields["Event"] == "trade_manage_order_settlement"
            if c is not None:
                assert b"trade_manage" not in body and query["encrypt_type"] == "aes"


@pytest.mark.parametrize("mutate, code", [
    (lambda q, b: ({**q, "msg_signature": "f" * 40}, b), "bad_signature"),
    (lambda q, b: ({k: v for k, v in q.items() if k != "msg_signature"}, b), "bad_signature"),
    (lambda q, b: ({**q, "timestamp": "1714112446"}, b), "bad_signature"),
    (lambda q, b: ({**q, "nonce": "x" * 65}, b), "bad_query"),
    (lambda q, b: ({**q, "timestamp": "soon"}, b), "bad_query"),
    (lambda q, b: (q, b.replace(b'"Encrypt":"', b'"Encrypt":"A')), "bad_signature"),  # tampered ciphertext
    (lambda q, b: (q, b'{"ToUserName": "gh_1", "MsgType": "event"}'), "encryption_required"),
    (lambda q, b: (q, b"[1, 2]"), "bad_body"),
    (lambda q, b: (q, b"\xff\xfe"), "bad_body"),
    (lambda q, b: (q, b"<xml><a>1</a"), "bad_body"),
    (lambda q, b: (q, b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><xml><Encrypt>&e;</Encrypt></xml>'),
     "bad_body"),
    (lambda q, b: (q, b"{" + b" " * push.MAX_PUSH_BODY + b"}"), "too_large"),
])
def test_forged_tampered_and_malformed_pushes_are_refused(mutate, code):
    cipher = PushCipher("A" * 43, "wxba5fad812f8e6fb9")
    query, body = push.seal_push({"ToUserName": "gh_1", "MsgType": "event", "Event": "x"}, "json", "tok", cipher,
                                 1714112445, "12345")
    query, body = mutate(query, body)
    with pytest.raises(PushRejected) as err:
        push.open_push(query, body, "tok", cipher)
    assert err.value.code == code


def test_a_ciphertext_that_verifies_but_is_garbage_inside_is_refused_not_crashed():
    cipher = PushCipher("A" * 43, "wxba5fad812f8e6fb9")
    for garbage in ("AAAA", "A" * 44, "////" * 11 + "=="):
        with pytest.raises(PushRejected) as err:
            cipher.decrypt(garbage)
        assert err.value.code == "bad_ciphertext"
    # Whole blocks that decrypt under another key: bad padding (or, rarely, a wrong appid), never an exception.
    other = PushCipher("B" * 43, "wxba5fad812f8e6fb9").encrypt(b'{"a":1}')
    with pytest.raises(PushRejected):
        cipher.decrypt(other)


def test_plain_mode_refuses_an_encrypted_push_and_malformed_keys_are_named_not_shown():
    query, body = push.seal_push({"MsgType": "event"}, "json", "tok", PushCipher("A" * 43, "wx1"), 1, "2")
    with pytest.raises(PushRejected) as err:
        push.open_push(query, body, "tok", None)
    assert err.value.code == "safe_mode_not_configured"
    for bad in ("A" * 42, "A" * 44, "A" * 42 + "=", "A" * 42 + "+"):
        assert push.check_encoding_aes_key(bad)
        with pytest.raises(ValueError) as exc:
            PushCipher(bad, "wx1")
        assert bad not in str(exc.value)
    assert push.check_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG") is None
    assert "A" * 43 not in repr(PushCipher("A" * 43, "wx1"))
