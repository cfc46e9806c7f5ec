"""``python -m demo``: run gateway, worker, Redis and (without AGENT_API_URL) the demo agent."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import webbrowser

from demo.launcher import ChildFailed, Launcher, LaunchOptions

__all__ = ["main"]


def _parse(argv: list[str] | None) -> LaunchOptions:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "4100")))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    parser.add_argument("--quiet", action="store_true", help="write process logs to files")
    parser.add_argument(
        "--byo",
        action="store_true",
        help='offer the demo agent as a "your own model" provider (any key works)',
    )
    args = parser.parse_args(argv)
    options = LaunchOptions(
        host=args.host,
        port=args.port,
        access_code=os.environ.get("CHAT_PASSWORD") or None,
        redis_url=os.environ.get("REDIS_URL") or None,
        agent_url=os.environ.get("AGENT_API_URL") or None,
        workers=args.workers,
        quiet=args.quiet,
        byo=args.byo,
    )
    options.extra_env["OPEN_BROWSER"] = "1" if args.open else ""
    return options


def main(argv: list[str] | None = None) -> None:
    """Start everything, print the URL and the access code, stop all on Ctrl-C."""
    options = _parse(argv)
    launcher = Launcher(options)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        try:
            launcher.start()
        except ChildFailed as exc:
            print(f"terrarium-webchat did not start: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        if launcher.moved_from is not None:
            print(
                f"port {launcher.moved_from} is in use (another demo?): "
                f"using port {launcher.port} instead (set PORT or --port to choose)",
                flush=True,
            )
        agent = "offline demo agent" if launcher.demo_agent else launcher.agent_url
        print(
            f"\nterrarium-webchat is running at {launcher.url}\n"
            f"  access code: {launcher.access_code}\n"
            f"  redis:       {launcher.redis_url}\n"
            f"  operators:   REDIS_URL={launcher.redis_url} terrarium-ops chats\n"
            f"  agent:       {agent}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        if options.extra_env.get("OPEN_BROWSER"):
            webbrowser.open(launcher.url)
        while (dead := launcher.failed()) is None:
            time.sleep(0.5)
        print(
            f"a process stopped unexpectedly: {dead.name} {dead.args!r} (exit {dead.returncode})",
            file=sys.stderr,
        )
        raise SystemExit(1)
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
    finally:
        launcher.stop()


if __name__ == "__main__":
    main()
