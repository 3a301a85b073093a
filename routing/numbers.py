"""Phone and resident ID-card numbers: normalization and validation (pure functions).

A number is normalized once, at the edge (CSV import, the calling number of a SIP INVITE, a CLI
argument), and only the normalized form is hashed or stored, so 138-1234-5678, +86 13812345678,
8613812345678 and sip:+8613812345678@pbx find the same resident. Error messages quote the
rejected text masked when it could be somebody's number (store.pii.mask_if_pii): they end up in
logs and CSV reports, and a mistyped number is still somebody's number; 'abc' is shown as typed.

The canonical form, the one stored and hashed, is the national number as dialled inside
mainland China: a mobile as its 11 digits (13812345678), a landline with its area code and the
leading 0 (02225320001). It does not depend on the district's area code, so normalizing a
canonical number again gives it back unchanged whatever the area code; the area code only
completes a local landline written without one (25320001 → 02225320001).

What trunks and people write, all accepted:
  +8613812345678  008613812345678  8613812345678   country code, with or without + or 00
  013812345678                                       a mobile with the long-distance 0
  +86 22 2532 0001  +86 (0)22 2532 0001  8622…        a landline after the country code
  022-2532-0001  (022) 2532 0001  25320001           with or without the area code
  tel:+86-22-2532-0001  sip:+8613812345678@pbx;user=phone  "名字" <sip:138…@pbx>
Refused: numbers of other countries (+1…, 001…), wrong lengths, letters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from urllib.parse import unquote

from store.pii import mask_if_pii

# Tianjin, the demo district; a deployment sets HOTLINE_AREA_CODE.
DEFAULT_AREA_CODE = "022"

# Longer text is not a phone number whatever it holds; refused before any further work.
MAX_PHONE_TEXT = 128

# Visual separators: spaces, dashes, dots and parentheses (also the full-width ones an IME
# types, after NFKC), as in tel: URIs (RFC 3966 visual-separator) and as people write them.
_SEPARATORS = re.compile(r"[\s\-.()]")
_MOBILE = re.compile(r"1[3-9]\d{9}")
# Area codes: 010 and 02x with 8-digit subscriber numbers; 0xxx (x from 3) with 7 or 8 digits.
# A subscriber number never starts with 0 or 1 (those are trunk and service prefixes).
_LANDLINE = re.compile(r"0(?:10|2\d)[2-9]\d{7}|0[3-9]\d{2}[2-9]\d{6,7}")
_AREA_CODE = re.compile(r"0(?:10|2\d|[3-9]\d{2})")
_LOCAL = re.compile(r"[2-9]\d{6,7}")
_URI_SCHEME = re.compile(r"(?:sips?|tel):", re.IGNORECASE)

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


class InvalidNumber(ValueError):
    """The text is not a phone or ID-card number; the message says why."""


def check_area_code(area_code: str) -> str:
    """A mainland area code with its leading 0 (010, 022, 0571), or InvalidNumber."""
    code = area_code.strip()
    if not _AREA_CODE.fullmatch(code):
        raise InvalidNumber(f"area code {code!r} is not a mainland area code with its leading 0 "
                            "(010, 02x, or 0 and three digits such as 0571)")
    return code


def _uri_user(text: str) -> str:
    """The number inside SIP/tel URI decoration: display name, <>, scheme, @host, ;params."""
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1:text.index(">", text.index("<"))]
    scheme = _URI_SCHEME.match(text)
    if scheme is None:
        return text
    user = text[scheme.end():]
    user = user.split("@", 1)[0] if "@" in user else (user if scheme.group().lower() == "tel:" else "")
    # tel: parameters (;phone-context=, ;isub=) and a SIP user part's own parameters
    return unquote(user.split(";", 1)[0].split("?", 1)[0])


def _shown(text: str) -> str:
    """The rejected text for a message: masked when it could be somebody's number (7 digits or
    more), as typed when it cannot (abc, 1001, anonymous)."""
    return repr(mask_if_pii(text[:32]))


def normalize_phone(text: str, area_code: str = DEFAULT_AREA_CODE) -> str:
    """The canonical form of a mainland mobile or landline number, or InvalidNumber.

    `area_code` (with its 0) completes a local landline written without one.
    """
    if len(text) > MAX_PHONE_TEXT:
        raise InvalidNumber(f"phone number has {len(text)} characters; not a phone number")
    raw = unicodedata.normalize("NFKC", text).strip()
    raw = _uri_user(raw).strip()
    shown = _shown(raw)
    digits = _SEPARATORS.sub("", raw)
    if not digits:
        raise InvalidNumber("empty phone number")
    international = digits.startswith(("+", "00"))
    body = digits[1:] if digits.startswith("+") else digits[2:] if international else digits
    if not body.isdigit() or not body.isascii():
        raise InvalidNumber(f"phone number {shown} has characters other than digits")
    if international:
        if not body.startswith("86"):
            raise InvalidNumber(f"phone number {shown} is not a mainland China number (+86)")
        return _after_country_code(body[2:], shown)
    # 86 without + or 00, as some trunks send it: only where no national number can be meant
    # (a national number starting 86 is a local landline of 7 or 8 digits).
    if body.startswith("86") and len(body) >= 12:
        return _after_country_code(body[2:], shown)
    return _national(body, shown, area_code)


def _after_country_code(national: str, shown: str) -> str:
    if national.startswith("0"):  # +86 (0)22 …: the trunk 0 written after the country code
        national = national[1:]
    if _MOBILE.fullmatch(national):
        return national
    if _LANDLINE.fullmatch("0" + national):
        return "0" + national
    raise InvalidNumber(f"{shown} is neither a mobile (+86 and 11 digits) nor a landline "
                        "with area code after the country code")


def _national(digits: str, shown: str, area_code: str) -> str:
    if _MOBILE.fullmatch(digits) or _LANDLINE.fullmatch(digits):
        return digits
    if digits.startswith("0") and _MOBILE.fullmatch(digits[1:]):
        return digits[1:]  # 0138…: the long-distance 0 some exchanges put before a mobile
    if _LOCAL.fullmatch(digits):
        local = check_area_code(area_code) + digits
        if _LANDLINE.fullmatch(local):
            return local
        raise InvalidNumber(f"landline {shown} has the wrong length for area code {area_code}")
    if digits.startswith("1"):
        raise InvalidNumber(f"mobile number {shown} must have 11 digits starting 13–19")
    if digits.startswith("0"):
        raise InvalidNumber(f"landline {shown} has the wrong length for its area code "
                            "(010/02x: 8 digits after it; others: 7 or 8)")
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


RESIDENT_ID_PREFIX = "id:"


def looks_like_resident_id(text: str) -> bool:
    """A resident's id in our directory: `id:42` always; a bare number only when no phone number
    can look like it — up to 6 digits without a leading 0 (a local landline written without its
    area code has 7 or 8 digits, a mobile 11)."""
    t = text.strip()
    if t.lower().startswith(RESIDENT_ID_PREFIX):
        t = t[len(RESIDENT_ID_PREFIX):].strip()
        return t.isascii() and t.isdigit() and 0 < len(t) <= 10
    return t.isascii() and t.isdigit() and len(t) <= 6 and not t.startswith("0")


def resident_id_of(text: str) -> int:
    """The id in `text`, which looks_like_resident_id accepted."""
    t = text.strip()
    return int(t[len(RESIDENT_ID_PREFIX):] if t.lower().startswith(RESIDENT_ID_PREFIX) else t)


def looks_like_id_number(text: str) -> bool:
    t = text.strip()
    return len(t) == 18 and t[:17].isdigit()
