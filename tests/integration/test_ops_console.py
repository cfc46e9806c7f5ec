"""``terrarium-ops`` as an operator runs it: a subprocess against a real redis-server.

``show``, ``export``, ``follow`` and the error paths read a known conversation written with
fixed event ids (so times are known); ``export`` is compared with the gateway's own
transcript route. ``requeue`` and ``replay`` (tests/integration/test_ops_worker.py) run
against a real worker process and the demo agent over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bus import BusKeys, ChatLog
from bus.client import create_redis
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z
CHAT = "d06b8b96-2f4e-4c55-9a07-5b0c3f1e2a11"
OTHER = "d06b0000-0000-4000-8000-000000000000"
M1, R1, M2 = (
    "11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa",
    "22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb",
    "33333333-cccc-4ccc-8ccc-cccccccccccc",
)


@dataclass(frozen=True)
class Ran:
    status: int
    out: str
    err: str


async def run_ops(redis_url: str, *args: str, env: dict[str, str] | None = None) -> Ran:
    """``python -m ops ARGS`` with ``REDIS_URL`` set, to completion."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops",
        *args,
        env={**os.environ, "REDIS_URL": redis_url, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def known_events(chat_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A two-question conversation: tool call, streamed reply, then an unanswered question."""

    def at(ms: int, seq: int = 0) -> str:
        return f"{T0 + ms}-{seq}"

    def base(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "v": 1, "chatId": chat_id, **fields}

    def state(ms: int, value: str) -> dict[str, Any]:
        return base("workerState", state=value, detail=None, updatedAt=_iso(T0 + ms))

    def chunk(ms: int, content: str, done: bool = False) -> dict[str, Any]:
        return base(
            "assistantChunk", content=content, done=done, emittedAt=_iso(T0 + ms), replyTo=M1
        )

    question = base(
        "message",
        id=M1,
        sender="Visitor",
        content="Which projects are you working on?",
        createdAt=_iso(T0),
        replyTo=None,
        status=None,
    )
    answer = base(
        "message",
        id=R1,
        sender="Terra",
        content="Mostly the terrarium.\nAsk me more!",
        createdAt=_iso(T0 + 2300),
        replyTo=M1,
        status=None,
    )
    follow_up = base(
        "message",
        id=M2,
        sender="Visitor",
        content="Thanks!",
        createdAt=_iso(T0 + 65_000),
        replyTo=None,
        status=None,
    )
    tool = {"replyTo": M1, "callId": "call-1", "name": "search_site"}
    return [
        (at(0), question),
        (at(0, 1), state(0, "queued")),
        (at(120), state(120, "processing")),
        (at(450), base("toolActivity", status="started", detail=None, **tool)),
        (at(1450), base("toolActivity", status="done", detail="1.0 s", **tool)),
        (at(1500), chunk(1500, "Mostly ")),
        (at(1540), chunk(1540, "the terrarium.\nAsk ")),
        (at(1900), chunk(1900, "me more!")),
        (at(2300), answer),
        (at(2300, 1), chunk(2300, "", done=True)),
        (at(2300, 2), state(2300, "responded")),
        (at(65_000), follow_up),
        (at(65_000, 1), state(65_000, "queued")),
    ]


async def write_chat(
    redis_url: str, chat_id: str, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """Store ``events`` with their fixed ids, as the bus's append script lays them out."""
    keys = BusKeys()
    redis = create_redis(redis_url, client_name="test-writer")
    try:
        pipe = redis.pipeline(transaction=False)
        for event_id, fields in events:
            data = json.dumps(fields)
            pipe.xadd(keys.chat_events(chat_id), {"d": data}, id=event_id)
            pipe.hsetnx(keys.chat_meta(chat_id), "epoch", event_id)
            pipe.hset(keys.chat_meta(chat_id), "last", event_id)
            if fields["type"] == "message":
                pipe.xadd(keys.chat_messages(chat_id), {"d": data}, id=event_id)
                if fields["sender"] == "Terra":
                    pipe.hset(keys.chat_replies(chat_id), fields["replyTo"], event_id)
            if fields["type"] == "workerState":
                pipe.hset(keys.chat_meta(chat_id), "state", data)
        await pipe.execute()
    finally:
        await redis.aclose()


@pytest.fixture
async def known_chat(redis_server: RedisServer) -> str:
    await write_chat(redis_server.url, CHAT, known_events(CHAT))
    other = [(f"{T0 + 10}-0", known_events(OTHER)[0][1])]
    await write_chat(redis_server.url, OTHER, other)
    return CHAT


SHOWN = f"""\
chat {CHAT}: 13 events
-- 2026-01-01 (UTC) --
00:00:00.000             visitor   [11111111] Which projects are you working on?
00:00:00.000    +0.000s  state     queued
00:00:00.120    +0.120s  state     processing
00:00:00.450    +0.330s  tool      [re:11111111] search_site started
00:00:01.450    +1.000s  tool      [re:11111111] search_site done (1.0 s)
00:00:01.500    +0.050s  stream    [re:11111111] 3 chunks, 34 chars over 0.400s
00:00:02.300    +0.400s  terra     [re:11111111] Mostly the terrarium.
                                   Ask me more!
00:00:02.300    +0.000s  state     responded
00:01:05.000     +1m02s  visitor   [33333333] Thanks!
00:01:05.000    +0.000s  state     queued
"""


async def test_show_prints_a_known_conversation_exactly(
    known_chat: str, redis_server: RedisServer
) -> None:
    ran = await run_ops(redis_server.url, "show", known_chat[:8])
    assert (ran.status, ran.err) == (0, "")
    assert ran.out == SHOWN


async def test_show_json_lines_carry_every_event_id(
    known_chat: str, redis_server: RedisServer
) -> None:
    ran = await run_ops(redis_server.url, "show", known_chat, "--json")
    assert ran.status == 0, ran.err
    lines = [json.loads(line) for line in ran.out.splitlines()]
    ids = [event_id for line in lines for event_id in line["eventIds"]]
    assert ids == [event_id for event_id, _ in known_events(CHAT)]
    stream = next(line for line in lines if line.get("type") == "stream")
    assert (stream["chunks"], stream["content"]) == (3, "Mostly the terrarium.\nAsk me more!")
    unfolded = await run_ops(redis_server.url, "show", known_chat, "--chunks")
    assert unfolded.out.count(" chunk ") == 4


async def test_chats_lists_newest_first_with_filters(
    known_chat: str, redis_server: RedisServer
) -> None:
    ran = await run_ops(redis_server.url, "chats", "--json")
    assert ran.status == 0, ran.err
    rows = [json.loads(line) for line in ran.out.splitlines()]
    assert [(r["chatId"], r["messages"], r["state"]) for r in rows] == [
        (CHAT, 3, "queued"),
        (OTHER, 1, "idle"),
    ]
    assert rows[0]["lastActivity"] == "2026-01-01 00:01:05"
    table = await run_ops(redis_server.url, "chats", "--since", "2026-01-01T00:00:30")
    assert table.out.splitlines()[0].split() == [
        "CHAT",
        "LAST",
        "ACTIVITY",
        "(UTC)",
        "AGO",
        "MESSAGES",
        "STATE",
    ]
    assert [line.split()[0] for line in table.out.splitlines()[1:]] == [CHAT]
    error_state = await run_ops(redis_server.url, "chats", "--state", "error")
    assert (error_state.out, error_state.err) == ("", "no chats match\n")


@pytest.mark.parametrize(
    ("chat", "message"),
    [
        ("ffffffff", "terrarium-ops: no chat 'ffffffff'\n"),
        (
            "d06b",
            f"terrarium-ops: 2 chats start with 'd06b': {OTHER}, {CHAT}; give more of the id\n",
        ),
        ("d0*", "terrarium-ops: not a chat id: 'd0*' (letters, digits, '-' and '_' only)\n"),
    ],
)
async def test_a_missing_or_ambiguous_chat_is_one_line_and_a_failure(
    known_chat: str, redis_server: RedisServer, chat: str, message: str
) -> None:
    for verb in ("show", "export"):
        ran = await run_ops(redis_server.url, verb, chat)
        assert (ran.status, ran.out, ran.err) == (1, "", message)


async def test_unreachable_redis_and_bad_settings_are_one_line_without_the_secret() -> None:
    from tests.support.redis_server import free_port

    url = f"redis://ops:s3cret-pass@127.0.0.1:{free_port()}/0"
    ran = await run_ops(url, "chats")
    assert ran.status == 1
    assert ran.err.count("\n") == 1
    assert "Redis unreachable" in ran.err
    assert "s3cret" not in ran.err + ran.out
    bad = await run_ops("http://ops:s3cret-pass@example", "chats")
    assert bad.status == 2
    assert bad.err.startswith("terrarium-ops: invalid configuration: REDIS_URL (")
    assert "s3cret" not in bad.err + bad.out


async def test_export_round_trips_and_matches_the_visitors_download(
    known_chat: str, redis_server: RedisServer, gateway: TestServer, tmp_path: Path
) -> None:
    for fmt in ("md", "json"):
        saved = tmp_path / f"transcript.{fmt}"
        ran = await run_ops(redis_server.url, "export", CHAT[:8], "--format", fmt, "-o", str(saved))
        assert (ran.status, ran.out, ran.err) == (0, "", f"wrote {saved}\n")
        url = gateway.make_url(f"/terrarium/api/chat/{CHAT}/transcript")
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, params={"accessCode": ACCESS_CODE, "format": fmt}) as resp,
        ):
            assert resp.status == 200
            assert saved.read_bytes() == await resp.read()
        printed = await run_ops(redis_server.url, "export", CHAT, "--format", fmt)
        assert printed.out.rstrip("\n") == saved.read_text().rstrip("\n")
    exported = json.loads(saved.read_text())
    written = [(eid, f) for eid, f in known_events(CHAT) if f["type"] == "message"]
    assert [m["eventId"] for m in exported["messages"]] == [eid for eid, _ in written]
    assert [(m["id"], m["sender"], m["content"]) for m in exported["messages"]] == [
        (f["id"], f["sender"], f["content"]) for _, f in written
    ]


