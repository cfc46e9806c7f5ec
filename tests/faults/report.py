"""Run the fault scenarios and print the figures: ``python -m tests.faults.report``.

Prints reclaim time, lost events, duplicate replies, stop latency (p50/p99) and the
reconnect time after a Redis outage, among others. Nothing passes or fails here; the
tests in this folder assert. Options:

- ``--trials N`` stop trials while tokens flow (default 20), ``--stalled-trials N`` (5)
- ``--quick`` skip the dead-worker run with the worker's default timings (about 40 s)
- ``--json`` print the raw results as JSON instead of the summary

The p99 of 200 healthy sockets with and without a stalled reader is measured by
``python -m benchmarks.fanout --stalled-reader`` (not repeated here).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.faults import scenarios as sc
from tests.support.clients import StreamCheck

__all__ = ["main"]


async def _run(name: str, make: Callable[[Path], Awaitable[Any]]) -> Any:
    print(f"... {name}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp:
        result = await make(Path(tmp))
    print(f"    done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return result


async def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run every scenario once (sequentially: they share the machine's two cores)."""
    runs: dict[str, Callable[[Path], Awaitable[Any]]] = {
        "dead_worker": sc.dead_worker,
        "agent_lost": sc.agent_lost,
        "slow_job": sc.slow_job,
        "poison": sc.poison_job,
        "worker_sigterm": sc.worker_sigterm,
        "stop": lambda p: sc.stop_latency(p, args.trials, args.stalled_trials),
        "tab_close": sc.tab_close,
        "redis_outage": sc.redis_outage,
        "hung_redis": sc.hung_redis,
        "lost_log": sc.lost_log,
        "gateway_restart": sc.gateway_restart,
        "slow_reader": sc.slow_reader,
    }
    if not args.quick:
        runs["dead_worker_default_timings"] = lambda p: sc.dead_worker(p, default_timings=True)
    return {name: await _run(name, make) for name, make in runs.items()}


def _checks(results: dict[str, Any]) -> dict[str, StreamCheck]:
    """Every client-vs-log comparison made, by ``scenario/client``."""
    out: dict[str, StreamCheck] = {}
    for name in ("dead_worker", "dead_worker_default_timings"):
        if name in results:
            r = results[name]
            out |= {f"{name}/ws-v2": r.v2, f"{name}/ws-v1": r.v1, f"{name}/sse-v2": r.sse}
    out |= {f"redis_outage/{k}": v for k, v in results["redis_outage"].streams.items()}
    out |= {f"lost_log/{k}": v for k, v in results["lost_log"].after_restart.items()}
    out |= {f"gateway_restart/{k}": v for k, v in results["gateway_restart"].streams.items()}
    return out


