"""The keys of WeChat Pay v3: the merchant's own, and WeChat's, by which its answers are checked.

WeChat signs its answers and notifications with one of two kinds of key, named by
the `Wechatpay-Serial` header:
- public-key mode (merchants who joined recently): one public key downloaded from the
  merchant platform, named by its id (`PUB_KEY_ID_...`), given as a file;
- platform certificates (older merchants): downloaded from `/v3/certificates`, each
  encrypted with the APIv3 key, named by the certificate's serial, rotated by WeChat.
While a merchant migrates from the second to the first, answers come signed either
way, so both are accepted side by side.

Certificates are cached in the shared store (every worker sees one download) and
refreshed under the store's lock: at most one download per `min_refresh_interval`
unless none is cached at all, so a stream of forged serials cannot make us hammer
WeChat. No Flask here: the store is anything with get/set/add/lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey

from ...errors import SignatureError, WeChatUnavailable
from ... import jsonlimits
from . import crypto, signing

log = logging.getLogger(__name__)

CERTIFICATES_TTL = 12 * 3600  # WeChat gives a new certificate well before the old one expires
MIN_REFRESH_INTERVAL = 60


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, or not the kind of key it should be."""


def _pem_bytes(source: str | bytes | Path) -> bytes:
    if isinstance(source, bytes):
        return source
    text = str(source)
    if "-----BEGIN" in text:
        return text.encode("ascii")
    try:
        return Path(text).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file ({exc.strerror})") from None


def load_private_key(source: str | bytes | Path) -> RsaKey:
    """The merchant's API private key (`apiclient_key.pem`), from PEM text or a path."""
    try:
        key = RSA.import_key(_pem_bytes(source))
    except (ValueError, IndexError, TypeError):
        raise KeyFileError("not an RSA private key in PEM") from None
    if not key.has_private():
        raise KeyFileError("this is a public key; the merchant's private key is needed")
    if key.size_in_bits() < 2048:
        raise KeyFileError("the merchant's key must be RSA 2048 or longer")
    return key


