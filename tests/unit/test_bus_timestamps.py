"""Event timestamps (``iso_now``): ISO 8601 in UTC with milliseconds and ``Z``, as JavaScript's
``toISOString`` prints them, formatted without a datetime object per event (issue 10)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from bus.schemas import iso_at_ns, iso_now


def reference(ns: int) -> str:
    moment = datetime.fromtimestamp(ns // 1000 / 1_000_000, UTC)  # whole microseconds
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_stamps_read_as_datetime_prints_them() -> None:
    rng = random.Random(7)
    base = 1_796_327_063 * 10**9
    moments = [base + rng.randrange(0, 3 * 10**9) for _ in range(2000)]
    moments += [0, 999_999_999, 10**9, 1_796_327_063_999_999_999, 4_102_444_800 * 10**9]
    for ns in sorted(moments):  # seconds repeat and change: the cached part too
        assert iso_at_ns(ns) == reference(ns)


def test_now_is_now() -> None:
    before = datetime.now(UTC)
    stamp = datetime.fromisoformat(iso_now().replace("Z", "+00:00"))
    after = datetime.now(UTC)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamp <= after
    assert iso_now().endswith("Z")
    assert len(iso_now()) == len("2026-12-03T19:44:23.377Z")