def summary(results: dict[str, Any]) -> list[tuple[str, str]]:
    """``(figure, value)`` rows for the closing note."""
    rows: list[tuple[str, str]] = []
    dw = results["dead_worker"]
    rows.append(
        (
            "reclaim: SIGKILL -> new attempt (test timings: idle 1.5 s)",
            f"{dw.reclaim_seconds:.2f} s",
        )
    )
    rows.append(("reclaim: SIGKILL -> final reply (test timings)", f"{dw.answer_seconds:.2f} s"))
    if "dead_worker_default_timings" in results:
        dd = results["dead_worker_default_timings"]
        rows.append(
            (
                "reclaim: SIGKILL -> new attempt (defaults: idle 30 s, sweep 5 s)",
                f"{dd.reclaim_seconds:.2f} s",
            )
        )
        rows.append(("reclaim: SIGKILL -> final reply (defaults)", f"{dd.answer_seconds:.2f} s"))
    ws = results["worker_sigterm"]
    rows.append(
        (
            "handover after SIGTERM (short grace, idle threshold 60 s)",
            f"{ws.handover_seconds:.2f} s",
        )
    )
    sj = results["slow_job"]
    rows.append(
        (
            "live slow job: generation / idle threshold / deliveries / reclaims",
            f"{sj.generation_seconds:.1f} s / {sj.min_idle_seconds:.1f} s"
            f" / {sj.max_deliveries_seen} / {sj.reclaims_logged}",
        )
    )
    checks = _checks(results)
    sr = results["slow_reader"]
    lost = sum(c.lost for c in checks.values()) + sr.readers_lost
    dups = sum(c.duplicates for c in checks.values()) + sr.readers_duplicates
    frames = sum(c.expected for c in checks.values()) + sr.readers * (sr.events + 1)
    rows.append(("lost events (all clients, all scenarios)", f"{lost} of {frames}"))
    rows.append(("duplicated events applied", f"{dups}"))
    replies_extra = (
        (dw.replies - 1)
        + (results["poison"].replies - 1)
        + (ws.replies - 1)
        + results["redis_outage"].duplicate_replies
        + results["gateway_restart"].duplicate_replies
    )
    rows.append(("duplicate replies (visitor messages answered twice)", f"{replies_extra}"))
    po = results["poison"]
    rows.append(
        (
            "poison job: crashes / deliveries at dead letter / agent calls after",
            f"{po.kills} / {po.deliveries_at_dead_letter}"
            f" / {po.agent_requests_later - po.agent_requests}",
        )
    )
    st = results["stop"].summary()
    n, m = len(results["stop"].emission_end), len(results["stop"].stalled_stopped_message)
    rows.append(
        (
            f"stop -> last token received, p50 / p99 ({n} trials)",
            f"{st['emission_end_p50'] * 1000:.0f} / {st['emission_end_p99'] * 1000:.0f} ms",
        )
    )
    rows.append(
        (
            f"stop -> stopped Message received, p50 / p99 ({n} trials)",
            f"{st['stopped_message_p50'] * 1000:.0f} / {st['stopped_message_p99'] * 1000:.0f} ms",
        )
    )
    rows.append(
        (
            f"stop while the model is silent -> stopped Message, p50 / p99 ({m})",
            f"{st['stalled_p50'] * 1000:.0f} / {st['stalled_p99'] * 1000:.0f} ms",
        )
    )
    rows.append(
        (
            "tab closed mid-answer: reply status",
            str(results["tab_close"].reply_status or "complete"),
        )
    )
    ro = results["redis_outage"]
    rows.append(("Redis outage (SIGKILL, AOF) length", f"{ro.down_seconds:.0f} s"))
    rows.append(("  Redis back -> /readyz 200", f"{ro.ready_after_seconds:.2f} s"))
    rows.append(
        ("  Redis back -> first live frame on open sockets", f"{ro.live_after_seconds:.2f} s")
    )
    rows.append(("  Redis back -> first POST 200", f"{ro.first_post_after_seconds:.2f} s"))
    rows.append(
        ("  Redis back -> interrupted reply finished", f"{ro.answered_after_seconds:.2f} s")
    )
    rows.append(
        (
            "  POSTs 200 / lost / 503 (Retry-After) / other",
            f"{ro.posts_ok} / {ro.posts_ok_lost} / {ro.posts_refused} / {len(ro.posts_other)}",
        )
    )
    rows.append(("  slowest 503 during the outage", f"{ro.slowest_refusal_seconds:.3f} s"))
    hr = results["hung_redis"]
    rows.append(
        (
            "Redis hung (SIGSTOP): POST / WS handshake",
            f"{hr.post_status} after {hr.post_seconds:.2f} s / "
            f"{hr.handshake_status} after {hr.handshake_seconds:.2f} s",
        )
    )
    ll = results["lost_log"]
    rows.append(
        (
            "Redis restarted without data -> resync on live v2 sockets",
            ", ".join(f"{k} {v:.2f} s" for k, v in ll.resync_after_seconds.items()),
        )
    )
    gr = results["gateway_restart"]
    rows.append(
        ("gateway SIGTERM: close codes", ", ".join(f"{k} {v}" for k, v in gr.term_close.items()))
    )
    rows.append(
        ("gateway SIGTERM: exit", f"code {gr.term_exit_code} after {gr.term_exit_seconds:.2f} s")
    )
    rows.append(
        (
            "reconnect to the other gateway after SIGTERM (max)",
            f"{max(gr.reconnect_after_term.values()):.2f} s",
        )
    )
    rows.append(
        (
            "reconnect to the other gateway after SIGKILL (max)",
            f"{max(gr.reconnect_after_kill.values()):.2f} s",
        )
    )
    rows.append(
        (
            f"stalled socket among {sr.readers} readers"
            f" (queue {sr.queue_size}, {sr.event_bytes} B events)",
            f"closed {sr.stalled_close} after ~{sr.stalled_disconnected_after_events} events; "
            f"{sr.readers_exact}/{sr.readers} readers got every frame",
        )
    )
    rows.append(
        (
            "gateway RSS before / peak / after",
            f"{sr.rss_before_mb} / {sr.rss_peak_mb} / {sr.rss_after_mb} MB",
        )
    )
    return rows


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.report", description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--stalled-trials", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(collect(args))
    if args.json:
        print(json.dumps(_jsonable(results), indent=2, default=str))
        return
    rows = summary(results)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
