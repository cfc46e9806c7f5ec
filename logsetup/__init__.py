"""Logging setup shared by the gateway and the worker (imports nothing of ours).

structlog renders to the console on a TTY and to JSON lines otherwise; stdlib loggers
(aiohttp, redis, openai, arq) go through the same processors. A redaction processor
masks secrets (access codes, tokens, keys, passwords, authorization) in event data and
in URLs' query strings, so a secret never reaches a log line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "redact", "redact_url"]

#: Field names whose values are masked. ``token`` but not ``tokens``: a count of model
#: tokens (``tokens``, ``prompt_tokens``) is not a credential.
_SECRET_KEYS = re.compile(
    r"(access_?code|accesscode|token(?!s)|secret|password|passwd|api_?key|authorization"
    r"|cookie|signature)",
    re.IGNORECASE,
)
_URL_SECRET = re.compile(
    r"((?:access_?code|accessCode|token|api_?key|key|password|secret)=)[^&#\s]*", re.IGNORECASE
)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)([^/@\s:]*):([^/@\s]*)@", re.IGNORECASE)
MASK = "[redacted]"


def redact_url(text: str) -> str:
    """Mask secret query parameters and URL passwords inside ``text``."""
    text = _URL_SECRET.sub(lambda m: m.group(1) + MASK, text)
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return MASK
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking keys and secrets inside URLs."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO", *, json_logs: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    as_json = not sys.stderr.isatty() if json_logs is None else json_logs
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log prints raw URLs; our middleware logs requests itself.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
