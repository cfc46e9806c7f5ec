"""The in-memory access gate: valid access codes (configured and stored) and session tokens.

Built once per process from the settings (:meth:`AccessGate.from_settings`); the stored
codes are replaced by :func:`gateway.auth.codes_context` every few seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from bus.access_codes import AccessCode, code_digest
from gateway.session_tokens import SessionTokens, TokenCheck, derive_secret
from gateway.settings import GatewaySettings

__all__ = ["AccessGate", "code_is_valid", "secret_bytes"]


def secret_bytes(given: str) -> bytes:
    """``given`` as bytes for a comparison with a secret, whatever it contains.

    Query strings and headers can carry lone surrogates (or bytes aiohttp decoded with
    ``surrogateescape``); they can never equal a secret, and must not raise either.
    """
    return given.encode("utf-8", "surrogatepass")


def code_is_valid(candidate: object, codes: list[bytes]) -> bool:
    """Constant-time check of ``candidate`` against every valid code (no early exit)."""
    if not isinstance(candidate, str) or not candidate:
        return False
    given = secret_bytes(candidate)
    matched = False
    for code in codes:
        matched |= hmac.compare_digest(given, code)
    return matched


class AccessGate:
    """Which access codes and session tokens are valid right now (all in memory)."""

    def __init__(
        self, env_codes: list[bytes], tokens: SessionTokens, *, codes_open_routes: bool = True
    ) -> None:
        self._env_codes = env_codes
        self.tokens = tokens
        #: False with a CAPTCHA: a code alone then opens only POST /api/session.
        self.codes_open_routes = codes_open_routes
        # A CHAT_PASSWORD code's id, keyed by the signing secret (so it reveals nothing).
        self._env_ids = [
            {"e" + hmac.new(secret, code, hashlib.sha256).hexdigest()[:10] for code in env_codes}
            for secret in tokens.secrets
        ]
        self._stored: dict[str, AccessCode] = {}
        self._stored_ids: dict[str, AccessCode] = {}
        self.refreshed_at: float | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> AccessGate:
        """The gate for ``settings`` (SESSION_SECRET, else a secret derived from the codes)."""
        secrets = settings.session_secrets or [derive_secret(settings.access_codes)]
        return cls(
            settings.access_codes,
            SessionTokens(secrets, settings.session_ttl_seconds),
            codes_open_routes=not settings.captcha_enabled,
        )

    def replace_stored(self, codes: list[AccessCode]) -> None:
        """Take the store's current codes (after a refresh)."""
        self._stored = {code.digest: code for code in codes}
        self._stored_ids = {code.code_id: code for code in codes}
        self.refreshed_at = time.monotonic()

    def code_id(self, candidate: object, now: float) -> str | None:
        """The id of the valid access code ``candidate``, else ``None``."""
        if not isinstance(candidate, str) or not candidate:
            return None
        if code_is_valid(candidate, self._env_codes):
            return self._env_id(secret_bytes(candidate))
        stored = self._stored.get(code_digest(candidate))
        if stored is not None and stored.active(int(now * 1000)):
            return stored.code_id
        return None

    def _env_id(self, code: bytes) -> str:
        secret = self.tokens.secrets[0]
        return "e" + hmac.new(secret, code, hashlib.sha256).hexdigest()[:10]

    def id_holds(self, code_id: str, now: float) -> bool:
        """True while the code ``code_id`` is valid (a session's code may be revoked)."""
        if any(code_id in ids for ids in self._env_ids):
            return True
        stored = self._stored_ids.get(code_id)
        return stored is not None and stored.active(int(now * 1000))

    def check_token(self, token: str, now: float) -> TokenCheck:
        """The token's code id when genuine and its code still valid (else ``code_id=None``)."""
        checked = self.tokens.check(token, now)
        if checked.code_id is None or not self.id_holds(checked.code_id, now):
            return TokenCheck(None)
        return checked
