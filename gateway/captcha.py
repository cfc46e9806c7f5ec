"""The CAPTCHA hook: an optional proof that a person opened the chat.

Off by default. When ``CAPTCHA_VERIFY_URL`` and ``CAPTCHA_SECRET`` are set, ``POST
/api/session`` (the exchange of an access code for a session token) also needs a
``captchaToken`` that the verifier accepts. :class:`SiteVerify` speaks the protocol that
hCaptcha, Cloudflare Turnstile and reCAPTCHA share (form POST ``secret``, ``response``,
``remoteip`` -> JSON ``{"success": true|false}``); any object with a matching ``verify``
coroutine can replace it (:class:`CaptchaVerifier`).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
import structlog

__all__ = ["CaptchaUnavailable", "CaptchaVerifier", "SiteVerify"]

log = structlog.get_logger("gateway.captcha")


class CaptchaUnavailable(Exception):
    """The verifier could not be asked (a 503 for the visitor, never a pass)."""


class CaptchaVerifier(Protocol):
    """Checks a visitor's CAPTCHA answer."""

    async def verify(self, token: str, client: str) -> bool:
        """True when ``token`` proves a person; ``client`` is the visitor's address."""
        ...


class SiteVerify:
    """A ``siteverify`` endpoint (hCaptcha, Turnstile, reCAPTCHA)."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, secret: str, timeout_seconds: float
    ) -> None:
        self._session = session
        self._url = url
        self._secret = secret
        self._timeout = timeout_seconds

    async def verify(self, token: str, client: str) -> bool:
        """POST the answer to the endpoint; raises :class:`CaptchaUnavailable` if unreachable."""
        form = {"secret": self._secret, "response": token, "remoteip": client}
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.post(self._url, data=form) as response,
            ):
                if response.status != 200:
                    log.warning("gateway.captcha_failed", status=response.status)
                    raise CaptchaUnavailable
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("gateway.captcha_failed", error=type(exc).__name__)
            raise CaptchaUnavailable from None
        return isinstance(body, dict) and body.get("success") is True
