"""What the auth service accepts as an email, password, role, key name, and client address.

Kept apart from `auth.py` so that module stays about accounts, keys and tokens. Every check
raises InvalidRequestError (422) whose message starts with the field's name.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from sparklio.exceptions import InvalidRequestError

ROLES = ("admin", "member")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_EMAIL = 320
MAX_NAME = 100
IPV6_BLOCK = 64  # an IPv6 client usually holds a whole /64: counted as one address
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def text_problem(value: str, *, controls: bool = False) -> str | None:
    """What makes `value` unfit to store, or None: a lone surrogate (it cannot be encoded)
    or, unless `controls`, a control character (PostgreSQL refuses NUL in text)."""
    for position, char in enumerate(value):
        kind = unicodedata.category(char)
        if kind == "Cs" or (kind == "Cc" and not controls):
            what = "a lone surrogate" if kind == "Cs" else "a control character"
            return f"{what} (U+{ord(char):04X}) at position {position}; send plain text"
    return None


def check_text(field: str, value: str, longest: int, *, controls: bool = False) -> str:
    """`value` when it is at most `longest` characters of storable text (`text_problem`);
    InvalidRequestError (422) naming `field` otherwise."""
    if len(value) > longest:
        raise InvalidRequestError(f"{field}: at most {longest} characters (got {len(value)})")
    problem = text_problem(value, controls=controls)
    if problem is not None:
        raise InvalidRequestError(f"{field}: {problem}")
    return value


def check_email(email: str) -> str:
    """The email, trimmed and lower-cased, when it looks like one."""
    email = check_text("email", email.strip().lower(), MAX_EMAIL)
    if not _EMAIL.match(email):
        raise InvalidRequestError(f"email: {email!r} is not an email address like name@example.com")
    return email


def check_password(password: str) -> None:
    """A new password: MIN_PASSWORD to MAX_PASSWORD characters of any encodable text."""
    check_text("password", password, MAX_PASSWORD, controls=True)
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequestError(
            f"password: between {MIN_PASSWORD} and {MAX_PASSWORD} characters, please "
            f"(got {len(password)})"
        )


def address_key(client: str) -> str:
    """What the per-address limit counts: the address, or for IPv6 its /64 block."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_BLOCK), strict=False))
    return str(address)


def check_role(role: str) -> None:
    """One of ROLES."""
    if role not in ROLES:
        raise InvalidRequestError(f"role: one of {', '.join(ROLES)} (got {role!r})")


__all__ = [
    "MAX_EMAIL",
    "MAX_NAME",
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "ROLES",
    "address_key",
    "check_email",
    "check_password",
    "check_role",
    "check_text",
    "text_problem",
]