def load_public_key(source: str | bytes | Path) -> RsaKey:
    """WeChat Pay's public key (`pub_key.pem`) or a platform certificate, from PEM text or a path.

    pycryptodome's import_key reads an X.509 certificate's SubjectPublicKeyInfo itself,
    so no other library is needed for platform certificates.
    """
    try:
        key = RSA.import_key(_pem_bytes(source))
    except (ValueError, IndexError, TypeError):
        raise KeyFileError("not an RSA public key or certificate in PEM") from None
    return key.public_key()


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class PlatformCertificate:
    serial_no: str
    pem: str
    effective: float | None = None
    expires: float | None = None

    def usable(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def to_json(self) -> dict[str, Any]:
        return {"serial_no": self.serial_no, "pem": self.pem, "effective": self.effective, "expires": self.expires}


# Downloads `/v3/certificates` as it is, unverified: (answer headers, raw body).
CertificateFetcher = Callable[[], "tuple[Mapping[str, str], bytes]"]


class WeChatPayKeys:
    """Which public key a `Wechatpay-Serial` names: the public key, a platform certificate, or none."""

    def __init__(self, *, mchid: str, apiv3_key: str = "", public_key: RsaKey | None = None,
                 public_key_id: str = "", fetch_certificates: CertificateFetcher | None = None,
                 store: Any = None, certificates_ttl: float = CERTIFICATES_TTL,
                 min_refresh_interval: float = MIN_REFRESH_INTERVAL) -> None:
        if public_key is None and fetch_certificates is None:
            raise ValueError("WeChat Pay v3 needs its public key, platform certificates, or both")
        if public_key is not None and not public_key_id:
            raise ValueError("a WeChat Pay public key needs its id (PUB_KEY_ID_...)")
        self.mchid = mchid
        self.apiv3_key = apiv3_key
        self.public_key = public_key
        self.public_key_id = public_key_id
        self.fetch_certificates = fetch_certificates
        self.store = store
        self.certificates_ttl = certificates_ttl
        self.min_refresh_interval = min_refresh_interval
        self._certs: dict[str, tuple[PlatformCertificate, RsaKey]] = {}
        self._loaded_raw: str | None = None
        self._local_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"WeChatPayKeys(mchid={self.mchid!r}, public_key_id={self.public_key_id!r}, "
                f"certificates={self.uses_certificates})")

    @property
    def uses_certificates(self) -> bool:
        return self.fetch_certificates is not None

    @property
    def _cache_key(self) -> str:
        return f"wechatpay:v3:certificates:{self.mchid}"

    # -- lookup -------------------------------------------------------------------------------------

    def key_for(self, serial: str) -> RsaKey | None:
        if not serial or len(serial) > 128:
            return None
        if self.public_key is not None and signing.same(serial, self.public_key_id):
            return self.public_key
        if not self.uses_certificates:
            return None
        now = time.time()
        self._load_cached()
        found = self._find(serial, now)
        if found is None:
            # A serial we do not know: WeChat may have rotated its certificate. Download, at most so often.
            self.refresh(unknown_serial=serial)
            found = self._find(serial, now)
        return found

    def _find(self, serial: str, now: float) -> RsaKey | None:
        for known, (cert, key) in self._certs.items():
            if signing.same(known, serial) and cert.usable(now):
                return key
        return None

    def request_serial(self) -> str:
        """The serial a request's `Wechatpay-Serial` names: the public key's id, else the usable platform
        certificate that lives longest (from the cache: never a download for a header)."""
        if self.public_key is not None:
            return self.public_key_id
        if not self.uses_certificates:
            return ""
        self._load_cached()
        now = time.time()
        usable = [cert for cert, _ in self._certs.values() if cert.usable(now)]
        return max(usable, key=lambda c: float("inf") if c.expires is None else c.expires).serial_no if usable else ""

    def certificates(self) -> list[PlatformCertificate]:
        self._load_cached()
        return [cert for cert, _ in self._certs.values()]

    # -- the cache in the store ---------------------------------------------------------------------

    def _load_cached(self) -> None:
        raw = self.store.get(self._cache_key) if self.store is not None else self._loaded_raw
        if raw is None or raw == self._loaded_raw:
            return
        self._install(raw)

    def _install(self, raw: str) -> None:
        try:
            items = jsonlimits.loads(raw)
            certs = {}
            for item in items:
                cert = PlatformCertificate(item["serial_no"], item["pem"], item.get("effective"), item.get("expires"))
                certs[cert.serial_no] = (cert, load_public_key(cert.pem))
        except (ValueError, KeyError, TypeError, KeyFileError):
            log.warning("the cached WeChat Pay platform certificates are unreadable; downloading again")
            return
        self._certs, self._loaded_raw = certs, raw

    @contextmanager
    def _lock(self) -> Iterator[None]:
        if self.store is None:
            with self._local_lock:
                yield
        else:
            with self.store.lock(f"wechatpay-v3-certificates:{self.mchid}", timeout=30, wait=15):
                yield

    def refresh(self, unknown_serial: str | None = None, force: bool = False) -> list[PlatformCertificate]:
        """Download the platform certificates (one worker at a time) unless a fresh copy is cached."""
        if not self.uses_certificates:
            return []
        with self._lock():
            self._load_cached()  # someone may have just downloaded them while we waited
            if unknown_serial is not None and self._find(unknown_serial, time.time()) is not None:
                return self.certificates()
            if self._certs and not force and not self._may_refresh():
                return self.certificates()
            certs = self._download()
            raw = json.dumps([c.to_json() for c in certs])
            if self.store is not None:
                self.store.set(self._cache_key, raw, ttl=self.certificates_ttl)
            self._install(raw)
            log.info("WeChat Pay platform certificates refreshed: %s", ", ".join(c.serial_no for c in certs))
            return certs

    def _may_refresh(self) -> bool:
        if self.store is None:
            return True
        return bool(self.store.add(f"wechatpay:v3:certificates-refreshed:{self.mchid}", "1",
                                   ttl=self.min_refresh_interval))

    def _download(self) -> list[PlatformCertificate]:
        assert self.fetch_certificates is not None
        headers, body = self.fetch_certificates()
        try:
            data = jsonlimits.loads(body)
            items = data["data"]
            assert isinstance(items, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise WeChatUnavailable("WeChat Pay's /v3/certificates answer is unreadable") from None
        certs: list[PlatformCertificate] = []
        keys: dict[str, RsaKey] = {}
        for item in items:
            try:
                pem = crypto.decrypt_certificate(item["encrypt_certificate"], self.apiv3_key)
                cert = PlatformCertificate(str(item["serial_no"]), pem, _parse_time(item.get("effective_time")),
                                           _parse_time(item.get("expire_time")))
                keys[cert.serial_no] = load_public_key(pem)
            except (crypto.DecryptError, KeyError, TypeError, KeyFileError):
                # Only the holder of our APIv3 key can make a certificate that decrypts: the rest we ignore.
                raise SignatureError("a platform certificate does not decrypt with our APIv3 key",
                                     "bad_certificate") from None
            certs.append(cert)
        if not certs:
            raise WeChatUnavailable("WeChat Pay's /v3/certificates answer lists no certificate")

        # The answer itself is signed by one of the certificates it carries (or by the public key).
        def lookup(serial: str) -> RsaKey | None:
            if self.public_key is not None and signing.same(serial, self.public_key_id):
                return self.public_key
            return next((k for s, k in keys.items() if signing.same(s, serial)), None)

        signing.verify_answer(headers, body, lookup)
        return certs
