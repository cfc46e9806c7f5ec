"""``POST /api/session``: exchange an access code for a short-lived session token.

The widget sends its access code once, here, in a JSON body, and from then on only the
token (``Authorization: Bearer`` on REST; ``token=`` on the WebSocket and EventSource
URLs, where a header is impossible). With the CAPTCHA hook on, this is also where the
visitor's ``captchaToken`` is checked, after the code (a wrong code never reaches the
verifier). A live session token of the same code (``Authorization: Bearer``) stands in for
a new answer: the widget renews its session before expiry without a second check.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import structlog
from aiohttp import web

from gateway.auth import presented_token
from gateway.captcha import CaptchaUnavailable, SiteVerify
from gateway.errors import json_error
from gateway.keys import AppKeys
from gateway.limits import client_of
from gateway.rest import read_json_object

__all__ = ["CAPTCHA_RETRY_AFTER_SECONDS", "captcha_context", "post_session"]

log = structlog.get_logger("gateway.session")

#: When the CAPTCHA verifier cannot be reached, visitors are asked to retry after this long.
CAPTCHA_RETRY_AFTER_SECONDS = 10
_CAPTCHA_TOKEN_MAX = 4096


async def post_session(request: web.Request) -> web.Response:
    """Body ``{accessCode, captchaToken?}``; 200 ``{token, expiresAt, expiresIn}``."""
    gate = request.app[AppKeys.gate]
    body = await read_json_object(request)
    now = time.time()
    code_id = gate.code_id(body.get("accessCode"), now)
    if code_id is None:
        raise json_error(401, "Invalid access code")
    verifier = request.app.get(AppKeys.captcha)
    if verifier is not None and not _renewal(request, code_id, now):
        answer = body.get("captchaToken")
        if not isinstance(answer, str) or not answer or len(answer) > _CAPTCHA_TOKEN_MAX:
            raise json_error(403, "Please complete the check that you are a person.")
        try:
            passed = await verifier.verify(answer, client_of(request))
        except CaptchaUnavailable:
            raise json_error(
                503,
                "The check that you are a person is unavailable right now. "
                f"Please try again in {CAPTCHA_RETRY_AFTER_SECONDS} seconds.",
                headers={"Retry-After": str(CAPTCHA_RETRY_AFTER_SECONDS)},
            ) from None
        if not passed:
            raise json_error(403, "The check that you are a person failed. Please try again.")
    token, expires = gate.tokens.issue(code_id, now)
    log.info("gateway.session_started", code_id=code_id)
    return web.json_response(
        {
            "token": token,
            "expiresAt": datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z"),
            "expiresIn": expires - int(now),
        },
        headers={"Cache-Control": "no-store"},
    )


def _renewal(request: web.Request, code_id: str, now: float) -> bool:
    """True when the request carries a live session token of the same code."""
    token = presented_token(request)
    if token is None:
        return False
    checked = request.app[AppKeys.gate].check_token(token, now)
    return checked.code_id == code_id and not checked.expired


@contextlib.asynccontextmanager
async def _captcha(app: web.Application) -> AsyncIterator[None]:
    settings = app[AppKeys.settings]
    if settings.captcha_verify_url is None or settings.captcha_secret is None:
        yield
        return
    async with aiohttp.ClientSession() as session:
        app[AppKeys.captcha] = SiteVerify(
            session,
            settings.captcha_verify_url,
            settings.captcha_secret.get_secret_value(),
            settings.captcha_timeout_seconds,
        )
        yield


def captcha_context(app: web.Application) -> contextlib.AbstractAsyncContextManager[None]:
    """cleanup_ctx: the CAPTCHA verifier (and its HTTP client) when the hook is on."""
    return _captcha(app)
