"""Passwords, session and API tokens, CSRF tokens and login rate limiting for the hub service.

Passwords are hashed with argon2id (argon2-cffi) at OWASP's recommended minimum (19 MiB of
memory, 2 passes, 1 lane): costly for an attacker with the database, quick enough on a small hub
where every login and account creation pays it once. Session cookies and API tokens are random
URL-safe strings; the database keeps only their SHA-256, so a leaked database holds no usable
token. Each browser session carries its own CSRF token, which every form posts back.
Login rate limiting: after ``FREE_ATTEMPTS`` wrong passwords within ``WINDOW`` for a user name,
each further attempt must wait ``BACKOFF * 2**(n - FREE_ATTEMPTS)`` seconds (capped at
``MAX_WAIT``) after the last failure, whatever the password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

FREE_ATTEMPTS = 5
WINDOW = dt.timedelta(minutes=15)
BACKOFF = 2.0
MAX_WAIT = 300.0

_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _HASHER.hash(password)


def check_password(stored_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def wait_seconds(failures: list[dt.datetime], now: dt.datetime) -> float:
    """Seconds a login must still wait, given the recent failure times of that user name."""
    recent = sorted(t for t in failures if now - t <= WINDOW)
    if len(recent) < FREE_ATTEMPTS:
        return 0.0
    wait = min(MAX_WAIT, BACKOFF * 2 ** (len(recent) - FREE_ATTEMPTS))
    return max(0.0, wait - (now - recent[-1]).total_seconds())
