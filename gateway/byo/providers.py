"""The providers a visitor may pick: an operator's allow-list, never a URL a visitor typed.

Presets cover well-known OpenAI-compatible APIs and are off until named in
``BYO_PROVIDERS``; ``BYO_CUSTOM_PROVIDERS`` (JSON) adds others, such as a self-hosted
server or, in tests and the demo, a loopback fake.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MODEL_NAME", "PRESETS", "ByoProvider"]

#: What a model name may look like (vendor/model:tag@version ...): no spaces, no controls.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}", re.ASCII)


class ByoProvider(BaseModel):
    """One OpenAI-compatible provider: ``{baseUrl}/chat/completions`` and ``{baseUrl}/models``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    name: str = Field(min_length=1, max_length=60)
    base_url: str = Field(alias="baseUrl")
    #: Models offered in the widget's list (a visitor may still type another name).
    models: tuple[str, ...] = ()
    #: True when ``GET {baseUrl}/models`` lists the models (asked with the visitor's key).
    models_endpoint: bool = Field(default=False, alias="modelsEndpoint")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("baseUrl must be an http(s) URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("baseUrl must not carry credentials, a query or a fragment")
        return value.strip().rstrip("/")

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for model in value:
            if not MODEL_NAME.fullmatch(model):
                raise ValueError("every model name must match [A-Za-z0-9][A-Za-z0-9._:/@+-]*")
        return value


def _preset(id_: str, name: str, base_url: str, *models: str) -> ByoProvider:
    return ByoProvider(id=id_, name=name, base_url=base_url, models=models, models_endpoint=True)


#: Well-known OpenAI-compatible APIs, enabled by id in ``BYO_PROVIDERS``.
PRESETS: dict[str, ByoProvider] = {
    p.id: p
    for p in (
        _preset("openai", "OpenAI", "https://api.openai.com/v1", "gpt-4o-mini", "gpt-4o"),
        _preset(
            "openrouter",
            "OpenRouter",
            "https://openrouter.ai/api/v1",
            "openai/gpt-4o-mini",
            "meta-llama/llama-3.1-8b-instruct",
        ),
        _preset("groq", "Groq", "https://api.groq.com/openai/v1", "llama-3.1-8b-instant"),
        _preset(
            "together",
            "Together AI",
            "https://api.together.xyz/v1",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
        ),
        _preset("mistral", "Mistral AI", "https://api.mistral.ai/v1", "mistral-small-latest"),
        _preset("deepseek", "DeepSeek", "https://api.deepseek.com/v1", "deepseek-chat"),
    )
}
