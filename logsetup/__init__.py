"""Logging setup shared by the gateway and the worker (imports nothing of ours).

structlog renders to the console on a TTY and to JSON lines otherwise; stdlib loggers
(aiohttp, redis, openai, arq) go through the same processors. A redaction processor
masks secrets (access codes, tokens, keys, passwords, authorization) in event data and
in URLs' query strings, so a secret never reaches a log line.

JSON lines from our own (structlog) loggers skip the stdlib: a level-filtering bound
logger, orjson, one write per line. Through ``logging`` (a ``LogRecord``, a handler, the
formatter running the processors again, ``json.dumps``) one line cost the worker ~150 µs,
12 % of its CPU per short exchange (issue 10); this way costs ~25 µs.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import IO, Any, Protocol

import orjson
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
    if "=" not in text and "@" not in text:  # neither pattern can match: skip both scans
        return text
    text = _URL_SECRET.sub(lambda m: m.group(1) + MASK, text)
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", text)


#: Field name -> is it secret-looking (names repeat on every line; the scan runs once).
_secret_key_seen: dict[str, bool] = {}


def _is_secret_key(key: str) -> bool:
    secret = _secret_key_seen.get(key)
    if secret is None:
        secret = _SECRET_KEYS.search(key) is not None
        if len(_secret_key_seen) < 4096:  # field names are code, not data; bounded anyway
            _secret_key_seen[key] = secret
    return secret


def _redact_value(key: str, value: Any) -> Any:
    if _is_secret_key(key):
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


class ByteSink(Protocol):
    """Where JSON lines go: a binary stream (standard error's bytes, a file, a buffer)."""

    def write(self, data: bytes, /) -> Any: ...
    def flush(self) -> Any: ...


class LineLogger:
    """structlog's logger for JSON lines: writes each rendered line to a binary stream.

    ``name`` is what :func:`structlog.stdlib.add_logger_name` reads.
    """

    __slots__ = ("_stream", "name")

    def __init__(self, name: str, stream: ByteSink) -> None:
        self.name = name
        self._stream = stream

    def msg(self, line: bytes) -> None:
        """Write one line (and flush it, so lines of two processes never interleave)."""
        self._stream.write(line + b"\n")
        self._stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _line_logger_factory(stream: ByteSink) -> Any:
    def make(*args: Any) -> LineLogger:
        return LineLogger(str(args[0]) if args else "", stream)

    return make


def _stderr_bytes() -> ByteSink:
    buffer = getattr(sys.stderr, "buffer", None)
    if buffer is not None:
        return buffer  # type: ignore[no-any-return]
    return _TextAsBytes(sys.stderr)  # a replaced stderr (a test runner's capture)


class _TextAsBytes:
    def __init__(self, text: IO[str]) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        return self._text.write(data.decode())

    def flush(self) -> None:
        self._text.flush()


def _orjson_dumps(event_dict: Any, **kwargs: Any) -> bytes:
    return orjson.dumps(event_dict, option=orjson.OPT_NON_STR_KEYS, **kwargs)


def configure_logging(
    level: str = "INFO", *, json_logs: bool | None = None, stream: ByteSink | None = None
) -> None:
    """Configure structlog and the stdlib root logger once per process.

    ``stream``: where JSON lines go (standard error's bytes by default).
    """
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
    if as_json:
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_orjson_dumps),
            ],
            logger_factory=_line_logger_factory(stream or _stderr_bytes()),
            wrapper_class=structlog.make_filtering_bound_logger(
                logging.getLevelNamesMapping()[level.upper()]
            ),
            cache_logger_on_first_use=True,
        )
    else:
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
