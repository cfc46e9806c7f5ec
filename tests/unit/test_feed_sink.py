"""A listener with a sink (the WebSocket hot path): live events straight to the consumer."""

from __future__ import annotations

import pytest

from bus import EventRecord, LogRestarted
from bus.pubsub import Listener

DATA = '{"type":"workerState","state":"queued"}'


def _record(event_id: str) -> EventRecord:
    return EventRecord(event_id, DATA)


def test_a_sink_takes_live_events_above_the_replayed_point_once_and_in_order() -> None:
    got: list[str] = []
    listener = Listener("c", queue_size=10)
    # The replay read the log up to 5-0; the feed had dispatched only up to 3-0.
    listener.install(lambda r: got.append(r.event_id), "5-0", on_restart=lambda: None)
    for event_id in ("4-0", "5-0", "6-0", "7-0"):
        listener.push(_record(event_id))
    assert got == ["6-0", "7-0"]
    assert listener.qsize() == 0  # nothing was queued


def test_a_sink_cannot_be_installed_over_queued_events() -> None:
    listener = Listener("c", queue_size=10)
    listener.push(_record("1-0"))
    with pytest.raises(AssertionError):
        listener.install(lambda r: None, "0-0", on_restart=lambda: None)


def test_a_restart_under_a_sink_tells_the_consumer_and_stops_the_sink() -> None:
    got: list[str] = []
    restarts: list[bool] = []
    listener = Listener("c", queue_size=10)
    listener.install(lambda r: got.append(r.event_id), "0-0", lambda: restarts.append(True))
    listener.push(_record("1-0"))
    listener.restart()
    listener.push(_record("2-0"))
    assert got == ["1-0"]
    assert restarts == [True]


async def test_without_a_sink_a_restart_ends_the_reader_with_log_restarted() -> None:
    listener = Listener("c", queue_size=10)
    listener.push(_record("1-0"))
    listener.restart()
    assert (await listener.get()).event_id == "1-0"
    with pytest.raises(LogRestarted):
        await listener.get()
