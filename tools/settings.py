"""Settings for the tools, read from the worker's environment (names kept from the original)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, HttpUrl, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tools.host_entries import parse_host_entry

__all__ = ["DEFAULT_CONTENT_DIR", "ToolSettings"]

#: The curated example bundle shipped with the repository.
DEFAULT_CONTENT_DIR = Path(__file__).resolve().parent.parent / "content"

#: A list read from the environment as ``a, b, c`` (not JSON).
CommaList = Annotated[list[str], NoDecode]


class ToolSettings(BaseSettings):
    """Everything the tools and the content refresher read from the environment.

    Env names are the upper-cased field names (``CONTENT_DIR``, ``SEARCH_API_URL``,
    ``LIVE_ALLOWED_HOSTS``...). Built once by the process entry point and passed to
    ``create_default_registry``; tests pass keyword arguments with ``_env_file=None``.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_prefix="", case_sensitive=False, extra="ignore", frozen=True
    )

    # Cached content: where the worker reads and the refresher writes.
    content_dir: Path = DEFAULT_CONTENT_DIR
    #: First name used by the system prompt and tool descriptions.
    site_owner_name: str = Field("Matthew", min_length=1, max_length=40)

    # search_web: a SearxNG-style JSON API; unset disables the tool's upstream.
    search_api_url: HttpUrl | None = None
    search_api_key: SecretStr | None = None
    search_max_results: int = Field(5, ge=1, le=5)
    search_timeout_seconds: float = Field(10.0, gt=0, le=60)

    # fetch_live_page / fetch_live_page_html. The base URL's host (and its www. twin) is
    # always allowed; LIVE_ALLOWED_URLS entries restrict their host to those URL prefixes.
    live_site_base_url: HttpUrl = HttpUrl("https://example.com")
    live_allowed_hosts: CommaList = Field(default_factory=list)
    live_allowed_urls: CommaList = Field(default_factory=list)
    live_fetch_timeout_seconds: float = Field(5.0, gt=0, le=60)

    # write_enhancement_request: per chat per UTC day, and in the folder in all (unreviewed)
    enhancement_dir: Path = Path("data/enhancements")
    enhancement_max_per_chat: int = Field(3, ge=1, le=100)
    enhancement_max_files: int = Field(100, ge=1, le=10_000)
    enhancement_max_bytes: int = Field(8000, ge=512, le=100_000)

    # GitHub cache: read by the GitHub tools, written by the refresher (token used only there).
    github_owner: str = Field("example-owner", pattern=r"^[A-Za-z0-9-]{1,39}$")
    github_token: SecretStr | None = None
    github_api_url: HttpUrl = HttpUrl("https://api.github.com")

    # Executor: the ceiling for any single tool call.
    tool_timeout_seconds: float = Field(10.0, gt=0, le=300)
    #: Bytes of tool results one chat keeps (in its memory, for the model); past it a
    #: result is cut and the model told (worker.toolkit).
    tool_output_chat_max_bytes: int = Field(65_536, ge=4096, le=10_000_000)

    # Scheduled refresh (the worker registers the arq cron job when enabled).
    content_refresh_enabled: bool = False
    content_refresh_cron: str = "17 4 * * *"
    #: A local site folder or a URL; unset means "GitHub only".
    content_refresh_site_root: str | None = None
    content_refresh_paths: CommaList = Field(default_factory=lambda: [""])
    content_refresh_crawl: bool = False
    content_refresh_crawl_depth: int = Field(2, ge=0, le=10)
    content_refresh_max_depth: int = Field(2, ge=0, le=10)
    #: Only these repositories are cached when set (names, case-insensitive).
    content_refresh_repos: CommaList = Field(default_factory=list)

    @field_validator(
        "live_allowed_hosts",
        "live_allowed_urls",
        "content_refresh_paths",
        "content_refresh_repos",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("live_allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_host_entry(entry)  # raises ValueError naming the accepted forms
        return value

    @field_validator(
        "search_api_url",
        "search_api_key",
        "github_token",
        "content_refresh_site_root",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("content_refresh_cron")
    @classmethod
    def _cron_has_five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("needs five fields: minute hour day month weekday")
        return value
