"""Keeping the gateway's secrets out of its log, whatever writes the line.

``logsetup`` redacts secret-looking fields and URL parameters. Two things escape it:
aiohttp's HTTP parser logs a request line it cannot parse, raw, inside its exception
text (rendered after the redaction ran), and a secret may sit under a name no pattern
knows (``access%43ode=...``). So the gateway:

- turns a parser error into one ``gateway.malformed_request`` warning carrying the peer,
  the status and the error's class, never the request line (nor a traceback);
- masks every configured secret (access codes, metrics token, Redis password), in the
  spellings a log line can hold (raw, percent-encoded, ``repr`` bytes, JSON-escaped), in
  each finished line, just before the handler writes it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, urlsplit

from aiohttp.http_exceptions import HttpProcessingError

from gateway.settings import GatewaySettings

__all__ = ["MalformedRequestFilter", "SecretMaskingFormatter", "protect_logs", "secret_spellings"]

MASK = "[redacted]"
#: Shorter secrets are not masked: they would garble every line (infra/secrets/generate.sh
#: makes 72-bit codes).
MIN_MASKED_LENGTH = 3


def secret_spellings(secret: str) -> set[str]:
    """The ways ``secret`` can appear in a log line (raw, URL-encoded, escaped)."""
    as_bytes = repr(secret.encode("utf-8", "surrogatepass"))[2:-1]
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        as_bytes,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(as_bytes)[1:-1],
    }
    return {form for form in forms if len(form) >= MIN_MASKED_LENGTH}


def _masking_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    forms = {form for secret in secrets for form in secret_spellings(secret)}
    if not forms:
        return None
    # Longest first, so a secret's escaped spelling is masked whole, not its raw prefix.
    ordered = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(re.escape(form) for form in ordered), re.IGNORECASE)


class SecretMaskingFormatter(logging.Formatter):
    """Wraps a handler's formatter: every spelling of every secret becomes ``[redacted]``."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._pattern = _masking_pattern(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's line, with secrets masked."""
        text = self._inner.format(record)
        return self._pattern.sub(MASK, text) if self._pattern is not None else text


class MalformedRequestFilter(logging.Filter):
    """On ``aiohttp.server``: a parser error becomes one line without the request's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place when it carries an HTTP parser error."""
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.msg = "gateway.malformed_request"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.peer = str(peer) if peer is not None else None
        record.status = error.code
        record.error = type(error).__name__
        return True


def _configured_secrets(settings: GatewaySettings) -> list[str]:
    secrets = [code.get_secret_value() for code in settings.chat_password]
    if settings.metrics_token is not None:
        secrets.append(settings.metrics_token.get_secret_value())
    secrets += [secret.get_secret_value() for secret in settings.session_secret]
    if settings.captcha_secret is not None:
        secrets.append(settings.captcha_secret.get_secret_value())
    password = urlsplit(settings.redis_url.get_secret_value()).password
    if password:
        secrets.append(password)
    return secrets


def protect_logs(settings: GatewaySettings) -> None:
    """Install the filter and the masking on the root logger's handlers (after logsetup)."""
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    secrets = _configured_secrets(settings)
    for handler in logging.getLogger().handlers:
        inner = handler.formatter or logging.Formatter()
        if not isinstance(inner, SecretMaskingFormatter):
            handler.setFormatter(SecretMaskingFormatter(inner, secrets))
