"""Visitor access codes kept in Redis: several at once, each with an optional expiry.

Only a digest of each code is stored, never the code: ``codes add`` (the operators'
console) generates a random code, prints it once and stores HMAC-SHA256 of it. Codes
carry 144 random bits, so a fast keyed hash is enough (no guessing a code from its
digest); a lookup is one dictionary probe on the digest, never a comparison per code.

One Redis hash (:meth:`bus.keys.BusKeys.access_codes`) maps a short public id to a JSON
record ``{digest, label, createdAt, expiresAt}``; revoking deletes the field. The gateway
reads the whole hash every few seconds (one HGETALL) and checks codes in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from bus.errors import translates_redis_errors
from bus.keys import BusKeys

__all__ = [
    "ACCESS_CODE_ID",
    "AccessCode",
    "AccessCodeStore",
    "code_digest",
    "new_code",
]

#: A stored code's public id (what ``codes list`` shows and ``codes revoke`` takes).
ACCESS_CODE_ID = re.compile(r"[0-9a-f]{8}", re.ASCII)
_DIGEST_KEY = b"terrarium-access-code-v1"


def code_digest(code: str) -> str:
    """The stored form of ``code``: hex HMAC-SHA256 (any text, lone surrogates included)."""
    data = code.encode("utf-8", "surrogatepass")
    return hmac.new(_DIGEST_KEY, data, hashlib.sha256).hexdigest()


def new_code() -> str:
    """A fresh visitor access code: 24 URL-safe characters (144 random bits)."""
    return secrets.token_urlsafe(18)


@dataclass(frozen=True, slots=True)
class AccessCode:
    """One stored code, as the store knows it (never the code itself)."""

    code_id: str
    digest: str
    label: str
    created_ms: int
    expires_ms: int | None

    def active(self, now_ms: int) -> bool:
        """True until its expiry (if any)."""
        return self.expires_ms is None or now_ms < self.expires_ms


def _decode(code_id: str, raw: str) -> AccessCode | None:
    try:
        data = json.loads(raw)
        expires = data.get("expiresAt")
        return AccessCode(
            code_id=code_id,
            digest=str(data["digest"]),
            label=str(data.get("label") or ""),
            created_ms=int(data["createdAt"]),
            expires_ms=None if expires is None else int(expires),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a damaged record admits nobody


@translates_redis_errors
class AccessCodeStore:
    """Read, add and revoke stored access codes (add/revoke need a user allowed to write)."""

    def __init__(self, redis: Redis, keys: BusKeys) -> None:
        self._redis = redis
        self._key = keys.access_codes

    async def all(self) -> list[AccessCode]:
        """Every stored code, expired ones included, oldest first."""
        raw = await self._redis.hgetall(self._key)  # type: ignore[misc]
        codes = [
            code
            for code_id, value in raw.items()
            if (code := _decode(_text(code_id), _text(value))) is not None
        ]
        return sorted(codes, key=lambda c: (c.created_ms, c.code_id))

    async def add(
        self, code: str, *, label: str, created_ms: int, expires_ms: int | None
    ) -> AccessCode:
        """Store ``code``'s digest under a new id; returns the record (the code is not kept)."""
        digest = code_digest(code)
        record = {
            "digest": digest,
            "label": label,
            "createdAt": created_ms,
            "expiresAt": expires_ms,
        }
        while True:
            code_id = secrets.token_hex(4)
            if await self._redis.hsetnx(self._key, code_id, json.dumps(record)):  # type: ignore[misc]
                return AccessCode(code_id, digest, label, created_ms, expires_ms)

    async def revoke(self, code_id: str) -> bool:
        """Delete stored code ``code_id``; False when there was none."""
        return bool(await self._redis.hdel(self._key, code_id))  # type: ignore[misc]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
