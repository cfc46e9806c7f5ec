"""What one run of the guarantee checker does: sizes, fault schedule and timings.

A plan plus a seed fully determines the actions the checker takes (which chats, which
sockets drop, which process is killed and how); only the systems' timing varies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = ["LONG", "SHORT", "Fault", "Plan"]


class Fault(StrEnum):
    """The kinds of fault the injector knows."""

    GATEWAY_SIGKILL = "gateway SIGKILL"
    GATEWAY_SIGTERM = "gateway SIGTERM"
    WORKER_SIGKILL = "worker SIGKILL mid-answer"
    WORKER_SIGTERM = "worker SIGTERM"
    REDIS_RESTART = "redis restart"
    AGENT_STOPPED = "agent stopped mid-answer"
    AGENT_FAILS_ONE = "agent fails one message"
    BACKLOG = "backlog past the jobs cap"


@dataclass(frozen=True)
class Plan:
    """Sizes and knobs of one run; ``SHORT`` and ``LONG`` are the two presets."""

    name: str
    seed: int = 1
    gateways: int = 2
    workers: int = 2
    #: Chats answered once before any socket opens ("old" chats).
    old_chats: int = 20
    #: New chats opened all at once, each socket posting right after its handshake (#1).
    burst_chats: int = 150
    #: Second sockets on burst chats (other gateway, other transport).
    burst_second_sockets: int = 30
    #: Rounds of churn (drops, posts, one fault each).
    rounds: int = 8
    #: Per round: share of sockets dropped (they resume with ``lastEventId``), posts made.
    drop_share: float = 0.15
    posts_per_round: int = 12
    #: Share of posts that carry a ``clientMessageId`` (and are retried until accepted).
    client_id_share: float = 0.7
    #: Content pieces per reply and the demo agent's delay per piece.
    tokens: int = 12
    token_delay_ms: float = 10.0
    #: Faults in the order they are injected, one per round (cycled).
    faults: tuple[Fault, ...] = (
        Fault.GATEWAY_SIGKILL,
        Fault.WORKER_SIGKILL,
        Fault.AGENT_FAILS_ONE,
        Fault.GATEWAY_SIGTERM,
        Fault.REDIS_RESTART,
        Fault.WORKER_SIGTERM,
        Fault.AGENT_STOPPED,
        Fault.BACKLOG,
    )
    #: How long the agent stays stopped (far below any sensible patience).
    agent_down_seconds: float = 4.0
    #: Messages posted on other chats while one message's agent request fails (#3).
    bystanders: int = 8
    #: ``JOBS_MAXLEN`` given to every process, and messages posted past it with no worker
    #: running (#2); ``None`` leaves the default cap.
    jobs_cap: int | None = 400
    backlog_extra: int = 60
    #: Takeover after a worker dies mid-answer must be faster than this (issue 9, item 7).
    takeover_limit_seconds: float = 10.0
    #: Deadlines of the final barriers.
    answers_within: float = 120.0
    catch_up_within: float = 30.0

    def with_seed(self, seed: int) -> Plan:
        return replace(self, seed=seed)


SHORT = Plan(name="short")

#: Every fault but the backlog, three times over, then the backlog once (10,000+ posts).
_LONG_FAULTS = (
    *(tuple(f for f in SHORT.faults if f != Fault.BACKLOG) * 3),
    Fault.GATEWAY_SIGKILL,
    Fault.REDIS_RESTART,
    Fault.BACKLOG,
)

LONG = Plan(
    name="long",
    gateways=3,
    workers=3,
    old_chats=60,
    burst_chats=400,
    burst_second_sockets=120,
    rounds=len(_LONG_FAULTS),
    faults=_LONG_FAULTS,
    posts_per_round=30,
    tokens=30,
    jobs_cap=None,
    backlog_extra=400,
    answers_within=600.0,
    catch_up_within=60.0,
)
