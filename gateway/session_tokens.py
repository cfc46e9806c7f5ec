"""Short-lived signed session tokens: what a visitor's access code is exchanged for.

A token is ``s1.<codeId>.<expires>.<signature>``: the id of the access code it was issued
for, its expiry (Unix seconds) and an HMAC-SHA256 over both with the server's session
secret (base64url, no padding). No server state: any gateway with the same secret checks
it. Rotation: the first secret signs, every listed secret verifies. A token is refused
once expired, or once its code is no longer valid (revoked, expired, removed from
``CHAT_PASSWORD``), so revoking a code ends its sessions within seconds too.

The token never contains the code; it is not a secret worth much on its own (it expires),
but it is still kept out of logs (``token=`` is redacted like ``accessCode=``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass

__all__ = ["SessionTokens", "TokenCheck", "derive_secret"]

_TOKEN = re.compile(r"s1\.([A-Za-z0-9_-]{1,32})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})", re.ASCII)


def derive_secret(codes: list[bytes]) -> bytes:
    """A signing secret derived from the configured access codes (when SESSION_SECRET is
    unset): every gateway with the same CHAT_PASSWORD derives the same one. scrypt makes
    guessing a weak code from a token slow (about 0.1 s, once per process and code set)."""
    return _derive(tuple(sorted(codes)))


@functools.lru_cache(maxsize=8)
def _derive(codes: tuple[bytes, ...]) -> bytes:
    material = b"\n".join(codes)
    return hashlib.scrypt(material, salt=b"terrarium-session-v1", n=2**14, r=8, p=1, dklen=32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """What a presented token turned out to be."""

    #: The access code's id, when the signature is valid (expired or not).
    code_id: str | None
    expired: bool = False


class SessionTokens:
    """Issue and check tokens with ``secrets`` (the first signs; all verify)."""

    def __init__(self, secrets: list[bytes], ttl_seconds: int) -> None:
        if not secrets:
            raise ValueError("at least one session secret is required")
        self.secrets = secrets
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def _sign(secret: bytes, code_id: str, expires: int) -> str:
        payload = f"s1.{code_id}.{expires}".encode("ascii")
        return _b64(hmac.new(secret, payload, hashlib.sha256).digest())

    def issue(self, code_id: str, now: float) -> tuple[str, int]:
        """A token for ``code_id`` and its expiry (Unix seconds)."""
        expires = int(now) + self.ttl_seconds
        signature = self._sign(self.secrets[0], code_id, expires)
        return f"s1.{code_id}.{expires}.{signature}", expires

    def check(self, token: str, now: float) -> TokenCheck:
        """The token's code id if it is genuine (``expired`` says whether it still holds)."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return TokenCheck(None)
        code_id, expires_text, signature = match.groups()
        expires = int(expires_text)
        genuine = False
        for secret in self.secrets:  # no early exit: every secret is tried
            genuine |= hmac.compare_digest(self._sign(secret, code_id, expires), signature)
        if not genuine:
            return TokenCheck(None)
        return TokenCheck(code_id, expired=now >= expires)
