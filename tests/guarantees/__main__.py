"""``python -m tests.guarantees [--long] [--seed N]``: run the guarantee checker, print its table.

Exit status 0 when every promise held, 1 when a violation was found.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from tests.guarantees.plan import LONG, SHORT, Fault
from tests.guarantees.report import render
from tests.guarantees.scenario import run_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.guarantees", description=__doc__)
    parser.add_argument("--long", action="store_true", help="the long soak (several minutes)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice (1)")
    parser.add_argument("--workdir", type=Path, help="keep process logs here (default: temp)")
    parser.add_argument(
        "--faults",
        help="comma-separated fault schedule, cycled over the rounds: "
        + ", ".join(f.name.lower() for f in Fault),
    )
    parser.add_argument("--rounds", type=int, help="rounds of churn (one fault each)")
    parser.add_argument(
        "--jobs-cap", type=int, help="JOBS_MAXLEN for every process (0: the default cap)"
    )
    parser.add_argument("--backlog-extra", type=int, help="messages posted past the jobs cap")
    args = parser.parse_args(argv)
    plan = (LONG if args.long else SHORT).with_seed(args.seed)
    if args.faults:
        try:
            faults = tuple(Fault[name.strip().upper()] for name in args.faults.split(","))
        except KeyError as exc:
            parser.error(f"--faults: unknown fault {exc}")
        plan = replace(plan, faults=faults)
    if args.rounds is not None:
        plan = replace(plan, rounds=args.rounds)
    if args.backlog_extra is not None:
        plan = replace(plan, backlog_extra=args.backlog_extra)
    if args.jobs_cap is not None:
        plan = replace(plan, jobs_cap=args.jobs_cap or None)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        outcome = asyncio.run(run_plan(plan, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="guarantees-") as tmp:
            outcome = asyncio.run(run_plan(plan, Path(tmp)))
    print(render(outcome))
    return 1 if outcome.findings.violations else 0


if __name__ == "__main__":
    sys.exit(main())