@pytest.fixture
async def chat_log_client(redis_server: RedisServer) -> AsyncIterator[ChatLog]:
    redis = create_redis(redis_server.url, client_name="test")
    try:
        yield ChatLog(redis, BusKeys())
    finally:
        await redis.aclose()


async def _follow(redis_url: str, *args: str) -> asyncio.subprocess.Process:
    """Start ``follow``; return once it says it is subscribed (its stderr barrier)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops",
        "follow",
        *args,
        env={**os.environ, "REDIS_URL": redis_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert line.decode().startswith("following "), line
    return proc


async def interrupt(proc: asyncio.subprocess.Process) -> None:
    """Ctrl-C: the console exits 0 without a traceback (its pipes are read to the end)."""
    proc.send_signal(2)
    _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    assert b"Traceback" not in err


async def _line_with(proc: asyncio.subprocess.Process, text: str) -> str:
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, "follow ended"
        if text in line:
            return line


async def test_follow_sees_a_new_message_and_a_new_chat(
    known_chat: str, redis_server: RedisServer, chat_log_client: ChatLog
) -> None:
    one = await _follow(redis_server.url, known_chat[:8])
    every = await _follow(redis_server.url, "--all")
    try:
        accepted = await chat_log_client.accept_visitor_message(CHAT, "Anyone there?")
        line = await _line_with(one, "Anyone there?")
        assert line.endswith(f"visitor   [{accepted.message['id'][:8]}] Anyone there?\n")
        assert "queued" in await _line_with(one, "state")
        assert f"visitor   {CHAT[:8]}  [" in await _line_with(every, "Anyone there?")
        await chat_log_client.accept_visitor_message("brand-new-chat", "Hello")
        fresh = await _line_with(every, "Hello")
        assert "brand-ne  [" in fresh
    finally:
        for proc in (one, every):
            await interrupt(proc)


async def test_every_verb_has_help() -> None:
    verbs = ("chats", "show", "follow", "export", "jobs", "dead", "requeue", "replay")
    # One process per verb, side by side: each is mostly interpreter start-up.
    runs = await asyncio.gather(
        *(run_ops("redis://127.0.0.1:1/0", verb, "--help") for verb in verbs)
    )
    for verb, ran in zip(verbs, runs, strict=True):
        assert ran.status == 0
        assert ran.out.startswith(f"usage: terrarium-ops {verb}")
