"""``terrarium-ops VERB ...``: the command line, one function per verb.

Errors a person can act on (a missing chat, Redis unreachable, a bad setting, a refused
requeue) are one line on stderr and a non-zero exit status, never a traceback; exit 2 is a
usage or configuration problem, 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bus.access_codes import ACCESS_CODE_ID
from bus.errors import BusError, BusRejected, BusUnavailable
from bus.keys import MAX_PARTITIONS
from bus.migrate import MigrationReport, WorkersAlive
from bus.ops import (
    AmbiguousChat,
    LayoutRefused,
    OpsBus,
    RequeueRefused,
    UnknownChat,
    open_ops_bus,
)
from ops.export import FORMATS, render_transcript
from ops.output import Output
from ops.settings import ConfigError, OpsSettings, load_settings, load_with
from ops.timeline import Line, Timeline, format_gap

__all__ = ["build_parser", "main", "run"]

PROG = "terrarium-ops"
STATES = ("idle", "queued", "processing", "responded", "error")

Verb = Callable[[argparse.Namespace, OpsBus, Output], Awaitable[int]]


class UsageError(Exception):
    """Arguments that make no sense together (exit status 2)."""


class UnknownCode(Exception):
    """``codes revoke`` of an id that is not stored (exit status 1)."""


# --- verbs ---------------------------------------------------------------------------------
def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(ms: int, now_ms: int) -> str:
    return format_gap(max(0, now_ms - ms)).lstrip("+")


def parse_since(text: str, now: float | None = None) -> int:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``3d``) or an ISO
    time (``2026-12-03T10:00``, UTC unless it says otherwise), as Unix ms."""
    now = time.time() if now is None else now
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return int((now - float(match.group(1)) * scale) * 1000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: use 15m, 2h, 3d or an ISO time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


async def cmd_chats(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    since = parse_since(args.since) if args.since else None
    chats = [
        chat
        for chat in await bus.chats()
        if (since is None or chat.last_activity_ms >= since)
        and (args.state is None or chat.state == args.state)
    ][: args.limit]
    if args.json:
        for chat in chats:
            out.json(
                {
                    "chatId": chat.chat_id,
                    "lastEventId": chat.last_event_id,
                    "lastActivity": _iso(chat.last_activity_ms),
                    "messages": chat.messages,
                    "state": chat.state,
                    "detail": chat.detail,
                }
            )
        return 0
    if not chats:
        out.note("no chats" + (" match" if since is not None or args.state else ""))
        return 0
    now_ms = int(time.time() * 1000)
    out.table(
        ["CHAT", "LAST ACTIVITY (UTC)", "AGO", "MESSAGES", "STATE"],
        [
            [
                chat.chat_id,
                _iso(chat.last_activity_ms),
                _age(chat.last_activity_ms, now_ms),
                str(chat.messages),
                chat.state + (f": {chat.detail}" if chat.detail else ""),
            ]
            for chat in chats
        ],
    )
    return 0


def _print_lines(lines: Sequence[Line], out: Output, as_json: bool) -> None:
    for line in lines:
        if as_json:
            out.json(line.as_json())
        else:
            out.timeline(line)


async def cmd_show(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    chat_id = await bus.resolve_chat(args.chat)
    events = await bus.events(chat_id)
    timeline = Timeline(chunks=args.chunks)
    if not args.json:
        out.text(f"chat {chat_id}: {len(events)} events", style="bold")
    for record in events:
        _print_lines(timeline.feed(record), out, args.json)
    _print_lines(timeline.flush(), out, args.json)
    return 0


async def cmd_follow(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    if args.all == (args.chat is not None):
        raise UsageError("follow needs a CHAT or --all (not both)")
    chat_id = None if args.all else await bus.resolve_chat(args.chat)
    timelines: dict[str, Timeline] = {}
    what = "every chat" if chat_id is None else f"chat {chat_id}"

    def ready() -> None:
        out.note(f"following {what} (Ctrl-C to stop)")

    async for moved, record in bus.follow(chat_id, on_ready=ready):
        timeline = timelines.setdefault(moved, Timeline(chunks=args.chunks))
        lines = timeline.feed(record)
        if record.type == "assistantChunk" and record.fields.get("done"):
            lines += timeline.flush()  # a finished stream is shown at once
        if chat_id is None and not args.json:
            for line in lines:
                line.text = f"{moved[:8]}  {line.text}"
        _print_lines(lines, out, args.json)
    return 0


async def cmd_export(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    chat_id = await bus.resolve_chat(args.chat)
    text = render_transcript(chat_id, await bus.messages(chat_id), args.format)
    if args.output is None:
        out.stream.write(text + ("" if text.endswith("\n") else "\n"))
        out.stream.flush()
    else:
        await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
        out.note(f"wrote {args.output}")
    return 0


async def cmd_jobs(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    waiting, in_progress = await bus.jobs()
    now_ms = int(time.time() * 1000)
    rows = []
    for kind, entries in (("in progress", in_progress), ("waiting", waiting)):
        for entry in entries:
            job = entry.job
            status = "in lane" if entry.in_lane else kind
            record = {
                "jobId": None if entry.in_lane else entry.entry_id,
                "partition": entry.partition,
                "status": status,
                "chatId": job.chat_id if job else None,
                "messageId": job.message_id if job else None,
                "worker": entry.consumer,
                "ageMs": max(0, now_ms - entry.enqueued_ms),
                "idleMs": entry.idle_ms,
                "deliveries": entry.deliveries,
            }
            if args.json:
                out.json(record)
                continue
            rows.append(
                [
                    *([str(entry.partition)] if bus.partitioned else []),
                    "-" if entry.in_lane else entry.entry_id,
                    status,
                    job.chat_id if job else "(malformed)",
                    job.message_id[:8] if job else "",
                    entry.consumer or "-",
                    _age(entry.enqueued_ms, now_ms),
                    format_gap(entry.idle_ms).lstrip("+") if entry.idle_ms is not None else "-",
                    str(entry.deliveries),
                ]
            )
    if args.json:
        return 0
    if not rows:
        out.note("no jobs waiting or in progress")
        return 0
    head = ["JOB", "STATUS", "CHAT", "MESSAGE", "WORKER", "AGE", "IDLE", "DELIVERIES"]
    out.table(["PARTITION", *head] if bus.partitioned else head, rows)
    return 0


async def cmd_dead(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    letters = await bus.dead_letters()
    if args.json:
        for dead in letters:
            out.json(
                {
                    "deadLetterId": dead.ref,
                    "partition": dead.partition,
                    "jobId": dead.job_entry_id,
                    "at": dead.at,
                    "reason": dead.reason,
                    "problems": dead.problems,
                    "deliveries": dead.deliveries,
                    "worker": dead.consumer,
                    "chatId": dead.chat_id,
                    "messageId": dead.message_id,
                    "job": dead.raw,
                }
            )
        return 0
    if not letters:
        out.note("no dead letters")
        return 0
    for dead in letters:
        job = dead.job
        where = f"chat {dead.chat_id or '?'} message {dead.message_id or '?'}"
        if job is None:
            where += " (malformed job)"
        where += f" (partition {dead.partition})" if bus.partitioned else ""
        out.text(f"{dead.ref}  {dead.at}  {where}", style="bold")
        out.text(
            f"  reason: {dead.reason} (job {dead.job_entry_id}, {dead.deliveries} "
            f"deliveries, last by {dead.consumer or '?'})"
        )
        for problem in dead.problems:
            out.text(f"    - {problem}", style="red")
        if job is None:
            out.text(f"  job: {dead.raw[:300]}")
        else:
            out.text(f"  requeue: {PROG} requeue {dead.ref}", style="dim")
    return 0


async def cmd_requeue(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    done = await bus.requeue(args.id)
    out.text(
        f"requeued dead letter {args.id} as job {done.job_entry_id}: chat {done.chat_id}, "
        f"message {done.message_id} gets a second reply (marked by event {done.marker_event_id})"
    )
    return 0


async def cmd_layout_migrate(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    if not 1 <= args.partitions <= MAX_PARTITIONS:
        raise UsageError(f"--partitions must be 1..{MAX_PARTITIONS}")
    report = await bus.migrate_layout(args.partitions, dry_run=args.dry_run)
    _print_migration(report, out)
    return 0


def _print_migration(report: MigrationReport, out: Output) -> None:
    n = report.target.partition_count
    layout = "the legacy layout (1 partition)" if n == 1 else f"{n} partitions"
    sources = " and ".join(sorted(report.sources)) or "nothing to move"
    verb = "would move" if report.dry_run else "moved"
    out.text(
        f"layout migrate to {layout}, from {sources}" + (" (dry run)" if report.dry_run else "")
    )
    out.text(f"chat keys {verb}: {report.chat_keys} ({len(report.chats)} chats)")
    kinds = ", ".join(
        f"{report.jobs[k]} {k}" for k in ("lane", "stream", "pending") if report.jobs[k]
    )
    into = ", ".join(f"{p}: {c}" for p, c in sorted(report.into.items()))
    out.text(
        f"jobs {verb}: {sum(report.jobs.values())}"
        + (f" ({kinds}) into partition {into}" if kinds else "")
    )
    out.text(f"dead letters {verb}: {report.dead_letters}")
    out.text(f"clients' byte budgets {verb}: {report.budgets}")
    if report.finished:
        out.text(f"finished jobs {'to drop' if report.dry_run else 'dropped'}: {report.finished}")
    out.text(f"old keys {'to remove' if report.dry_run else 'removed'}: {len(report.removed)}")
    if report.left:
        out.text(f"left alone ({len(report.left)}): " + " ".join(report.left[:10]), style="red")
    if report.dry_run:
        out.note("dry run: nothing was written")
    elif report.changed:
        setting = "unset REDIS_PARTITIONS" if n == 1 else f"set REDIS_PARTITIONS={n}"
        out.note(f"done: {setting} for every gateway, worker and console, then start them")
    else:
        out.note("nothing to do: the data is already in this layout")


def parse_duration(text: str) -> int:
    """``--expires``: ``90s``, ``30m``, ``12h``, ``7d`` or ``2w``, as milliseconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--expires {text!r}: use 90s, 30m, 12h, 7d or 2w")
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    return int(float(match.group(1)) * scale * 1000)


async def cmd_codes_add(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    expires = int(time.time() * 1000) + parse_duration(args.expires) if args.expires else None
    code, record = await bus.add_access_code(args.label or "", expires)
    until = f"until {_iso(expires)} UTC" if expires is not None else "until revoked"
    if args.json:
        out.json({"id": record.code_id, "code": code, "label": record.label, "expiresAt": expires})
        return 0
    out.text(code)
    out.note(
        f"access code {record.code_id} added, valid {until}. It is shown only now (Redis "
        f"keeps a digest): give it to visitors. Revoke: {PROG} codes revoke {record.code_id}"
    )
    return 0


async def cmd_codes_list(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    now = int(time.time() * 1000)
    codes = await bus.access_codes()
    if args.json:
        for code in codes:
            out.json(
                {
                    "id": code.code_id,
                    "label": code.label,
                    "createdAt": _iso(code.created_ms),
                    "expiresAt": None if code.expires_ms is None else _iso(code.expires_ms),
                    "active": code.active(now),
                }
            )
        return 0
    if not codes:
        out.note("no stored access codes (CHAT_PASSWORD's codes are not listed here)")
        return 0
    out.text(f"{'ID':<9} {'STATE':<8} {'CREATED (UTC)':<20} {'EXPIRES (UTC)':<20} LABEL")
    for code in codes:
        expires = "never" if code.expires_ms is None else _iso(code.expires_ms)
        state = "active" if code.active(now) else "expired"
        out.text(
            f"{code.code_id:<9} {state:<8} {_iso(code.created_ms):<20} {expires:<20} {code.label}"
        )
    return 0


async def cmd_codes_revoke(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    if not ACCESS_CODE_ID.fullmatch(args.id):
        raise UsageError(f"not an access code id: {args.id!r} (8 hex digits, as 'codes list')")
    if not await bus.revoke_access_code(args.id):
        raise UnknownCode(f"no access code {args.id}")
    out.text(f"revoked access code {args.id}: gateways refuse it (and its sessions) within seconds")
    return 0


async def cmd_replay(args: argparse.Namespace, bus: OpsBus, out: Output) -> int:
    # Imported here: the worker's and the tools' modules are only needed by this verb.
    from ops import replay
    from tools import ToolSettings
    from worker.settings import WorkerSettings

    if not args.dry_run:
        raise UsageError("replay runs only with --dry-run (it never writes to the chat)")
    env_file = Path(args.env_file) if args.env_file else None
    agent_url = args.agent_url
    if agent_url is None and args.show_prompt:
        agent_url = "http://agent.invalid/v1/chat/completions"  # never contacted
    worker_settings = load_with(WorkerSettings, env_file, agent_api_url=agent_url)
    tool_settings = load_with(ToolSettings, env_file)
    chat_id = await bus.resolve_chat(args.chat)
    conversation = await bus.conversation(chat_id, args.message)
    body = replay.build_request(conversation, worker_settings, tool_settings)
    if args.show_prompt:
        import json

        out.stream.write(json.dumps(body, ensure_ascii=False, indent=2) + "\n")
        out.stream.flush()
        return 0
    out.note(
        f"replaying message {conversation.target.id} of chat {chat_id} "
        f"({len(body['messages'])} prompt messages) against {worker_settings.agent_base_url}"
    )
    try:
        reply = await replay.send(body, worker_settings, out)
    except replay.AgentFailed as exc:
        out.stream.write("\n")
        raise UsageError(str(exc)) from None
    if reply.content and not reply.content.endswith("\n"):
        out.stream.write("\n")
    if reply.reasoning:
        out.text(f"[reasoning] {reply.reasoning}", style="magenta")
    for call in replay.describe_calls(reply):
        out.text(f"[tool call] {call}", style="yellow")
    out.note(f"finish reason: {reply.finish_reason}; nothing was written to the chat")
    return 0


# --- parsing -------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis to read (default: $REDIS_URL). Prefer the environment: a password "
        "here is visible to other users of the host.",
    )
    group.add_argument(
        "--env-file",
        metavar="PATH",
        help="read settings from this env file too (for example the worker's)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: ``--help`` works on the console and on every verb."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operators' console for terrarium-webchat. Reads REDIS_URL, "
        "REDIS_KEY_PREFIX and REDIS_CA_CERT/REDIS_CLIENT_CERT/REDIS_CLIENT_KEY like the "
        "gateway and the worker; meant for the read-only 'ops' Redis user (requeue writes).",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("chats", parents=[common], help="recent chats, newest first")
    p.add_argument("--since", help="only chats active since: 15m, 2h, 3d or an ISO time")
    p.add_argument("--state", choices=STATES, help="only chats in this worker state")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_chats)

    chat_help = "chat id, or the start of one (as the widget shows it) when unambiguous"
    p = verbs.add_parser("show", parents=[common], help="a chat's timeline")
    p.add_argument("chat", metavar="CHAT", help=chat_help)
    p.add_argument("--chunks", action="store_true", help="one line per reply chunk")
    p.add_argument("--json", action="store_true", help="JSON lines, with every eventId")
    p.set_defaults(func=cmd_show)

    p = verbs.add_parser("follow", parents=[common], help="a chat's timeline, live")
    p.add_argument("chat", metavar="CHAT", nargs="?", help=chat_help)
    p.add_argument("--all", action="store_true", help="every chat")
    p.add_argument("--chunks", action="store_true", help="one line per reply chunk")
    p.add_argument("--json", action="store_true", help="JSON lines, with every eventId")
    p.set_defaults(func=cmd_follow)

    p = verbs.add_parser("export", parents=[common], help="a chat's transcript")
    p.add_argument("chat", metavar="CHAT", help=chat_help)
    p.add_argument("--format", choices=FORMATS, default="md", help="md (default) or json")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("jobs", parents=[common], help="waiting and in-progress jobs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_jobs)

    p = verbs.add_parser("dead", parents=[common], help="dead-lettered jobs and why")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_dead)

    p = verbs.add_parser(
        "requeue",
        parents=[common],
        help="put a dead-lettered job back (needs a Redis user that may write)",
        description="Put a dead-lettered job back on the jobs stream, once. The visitor "
        "already got an apology; the worker now writes a real reply too, the one deliberate "
        "second reply to a message, marked in the chat log. Needs a Redis user allowed to "
        "write (admin), not 'ops'.",
    )
    p.add_argument(
        "id", metavar="ID", help="the dead letter's id as 'dead' prints it (PARTITION/ID)"
    )
    p.set_defaults(func=cmd_requeue)

    p = verbs.add_parser(
        "layout",
        help="the key layout: migrate one Redis to N partitions (writes)",
        description="Key layouts: 'migrate' moves one Redis's chats, jobs and dead letters "
        "to the layout of --partitions N (1 is the legacy layout). Stop every worker and "
        "gateway first (refused while a worker is alive); safe to run again after an "
        "interruption. Needs a Redis user allowed to write (admin), not 'ops'.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("migrate", parents=[common], help="move the data to N partitions")
    a.add_argument("--partitions", type=int, required=True, metavar="N", help="1..1024")
    a.add_argument("--dry-run", action="store_true", help="count what would move, write nothing")
    a.set_defaults(func=cmd_layout_migrate)

    p = verbs.add_parser(
        "codes",
        help="visitor access codes: add, list, revoke (add and revoke need a user that may write)",
        description="Visitor access codes kept in Redis, valid alongside CHAT_PASSWORD, each "
        "with an optional expiry. Redis keeps only a digest: 'add' prints the new code once, "
        "'list' never shows one. Gateways pick up changes within ACCESS_CODES_REFRESH_SECONDS "
        "(5 s). 'add' and 'revoke' need a Redis user allowed to write (admin), not 'ops'.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", parents=[common], help="make a new code and print it once")
    a.add_argument("--expires", metavar="AFTER", help="valid for 90s, 30m, 12h, 7d, 2w")
    a.add_argument("--label", metavar="TEXT", help="what the code is for (shown by list)")
    a.add_argument("--json", action="store_true", help="one JSON object")
    a.set_defaults(func=cmd_codes_add)
    a = actions.add_parser("list", parents=[common], help="stored codes (never the codes)")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.set_defaults(func=cmd_codes_list)
    a = actions.add_parser("revoke", parents=[common], help="stop accepting a code")
    a.add_argument("id", metavar="ID", help="the code's id, as 'list' prints it")
    a.set_defaults(func=cmd_codes_revoke)

    p = verbs.add_parser(
        "replay",
        parents=[common],
        help="send a visitor message's prompt to the agent again, publishing nothing",
        description="Rebuild the exact prompt the worker would send for a visitor message "
        "(system prompt, history, tool turns) from the worker's settings (AGENT_API_URL, "
        "AGENT_MODEL, MAX_TURNS, SYSTEM_PROMPT, ...), send it to the agent and print the "
        "streamed answer and tool calls. Nothing is written to the chat; tools are not run.",
    )
    p.add_argument("chat", metavar="CHAT", help=chat_help)
    p.add_argument("--message", metavar="ID", help="visitor message id (default: the newest)")
    p.add_argument("--dry-run", action="store_true", help="required: publish nothing")
    p.add_argument("--show-prompt", action="store_true", help="print the request body only")
    p.add_argument("--agent-url", metavar="URL", help="default: $AGENT_API_URL")
    p.set_defaults(func=cmd_replay)
    return parser


async def run(args: argparse.Namespace, settings: OpsSettings, out: Output) -> int:
    """Run the parsed verb against the bus of ``settings``."""
    func: Verb = args.func
    async with open_ops_bus(settings) as bus:
        return await func(args, bus, out)


def _fail(out: Output, message: str, status: int) -> int:
    out.note(f"{PROG}: {message}")
    return status


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``terrarium-ops`` console script."""
    args = build_parser().parse_args(argv)
    # Ctrl-C (and SIGTERM) end ``follow`` quietly, even when started with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out = Output()
    status = _main(args, out)
    raise SystemExit(status)


def _main(args: argparse.Namespace, out: Output) -> int:
    try:
        settings = load_settings(args.redis_url, Path(args.env_file) if args.env_file else None)
    except ConfigError as exc:
        return _fail(out, f"{exc}. Nothing was done.", 2)
    endpoint = settings.redis_endpoint
    try:
        return asyncio.run(run(args, settings, out))
    except KeyboardInterrupt:
        return 0
    except UsageError as exc:
        return _fail(out, str(exc), 2)
    except ConfigError as exc:
        return _fail(out, f"{exc}. Nothing was done.", 2)
    except AmbiguousChat as exc:
        shown = ", ".join(exc.candidates[:10]) + (" ..." if len(exc.candidates) > 10 else "")
        return _fail(out, f"{exc}: {shown}; give more of the id", 1)
    except (UnknownChat, RequeueRefused, UnknownCode, WorkersAlive, LayoutRefused) as exc:
        return _fail(out, str(exc), 1)
    except BusUnavailable as exc:
        return _fail(out, f"{exc} at {endpoint}", 1)
    except BusRejected as exc:
        writes = args.verb == "requeue" or getattr(args, "action", None) in (
            "add",
            "revoke",
            "migrate",
        )
        hint = " (this verb writes: use a Redis user allowed to)" if writes else ""
        return _fail(out, f"{exc} at {endpoint}{hint}", 1)
    except BusError as exc:
        return _fail(out, f"{exc} at {endpoint}", 1)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return 0
