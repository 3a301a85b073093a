"""Personal data at rest: AES-GCM encryption, keyed-hash lookup, masking.

ID-card and phone numbers are stored encrypted (never in clear) next to an HMAC of the
normalized value, so an exact lookup ("who is calling from this number?") is an index hit
without decrypting anything. Both keys are derived from one master key with HKDF, so the lookup
hashes are useless to someone who has the database but not the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from store.private import FILE_MODE, create_private, private_dir

_NONCE_BYTES = 12


class PiiKeyError(Exception):
    """The PII master key is missing, malformed, or not the one the data was written with."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


class PiiVault:
    def __init__(self, master_key: bytes):
        if len(master_key) != 32:
            raise PiiKeyError("the PII key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(_derive(master_key, b"jiayi-hotline pii encryption v1"))
        self._hash_key = _derive(master_key, b"jiayi-hotline pii lookup v1")

    @classmethod
    def from_base64(cls, text: str) -> PiiVault:
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except (binascii.Error, ValueError):
            raise PiiKeyError("the PII key is not valid base64") from None

    def encrypt(self, kind: str, value: str) -> bytes:
        """Ciphertext bound to its kind (an ID number cannot be passed off as a phone)."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode(), kind.encode())

    def decrypt(self, kind: str, blob: bytes) -> str:
        try:
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], kind.encode()).decode()
        except InvalidTag:
            raise PiiKeyError(f"cannot decrypt a stored {kind}: wrong PII key?") from None

    def lookup_hash(self, kind: str, normalized_value: str) -> bytes:
        return hmac.new(self._hash_key, f"{kind}:{normalized_value}".encode(), hashlib.sha256).digest()


def load_or_create_key(configured: str, data_dir: Path) -> str:
    """The configured key, or the one kept in data_dir/pii.key (created with mode 0600)."""
    if configured:
        return configured
    path = data_dir / "pii.key"
    if path.exists():
        if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
            os.chmod(path, FILE_MODE)  # a key copied in by hand with the umask's mode
        return path.read_text().strip()
    private_dir(data_dir)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    with create_private(path, "x") as f:
        f.write(key + "\n")
    return key


def mask_phone(phone: str) -> str:
    """13812345678 -> 138****5678; short numbers keep only their last two digits."""
    if len(phone) >= 11:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    return "*" * max(len(phone) - 2, 0) + phone[-2:]


# Text with this many digits may be a phone (a local landline has 7) or part of an ID number;
# fewer is no one's number (an extension such as 1001, a typo such as 12345).
PII_DIGITS = 7


def mask_if_pii(text: str) -> str:
    """`text` masked when it could be a phone or ID-card number, as typed otherwise.

    A bad-input message quotes what was typed: '138001380x' is still most of someone's mobile
    and is masked, 'abc' or 'tomorrow' is nobody's and is shown, so the operator sees the typo.
    """
    digits = sum(c.isdigit() for c in text)
    if digits < PII_DIGITS:
        return text
    compact = text.strip()
    if len(compact) >= 15 and compact[:14].isdigit():  # ID-number-like (15/18 characters)
        return mask_id_number(compact)
    return mask_phone(compact)


def mask_id_number(id_number: str) -> str:
    """120101199001011234 -> 1201*************4; a short mistyped value is masked whole.

    Only the province and city (known from the district anyway) and the check character show:
    with the sex in clear, an ID number so masked stays one of ≥ 1 000 candidates even when the
    birth date is known to within a few weeks (docs/privacy.md). The birth date itself is never
    shown in clear beside it.
    """
    if len(id_number) < 15:
        return "*" * len(id_number)
    return id_number[:4] + "*" * (len(id_number) - 5) + id_number[-1:]
