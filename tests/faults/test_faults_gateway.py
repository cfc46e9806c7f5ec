"""Gateways under fault: SIGTERM and SIGKILL while replies stream; a socket that never reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import gateway_restart, slow_reader

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.timeout(90)
async def test_gateway_sigterm_and_crash_clients_resume_on_another_gateway(
    tmp_path: Path,
) -> None:
    r = await gateway_restart(tmp_path)
    print(f"\nreconnect after SIGTERM {r.reconnect_after_term}")
    print(f"reconnect after SIGKILL {r.reconnect_after_kill}")
    assert r.term_close == {"ws-v2": 1012, "ws-v1": 1012, "sse-v2": "EOF"}
    assert r.term_exit_code == 0
    assert r.term_exit_seconds < 5
    for name, check in r.streams.items():
        assert check.exact, (name, check)
        assert check.resyncs == 0, name
    assert r.replies == 2
    assert r.duplicate_replies == 0


@pytest.mark.timeout(120)
async def test_stalled_socket_is_dropped_while_200_others_get_every_frame(
    tmp_path: Path,
) -> None:
    r = await slow_reader(tmp_path)
    print(
        f"\nstalled socket closed {r.stalled_close} after ~{r.stalled_disconnected_after_events} "
        f"events; gateway RSS {r.rss_before_mb} -> peak {r.rss_peak_mb} -> {r.rss_after_mb} MB"
    )
    assert r.stalled_close == 4000
    assert r.stalled_disconnected_after_events is not None
    assert r.readers_exact == r.readers
    assert r.readers_lost == 0
    assert r.readers_duplicates == 0
    assert r.readers_disconnected == 0
    assert r.rss_peak_mb - r.rss_before_mb < 64  # flat: nothing piles up for the stalled one
