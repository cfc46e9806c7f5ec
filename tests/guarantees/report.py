"""The table a run prints: what it did (sockets, frames, posts, faults) and what it found."""

from __future__ import annotations

from collections import Counter

from tests.guarantees.scenario import Outcome

__all__ = ["render"]


def _table(title: str, rows: list[tuple[str, object]]) -> list[str]:
    width = max((len(name) for name, _ in rows), default=10)
    lines = [title, "-" * len(title)]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return [*lines, ""]


def render(outcome: Outcome) -> str:
    """A plain-text report of ``outcome``."""
    plan, act, found = outcome.plan, outcome.activity, outcome.findings
    kinds = Counter(s.kind for s in outcome.sockets)
    statuses = Counter(str(a) for p in outcome.posts for a in p.attempts)
    with_id = sum(1 for p in outcome.posts if p.client_message_id)
    connections = sum(len(s.connects) for s in outcome.sockets)
    did: list[tuple[str, object]] = [
        ("mode / seed", f"{plan.name} / {plan.seed}"),
        ("processes", f"{plan.gateways} gateways, {plan.workers} workers, 1 redis, demo agent"),
        ("duration", f"{outcome.seconds}s ({', '.join(f'{n} {s}s' for n, s in act.phases)})"),
        ("chats", outcome.chats),
        (
            "sockets",
            f"{len(outcome.sockets)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})",
        ),
        ("connections", f"{connections} (forced drops {act.drops})"),
        ("events in logs", outcome.events),
        ("frames checked", found.frames_checked),
        ("resync frames", found.resyncs),
        (
            "posts",
            f"{len(outcome.posts)} ({with_id} with clientMessageId, {act.repeats} sent twice)",
        ),
        ("post attempts", ", ".join(f"{k}: {n}" for k, n in sorted(statuses.items()))),
        ("accepted", sum(1 for p in outcome.posts if p.accepted)),
        ("stored messages checked", found.messages_checked),
        ("backlog", f"{act.backlog_posted} posted with no worker, {act.backlog_refused} refused"),
    ]
    did += [(f"fault: {kind}", n) for kind, n in sorted(act.faults.items())]
    for takeover in act.takeovers:
        shown = "never" if takeover.seconds is None else f"{takeover.seconds}s"
        did.append(("takeover after SIGKILL", f"{shown} ({takeover.worker}, {takeover.chat_id})"))
    if act.timeouts:
        did.append(("barriers timed out", "; ".join(act.timeouts)))
    lines = _table("What the run did", did)
    by_kind = found.by_kind()
    if not by_kind:
        lines += ["What it found", "-------------", "  no violation", ""]
        return "\n".join(lines)
    lines += _table(
        f"What it found: {len(found.violations)} violations",
        [(kind, len(items)) for kind, items in by_kind.items()],
    )
    for kind, items in by_kind.items():
        phases = Counter(v.phase for v in items if v.phase)
        if phases:
            lines.append(f"{kind}, by the phase it traces back to")
            lines += [f"  {phase}: {n}" for phase, n in phases.most_common()]
            lines.append("")
    lines.append("Examples")
    lines.append("--------")
    for kind in by_kind:
        for violation in found.examples(kind):
            lines.append(f"  [{kind}] chat {violation.chat_id}: {violation.detail}")
    return "\n".join([*lines, ""])
