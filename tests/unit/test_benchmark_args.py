"""The fan-out benchmark's argument checks (the end-to-end run is in tests/integration)."""

from __future__ import annotations

import pytest


def test_arguments_are_checked() -> None:
    from benchmarks.fanout import parse_args

    args = parse_args(["--sockets", "4", "--chats", "2"])
    assert (args.sockets, args.chats, args.rounds) == (4, 2, 1)
    with pytest.raises(SystemExit):
        parse_args(["--sockets", "1", "--chats", "2"])
