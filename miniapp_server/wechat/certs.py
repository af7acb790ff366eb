"""What an operator needs to know of an X.509 certificate (the merchant's apiclient_cert.pem, WeChat Pay's
platform certificates): its serial, as WeChat writes it (upper-case hex), and when it is valid. No Flask.

Read with pycryptodome's DER decoder (already a dependency) rather than a second crypto library: only the
TBSCertificate's serialNumber and validity are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from Crypto.IO import PEM
from Crypto.Util.asn1 import DerSequence


class CertificateError(ValueError):
    """Not a PEM X.509 certificate we can read."""


@dataclass(frozen=True)
class CertificateInfo:
    serial_no: str  # upper-case hex, as WECHAT_MCH_CERT_SERIAL and Wechatpay-Serial write it
    not_before: datetime
    not_after: datetime

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def _time(der: bytes) -> datetime:
    tag, length = der[0], der[1]
    text = der[2:2 + length].decode("ascii")
    if tag == 0x17:  # UTCTime: YYMMDDHHMMSSZ (years 1950-2049)
        return datetime.strptime(text, "%y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)
    if tag == 0x18:  # GeneralizedTime: YYYYMMDDHHMMSSZ
        return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)
    raise CertificateError("a validity time is neither UTCTime nor GeneralizedTime")


def certificate_info(pem: str | bytes) -> CertificateInfo:
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise CertificateError("no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    try:
        der, _marker, _enc = PEM.decode(text[start:text.index("-----END CERTIFICATE-----") + 25])
        tbs = DerSequence().decode(DerSequence().decode(der)[0])
        first = 1 if isinstance(tbs[0], bytes) and tbs[0][:1] == b"\xa0" else 0  # [0] version, when present
        serial = tbs[first]
        validity = DerSequence().decode(tbs[first + 3])
        return CertificateInfo(format(serial, "X"), _time(validity[0]), _time(validity[1]))
    except CertificateError:
        raise
    except (ValueError, IndexError, TypeError, UnicodeDecodeError) as exc:
        raise CertificateError(f"not a readable X.509 certificate ({type(exc).__name__})") from None


def read_certificate(path: str | Path) -> CertificateInfo:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read it ({exc.strerror or type(exc).__name__})") from None
    return certificate_info(data)
