"""Accounts: the value rules of usernames, emails and passwords (no I/O)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from messenger.domain.errors import InvalidInput

USERNAME_MIN, USERNAME_MAX = 3, 32
PASSWORD_MIN, PASSWORD_MAX = 8, 128  # the upper bound keeps one hash's cost bounded
EMAIL_MAX = 254  # RFC 5321 path limit

_USERNAME = re.compile(r"[a-z0-9_.]+")
# Pragmatic address syntax: one @, a local part without spaces or control characters, a domain
# of dot-separated LDH labels with a TLD. Deliverability is the mail server's business.
_LOCAL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Account:
    id: uuid.UUID
    user_id: uuid.UUID
    username: str
    email: str
    created_at: datetime
    updated_at: datetime


def normalize_username(raw: object) -> str:
    """3–32 of [a-z0-9_.], compared and stored in lower case."""
    if not isinstance(raw, str):
        raise InvalidInput("username must be a string", details={"field": "username"})
    name = raw.strip().lower()
    if not USERNAME_MIN <= len(name) <= USERNAME_MAX:
        raise InvalidInput(
            f"username must be {USERNAME_MIN} to {USERNAME_MAX} characters",
            details={"field": "username"},
        )
    if not _USERNAME.fullmatch(name):
        raise InvalidInput(
            "username may contain only letters a-z, digits, '_' and '.'",
            details={"field": "username"},
        )
    return name


def normalize_email(raw: object) -> str:
    """A syntactically valid address, lower-cased (domain and, as most providers do, local part)."""
    if not isinstance(raw, str):
        raise InvalidInput("email must be a string", details={"field": "email"})
    email = raw.strip()
    invalid = InvalidInput("email is not a valid address", details={"field": "email"})
    if len(email) > EMAIL_MAX or email.count("@") != 1:
        raise invalid
    local, domain = email.split("@")
    domain = domain.lower().rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise invalid from None
    labels = domain.split(".")
    if (
        not 1 <= len(local) <= 64
        or not _LOCAL.fullmatch(local)
        or local.startswith(".") or local.endswith(".") or ".." in local
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise invalid
    return f"{local.lower()}@{domain}"


def check_password(raw: object, field: str = "password") -> str:
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be a string", details={"field": field})
    if not PASSWORD_MIN <= len(raw) <= PASSWORD_MAX:
        raise InvalidInput(
            f"{field} must be {PASSWORD_MIN} to {PASSWORD_MAX} characters",
            details={"field": field},
        )
    return raw


def is_email(login: str) -> bool:
    """Sign-in takes a username or an email: only an email has an '@'."""
    return "@" in login
