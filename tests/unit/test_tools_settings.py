"""ToolSettings from the environment, and the scheduled refresh's arq wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tools import ToolSettings
from tools.refresh_content import RefreshOptions
from tools.scheduled_refresh import (
    JOB_NAME,
    parse_cron,
    refresh_content_job,
    refresh_cron_jobs,
)
from tools.settings import DEFAULT_CONTENT_DIR


def test_defaults() -> None:
    settings = ToolSettings(_env_file=None)
    assert settings.content_dir == DEFAULT_CONTENT_DIR
    assert (DEFAULT_CONTENT_DIR / "bio.md").is_file()
    assert str(settings.live_site_base_url) == "https://example.com/"
    assert settings.enhancement_max_files == 100
    assert settings.enhancement_max_per_chat == 3
    assert settings.tool_timeout_seconds == 10
    assert settings.search_api_url is None
    assert settings.content_refresh_enabled is False


def test_original_env_names_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTENT_DIR", "/srv/content")
    monkeypatch.setenv("SEARCH_API_URL", "http://127.0.0.1:8888/search")
    monkeypatch.setenv("SEARCH_API_KEY", "s3cret")
    monkeypatch.setenv("SEARCH_MAX_RESULTS", "3")
    monkeypatch.setenv("LIVE_SITE_BASE_URL", "https://mbabbott.com")
    monkeypatch.setenv("LIVE_ALLOWED_HOSTS", "mbabbott.com, www.mbabbott.com ,")
    monkeypatch.setenv("LIVE_ALLOWED_URLS", "https://x.com/someone")
    monkeypatch.setenv("ENHANCEMENT_DIR", "/srv/ideas")
    monkeypatch.setenv("GITHUB_OWNER", "someone")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_x")
    monkeypatch.setenv("TOOL_TIMEOUT_SECONDS", "4.5")
    monkeypatch.setenv("CONTENT_REFRESH_ENABLED", "true")
    monkeypatch.setenv("CONTENT_REFRESH_CRON", "0 3 * * 1")
    settings = ToolSettings(_env_file=None)
    assert settings.content_dir == Path("/srv/content")
    assert str(settings.search_api_url) == "http://127.0.0.1:8888/search"
    assert settings.search_api_key is not None
    assert settings.search_api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert "ghp_x" not in repr(settings)
    assert settings.live_allowed_hosts == ["mbabbott.com", "www.mbabbott.com"]
    assert settings.live_allowed_urls == ["https://x.com/someone"]
    assert settings.github_owner == "someone"
    assert settings.tool_timeout_seconds == 4.5
    assert settings.content_refresh_enabled is True


def test_blank_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_API_URL", "")
    monkeypatch.setenv("GITHUB_TOKEN", " ")
    settings = ToolSettings(_env_file=None)
    assert settings.search_api_url is None
    assert settings.github_token is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"search_max_results": 6},
        {"enhancement_max_files": 0},
        {"content_refresh_cron": "* * *"},
        {"github_owner": "../etc"},
        {"tool_timeout_seconds": 0},
    ],
)
def test_invalid_values_fail_fast(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ToolSettings(_env_file=None, **overrides)


def test_refresh_touches_github_only_for_an_explicit_owner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GITHUB_OWNER", raising=False)
    assert RefreshOptions.from_settings(ToolSettings(_env_file=None)).github_owner is None
    monkeypatch.setenv("GITHUB_OWNER", "someone")
    monkeypatch.setenv("CONTENT_REFRESH_REPOS", "Dice, Garden")
    options = RefreshOptions.from_settings(ToolSettings(_env_file=None))
    assert options.github_owner == "someone"
    assert options.repo_allowlist == {"dice", "garden"}


def test_parse_cron() -> None:
    assert parse_cron("17 4 * * *") == {
        "minute": {17}, "hour": {4}, "day": None, "month": None, "weekday": None,
    }  # fmt: skip
    spec = parse_cron("*/20 1-3 1,15 6 1-5")
    assert spec["minute"] == {0, 20, 40}
    assert spec["hour"] == {1, 2, 3}
    assert spec["day"] == {1, 15}
    assert spec["month"] == {6}
    assert spec["weekday"] == {0, 1, 2, 3, 4}  # Monday..Friday in arq's numbering
    assert parse_cron("0 0 * * 0,7")["weekday"] == {6}  # Sunday
    for bad in ("61 * * * *", "* * * *", "a b c d e", "*/0 * * * *", "5-1 * * * *"):
        with pytest.raises(ValueError, match="cron"):
            parse_cron(bad)


def test_cron_jobs_only_when_enabled() -> None:
    assert refresh_cron_jobs(ToolSettings(_env_file=None)) == []
    jobs = refresh_cron_jobs(
        ToolSettings(_env_file=None, content_refresh_enabled=True, content_refresh_cron="5 2 * * *")
    )
    assert len(jobs) == 1
    job = jobs[0]
    assert job.name == JOB_NAME
    assert job.coroutine is refresh_content_job
    assert (job.minute, job.hour, job.unique, job.run_at_startup) == ({5}, {2}, True, False)


async def test_job_needs_settings_in_ctx() -> None:
    with pytest.raises(RuntimeError, match="tool_settings"):
        await refresh_content_job({})


async def test_job_with_nothing_to_do_reports_instead_of_raising(tmp_path: Path) -> None:
    settings = ToolSettings(_env_file=None, content_dir=tmp_path / "content")
    result = await refresh_content_job({"tool_settings": settings})
    assert result == {"ok": False, "error": "nothing to refresh: no site root and no GitHub owner"}
    assert not (tmp_path / "content").exists()


async def test_job_refreshes_from_a_local_site(tmp_path: Path) -> None:
    site = tmp_path / "www"
    site.mkdir()
    (site / "index.html").write_text("<h1>Home</h1><p>Welcome</p>")
    settings = ToolSettings(
        _env_file=None, content_dir=tmp_path / "content", content_refresh_site_root=str(site)
    )
    result = await refresh_content_job({"tool_settings": settings})
    assert result["ok"] is True
    assert result["pages"] == ["index.txt"]
    assert (tmp_path / "content" / "index.txt").read_text() == "Home\n\nWelcome\n"
