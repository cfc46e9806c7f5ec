"""Gateway settings, read once from the environment in ``__main__``.

Env names carry over from the original Express relay where the concept does
(CHAT_PASSWORD, PORT, BASE_PATH, MAX_MESSAGE_LENGTH, BODY_SIZE_LIMIT, RATE_LIMIT_*,
WORKER_STALE_THRESHOLD_MS), with the same defaults, except that the access code has no
default: a gateway without one refuses to start.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from bus.settings import BusSettings
from gateway.byo.providers import PRESETS, ByoProvider

__all__ = ["GatewaySettings", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def parse_size(value: str | int) -> int:
    """Parse ``256kb`` / ``1mb`` / ``1024`` (as the Express ``bytes`` package) into bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r}")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "b").lower()])


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class GatewaySettings(BusSettings):
    """Everything the gateway process can be told (Redis and storage: :class:`BusSettings`)."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, secrets_dir=None
    )

    chat_password: Annotated[list[SecretStr], NoDecode] = Field(
        validation_alias="CHAT_PASSWORD",
        description="Visitor access code(s); several comma-separated codes are all valid.",
    )
    host: str = "127.0.0.1"
    port: int = 4100
    base_path: str = ""

    max_message_length: int = 4000
    body_size_limit: int = Field(default=256 * 1024)
    rate_limit_window_ms: int = 60_000
    rate_limit_max_per_ip: int = 60
    rate_limit_max_per_chat: int = 120
    #: Reads (history, transcript, worker state, health), stream handshakes and failed
    #: access codes per client and window; a client is an IPv4 address or an IPv6 prefix.
    #: Unset, reads and handshakes scale with RATE_LIMIT_MAX_PER_IP (see the properties).
    rate_limit_reads_per_ip: int | None = Field(default=None, ge=1)
    rate_limit_streams_per_ip: int | None = Field(default=None, ge=1)
    rate_limit_failed_codes_per_ip: int = Field(default=10, ge=1)
    rate_limit_ipv6_prefix: int = Field(default=64, ge=16, le=128)
    #: Open WebSockets and SSE streams: per client (unset: scales with RATE_LIMIT_MAX_PER_IP,
    #: at least 20), and in all (this process).
    max_sockets_per_client: int | None = Field(default=None, ge=1)
    max_sockets: int = Field(default=10_000, ge=1)
    #: Reads of one client being answered at once (unset: a tenth of RATE_LIMIT_MAX_PER_IP,
    #: at least 8): a burst of history pages cannot take the process's CPU and memory.
    reads_in_flight_per_client: int | None = Field(default=None, ge=1)
    worker_stale_threshold_ms: int = 60_000

    #: Session tokens (POST /api/session, docs/protocol.md 2): signing secrets,
    #: comma-separated (the first signs, all verify: rotation); unset, one is derived from
    #: CHAT_PASSWORD. Tokens last SESSION_TTL_SECONDS.
    session_secret: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    session_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    #: Stored access codes (terrarium-ops codes) are re-read this often: a revoked code
    #: stops working within about this long.
    access_codes_refresh_seconds: float = Field(default=5.0, gt=0, le=300)
    #: The CAPTCHA hook (off unless both are set): a siteverify endpoint (hCaptcha,
    #: Turnstile, reCAPTCHA) and its secret; POST /api/session then needs ``captchaToken``.
    captcha_verify_url: str | None = None
    captcha_secret: SecretStr | None = None
    captcha_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    #: What the widget needs to show the challenge (public; sent in GET /api/config when
    #: the hook is on): the provider's site key, its script, and the global that script
    #: defines with ``render(element, {sitekey, callback})`` (hcaptcha, turnstile, grecaptcha).
    captcha_site_key: str | None = None
    captcha_script_url: str | None = None
    captcha_script_global: str = Field(
        default="hcaptcha", pattern=r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}$"
    )
    #: Sources the gateway's own pages allow for the provider (script, frame, style and
    #: connect), comma-separated; unset: the script's origin. hCaptcha needs
    #: ``https://hcaptcha.com,https://*.hcaptcha.com``; reCAPTCHA also ``https://www.gstatic.com``.
    captcha_csp_sources: Annotated[list[str], NoDecode] = Field(default_factory=list)

    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    metrics_token: SecretStr | None = None

    ws_heartbeat_seconds: float = 30.0
    socket_queue_size: int = 1000
    #: A socket with about this many bytes waiting for it (queued here, or in the transport's
    #: and the kernel's send buffers) is closed with 4000 so the client resumes.
    socket_buffer_bytes: int = Field(default=1024 * 1024, ge=16 * 1024)
    sse_max_lifetime_seconds: float = 3600.0
    history_limit: int = 200
    #: A history or transcript answer holds at most this many bytes of messages (one page;
    #: ``before`` pages back). At least one maximum-size message must fit.
    history_max_bytes: int = Field(default=512 * 1024, ge=32 * 1024)
    shutdown_timeout_seconds: float = 10.0
    #: An idle (or never completed) keep-alive connection is closed after this long.
    keepalive_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    #: A visitor request (not a stream) that waits longer than this on Redis gets a 503.
    request_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    demo_agent: bool = False
    #: The content bundle (shared with the worker's tools): the widget's starter prompts
    #: come from its ``_starter-prompts.md`` (gateway.starters).
    content_dir: Path = Path(__file__).resolve().parent.parent / "content"
    log_level: str = "INFO"
    #: Run on uvloop when it is installed (``UVLOOP=0``: the stdlib asyncio loop).
    uvloop: bool = True

    #: Bring your own model (docs/protocol.md 9.10): presets enabled by id (comma-separated,
    #: e.g. ``openai,groq``; none by default) and operators' own providers (JSON list of
    #: ``{id, name, baseUrl, models?, modelsEndpoint?}``). Never a URL a visitor typed.
    byo_providers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    byo_custom_providers: Annotated[list[ByoProvider], NoDecode] = Field(default_factory=list)
    #: BYO answers streaming at once: per client, and in this process.
    byo_streams_per_client: int = Field(default=2, ge=1)
    byo_max_streams: int = Field(default=50, ge=1)
    #: Until the provider's response starts; then the longest silence within it; then the
    #: whole answer.
    byo_request_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    byo_idle_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    byo_max_answer_seconds: float = Field(default=300.0, gt=0, le=3600)
    #: An answer is cut (``truncated``) past this many characters; ``max_tokens`` asked.
    byo_max_answer_chars: int = Field(default=16_000, ge=100)
    byo_max_tokens: int = Field(default=1024, ge=16)

    @field_validator("chat_password", mode="before")
    @classmethod
    def _codes(cls, value: object) -> object:
        codes = _split(value)
        if not codes:
            raise ValueError("at least one access code is required")
        return codes

    @field_validator("session_secret", mode="before")
    @classmethod
    def _session_secrets(cls, value: object) -> object:
        items = _split(value)
        if isinstance(items, list) and any(len(str(item)) < 16 for item in items):
            raise ValueError("each secret needs at least 16 characters")
        return items

    @field_validator(
        "captcha_verify_url",
        "captcha_secret",
        "captcha_site_key",
        "captcha_script_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("captcha_verify_url", "captcha_script_url")
    @classmethod
    def _captcha_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _captcha_pair(self) -> GatewaySettings:
        if (self.captcha_verify_url is None) != (self.captcha_secret is None):
            raise ValueError("CAPTCHA_VERIFY_URL and CAPTCHA_SECRET go together")
        return self

    @field_validator("captcha_csp_sources", mode="before")
    @classmethod
    def _csp_sources(cls, value: object) -> object:
        items = _split(value)
        source = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")
        if isinstance(items, list) and not all(source.match(str(item)) for item in items):
            raise ValueError("each source must look like https://host or https://*.host")
        return items

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> object:
        items = _split(value)
        if isinstance(items, list):
            for item in items:
                ipaddress.ip_network(item, strict=False)
        return items

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        items = _split(value)
        if isinstance(items, list):
            return [item.rstrip("/").lower() for item in items]
        return items

    @field_validator("byo_providers", mode="before")
    @classmethod
    def _byo_presets(cls, value: object) -> object:
        items = _split(value)
        if isinstance(items, list):
            unknown = sorted({str(item) for item in items} - set(PRESETS))
            if unknown:
                raise ValueError(
                    f"unknown preset {', '.join(unknown)}; known: {', '.join(sorted(PRESETS))}"
                )
        return items

    @field_validator("byo_custom_providers", mode="before")
    @classmethod
    def _byo_custom_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else []
            except ValueError:
                raise ValueError("must be a JSON list of providers") from None
        return value

    @field_validator("byo_custom_providers")
    @classmethod
    def _byo_custom(cls, value: list[ByoProvider], info: ValidationInfo) -> list[ByoProvider]:
        ids = [p.id for p in value] + list(info.data.get("byo_providers") or [])
        if len(ids) != len(set(ids)):
            raise ValueError("provider ids must be unique (presets included)")
        return value

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            value = "/" + value
        return value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("body_size_limit", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str | int) else value

    @property
    def reads_per_client(self) -> int:
        """Reads per client and window (default: twice RATE_LIMIT_MAX_PER_IP)."""
        return self.rate_limit_reads_per_ip or 2 * self.rate_limit_max_per_ip

    @property
    def stream_handshakes_per_client(self) -> int:
        """WebSocket/SSE handshakes per client and window (default: RATE_LIMIT_MAX_PER_IP)."""
        return self.rate_limit_streams_per_ip or self.rate_limit_max_per_ip

    @property
    def sockets_per_client(self) -> int:
        """Open sockets per client (default: a third of RATE_LIMIT_MAX_PER_IP, at least 20)."""
        return self.max_sockets_per_client or max(20, self.rate_limit_max_per_ip // 3)

    @property
    def concurrent_reads_per_client(self) -> int:
        """Reads of one client in flight (default: RATE_LIMIT_MAX_PER_IP / 10, at least 8)."""
        return self.reads_in_flight_per_client or max(8, self.rate_limit_max_per_ip // 10)

    @property
    def byo_provider_table(self) -> dict[str, ByoProvider]:
        """The providers visitors may pick, by id: enabled presets, then custom ones."""
        enabled = [PRESETS[name] for name in self.byo_providers]
        return {p.id: p for p in [*enabled, *self.byo_custom_providers]}

    @property
    def captcha_enabled(self) -> bool:
        """True when session creation needs a CAPTCHA answer."""
        return self.captcha_verify_url is not None

    @property
    def captcha_csp(self) -> list[str]:
        """Sources the pages' CSP allows for the CAPTCHA provider (none when the hook is off)."""
        if not self.captcha_enabled:
            return []
        if self.captcha_csp_sources:
            return self.captcha_csp_sources
        if self.captcha_script_url is None:
            return []
        parts = urlsplit(self.captcha_script_url)
        return [f"{parts.scheme}://{parts.netloc}"]

    @property
    def session_secrets(self) -> list[bytes]:
        """SESSION_SECRET's values as bytes (empty: derive one from the codes)."""
        return [secret.get_secret_value().encode() for secret in self.session_secret]

    @property
    def access_codes(self) -> list[bytes]:
        """The valid access codes as bytes (for constant-time comparison)."""
        return [code.get_secret_value().encode() for code in self.chat_password]

    @property
    def mounts(self) -> list[str]:
        """Route prefixes: ``/api`` and, with BASE_PATH, ``<BASE_PATH>/api``."""
        return ["/api"] + ([f"{self.base_path}/api"] if self.base_path else [])
