"""The sandbox's own RSA keys for WeChat Pay v3, made at first use and shared by every process.

Three key pairs, as at WeChat: the merchant's API key (its private half is what the
backend signs with: `apiclient_key.pem`; the sandbox checks with the public half, as
WeChat does with the uploaded API certificate), WeChat Pay's public key (public-key
mode: `pub_key.pem` and its id) and a platform certificate (the older mode, served by
`/v3/certificates`). They live in one directory, `instance/sandbox-v3/` by default
(outside git), created whole or not at all: every file is written into a temporary
directory that is then renamed into place, so two workers racing at first start end
up with one set of keys between them.

Only for the sandbox: a real deployment's keys come from WeChat's merchant platform.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Signature import pkcs1_15

MERCHANT_KEY = "apiclient_key.pem"
MERCHANT_SERIAL = "apiclient_serial.txt"
PUBLIC_KEY = "pub_key.pem"
PUBLIC_KEY_ID = "pub_key_id.txt"
PUBLIC_KEY_PRIVATE = "wechatpay_pub_key_private.pem"  # what WeChat keeps: the sandbox signs with it
PLATFORM_CERT = "wechatpay_platform_cert.pem"
PLATFORM_PRIVATE = "wechatpay_platform_private.pem"
PLATFORM_SERIAL = "wechatpay_platform_serial.txt"


@dataclass(frozen=True)
class SandboxV3Keys:
    directory: Path
    merchant_private_key: RsaKey
    merchant_serial: str
    public_key_private: RsaKey
    public_key_id: str
    platform_private: RsaKey
    platform_serial: str
    platform_cert_pem: str
    platform_not_before: datetime
    platform_not_after: datetime

    def __repr__(self) -> str:
        return f"SandboxV3Keys({str(self.directory)!r}, public_key_id={self.public_key_id!r})"

    @property
    def merchant_key_path(self) -> Path:
        return self.directory / MERCHANT_KEY

    @property
    def public_key_path(self) -> Path:
        return self.directory / PUBLIC_KEY


# -- a minimal self-signed X.509 v3 certificate (DER by hand; pycryptodome reads it back) ------------

def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _oid(dotted: str) -> bytes:
    nums = [int(x) for x in dotted.split(".")]
    out = bytes([40 * nums[0] + nums[1]])
    for n in nums[2:]:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, out)


def _int(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")  # a leading zero keeps it positive
    return _tlv(0x02, raw)


def _name(common_name: str) -> bytes:
    rdn = lambda oid, text: _tlv(0x31, _seq(_oid(oid), _tlv(0x0C, text.encode("utf-8"))))  # noqa: E731
    return _seq(rdn("2.5.4.6", "CN"), rdn("2.5.4.10", "Tenpay.com (sandbox)"), rdn("2.5.4.3", common_name))


def _utc(dt: datetime) -> bytes:
    return _tlv(0x17, dt.astimezone(timezone.utc).strftime("%y%m%d%H%M%SZ").encode("ascii"))


def self_signed_certificate(key: RsaKey, serial: int, common_name: str, not_before: datetime,
                            not_after: datetime) -> str:
    sha256_rsa = _seq(_oid("1.2.840.113549.1.1.11"), _tlv(0x05, b""))
    tbs = _seq(
        _tlv(0xA0, _int(2)),  # [0] EXPLICIT version v3
        _int(serial), sha256_rsa, _name(common_name), _seq(_utc(not_before), _utc(not_after)),
        _name(common_name), key.public_key().export_key("DER"),
    )
    signature = pkcs1_15.new(key).sign(SHA256.new(tbs))
    der = _seq(tbs, sha256_rsa, _tlv(0x03, b"\x00" + signature))
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


# -- made once, then read ----------------------------------------------------------------------------

def _generate_into(directory: Path, mch_id: str) -> None:
    merchant, pub, platform = RSA.generate(2048), RSA.generate(2048), RSA.generate(2048)
    serial = secrets.randbits(159) | (1 << 158)  # 40 hex digits, like WeChat's serials
    now = datetime.now(timezone.utc).replace(microsecond=0)
    not_before, not_after = now - timedelta(days=1), now + timedelta(days=5 * 365)
    files = {
        MERCHANT_KEY: merchant.export_key("PEM", pkcs=8).decode("ascii"),
        MERCHANT_SERIAL: hashlib.sha1(merchant.public_key().export_key("DER")).hexdigest().upper(),
        PUBLIC_KEY: pub.public_key().export_key("PEM").decode("ascii"),
        PUBLIC_KEY_ID: "PUB_KEY_ID_01" + (mch_id + "0" * 10)[:10] + str(secrets.randbelow(10**12)).zfill(12),
        PUBLIC_KEY_PRIVATE: pub.export_key("PEM", pkcs=8).decode("ascii"),
        PLATFORM_CERT: self_signed_certificate(platform, serial, "Tenpay.com Root CA sandbox", not_before, not_after),
        PLATFORM_PRIVATE: platform.export_key("PEM", pkcs=8).decode("ascii"),
        PLATFORM_SERIAL: f"{serial:040X}",
    }
    for name, text in files.items():
        path = directory / name
        path.write_text(text + ("" if text.endswith("\n") else "\n"))
        os.chmod(path, 0o600)


def ensure_keys(directory: str | os.PathLike, mch_id: str) -> SandboxV3Keys:
    """The keys in `directory`, made there first if it holds none (atomically, safe across processes)."""
    target = Path(directory)
    if not (target / PLATFORM_SERIAL).exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".sandbox-v3-", dir=target.parent))
        try:
            _generate_into(staging, mch_id)
            try:
                os.rename(staging, target)  # fails if another process got there first: theirs stand
            except OSError:
                if not (target / PLATFORM_SERIAL).exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return load_keys(target)


def load_keys(directory: Path) -> SandboxV3Keys:
    read = lambda name: (directory / name).read_text().strip()  # noqa: E731
    cert = read(PLATFORM_CERT) + "\n"
    not_before, not_after = _validity(cert)
    return SandboxV3Keys(
        directory=directory, merchant_private_key=RSA.import_key(read(MERCHANT_KEY)),
        merchant_serial=read(MERCHANT_SERIAL), public_key_private=RSA.import_key(read(PUBLIC_KEY_PRIVATE)),
        public_key_id=read(PUBLIC_KEY_ID), platform_private=RSA.import_key(read(PLATFORM_PRIVATE)),
        platform_serial=read(PLATFORM_SERIAL), platform_cert_pem=cert,
        platform_not_before=not_before, platform_not_after=not_after,
    )


def _validity(cert_pem: str) -> tuple[datetime, datetime]:
    """notBefore and notAfter of a certificate made by `self_signed_certificate` (two UTCTimes in a row)."""
    der = base64.b64decode("".join(line for line in cert_pem.splitlines() if "-----" not in line))
    i = der.find(b"\x17\x0d")
    first, second = der[i + 2:i + 15].decode(), der[i + 17:i + 30].decode()
    parse = lambda s: datetime.strptime(s, "%y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)  # noqa: E731
    return parse(first), parse(second)
