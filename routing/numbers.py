"""Phone and resident ID-card numbers: normalization and validation (pure functions).

A number is normalized once, at the edge (CSV import, the calling number of a SIP INVITE, a CLI
argument), and only the normalized form is hashed or stored, so 138-1234-5678, +86 13812345678
and 13812345678 find the same resident. Error messages quote rejected text masked when it could be
somebody's number (store.pii.mask_if_pii): they end up in logs and CSV reports, and a mistyped
number is still somebody's number; text with hardly any digits ('abc') is shown as typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from store.pii import mask_if_pii

_SEPARATORS = re.compile(r"[\s\-()（）]")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")
# Area code 0 + 2–3 digits, subscriber number 7–8 digits.
_LANDLINE = re.compile(r"^0[1-9]\d{8,10}$")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


class InvalidNumber(ValueError):
    """The text is not a phone or ID-card number; the message says why."""


def normalize_phone(text: str) -> str:
    """The canonical form of a mainland mobile or landline number, or InvalidNumber."""
    raw = text.strip()
    shown = repr(mask_if_pii(raw))
    digits = _SEPARATORS.sub("", raw)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    if not digits:
        raise InvalidNumber("empty phone number")
    if not digits.isdigit() or not digits.isascii():
        raise InvalidNumber(f"phone number {shown} has characters other than digits")
    if _MOBILE.match(digits) or _LANDLINE.match(digits):
        return digits
    if digits.startswith("1"):
        raise InvalidNumber(f"mobile number {shown} must have 11 digits starting 13–19")
    raise InvalidNumber(f"{shown} is neither a mobile (11 digits) nor a landline with area code")


@dataclass(frozen=True)
class IdCard:
    number: str
    birth_date: date
    sex: str  # 'M' or 'F', from the 17th digit


def id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of GB 11643-1999."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def parse_id_number(text: str) -> IdCard:
    """Validate an 18-character resident ID-card number (居民身份证号码)."""
    number = text.strip().upper()
    if len(number) != 18:
        raise InvalidNumber(f"ID number must have 18 characters, not {len(number)}")
    if not (number[:17].isdigit() and number[:17].isascii()) or not (
        number[17].isdigit() or number[17] == "X"
    ):
        raise InvalidNumber("ID number must be 17 digits followed by a digit or X")
    try:
        birth = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidNumber("ID number has an impossible birth date") from None
    if birth.year < 1900:
        raise InvalidNumber("ID number has an impossible birth date")
    if number[17] != id_check_char(number[:17]):
        raise InvalidNumber("ID number check digit is wrong (mistyped?)")
    return IdCard(number, birth, "M" if int(number[16]) % 2 else "F")


def looks_like_resident_id(text: str) -> bool:
    """A resident's id in our directory (`hotline residents show 42`): up to 10 digits, no leading
    0. No phone number looks like this: mobiles have 11 digits, landlines start with 0."""
    t = text.strip()
    return t.isascii() and t.isdigit() and len(t) <= 10 and not t.startswith("0")


def looks_like_id_number(text: str) -> bool:
    t = text.strip()
    return len(t) == 18 and t[:17].isdigit()
