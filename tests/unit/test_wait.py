"""tests.support.wait: every wait ends, with a message naming what was awaited."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.wait import wait_until, wait_until_sync


async def test_a_probe_that_keeps_returning_false_times_out_with_the_message() -> None:
    calls = 0

    async def never() -> bool:
        nonlocal calls
        calls += 1
        return False

    with pytest.raises(TimeoutError, match=r"waiting for the reply \(last value: False\)"):
        await wait_until(never, 0.1, "the reply")
    assert calls > 1


async def test_ignored_errors_count_as_not_yet_and_are_chained_on_timeout() -> None:
    def down() -> bool:
        raise ConnectionError("redis restarting")

    with pytest.raises(TimeoutError, match="redis restarting") as info:
        await wait_until(down, 0.1, "redis", ignore=(ConnectionError,))
    assert isinstance(info.value.__cause__, ConnectionError)


async def test_other_errors_propagate_at_once() -> None:
    calls = 0

    def broken() -> bool:
        nonlocal calls
        calls += 1
        raise ValueError("bug in the probe")

    with pytest.raises(ValueError, match="bug in the probe"):
        await wait_until(broken, 10, "anything", ignore=(ConnectionError,))
    assert calls == 1


async def test_returns_the_first_truthy_value_of_a_sync_or_async_probe() -> None:
    values = iter([None, [], ["frame"]])
    assert await wait_until(lambda: next(values), 5, "frames") == ["frame"]

    async def ready() -> str:
        return "yes"

    assert await wait_until(ready, 5, "ready") == "yes"


async def test_wake_event_rechecks_before_the_interval() -> None:
    changed = asyncio.Event()
    box: list[str] = []

    async def produce() -> None:
        await asyncio.sleep(0)
        box.append("frame")
        changed.set()

    task = asyncio.create_task(produce())
    # An interval longer than the timeout: only the wake event can make this succeed.
    assert await wait_until(lambda: list(box), 5, "a frame", interval=60, wake=changed) == ["frame"]
    await task


def test_sync_variant_times_out_with_the_message_and_uses_the_pause() -> None:
    pauses: list[float] = []
    with pytest.raises(TimeoutError, match="waiting for the banner"):
        wait_until_sync(lambda: False, 0.05, "the banner", pause=pauses.append)
    assert pauses
    assert wait_until_sync(lambda: "shown", 1, "the banner", pause=pauses.append) == "shown"


def test_sync_variant_ignores_the_errors_it_is_told_to_and_chains_the_last() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("not listening yet")

    with pytest.raises(TimeoutError, match="not listening yet") as info:
        wait_until_sync(refused, 0.05, "the server", pause=lambda _: None, ignore=(OSError,))
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
