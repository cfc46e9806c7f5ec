"""``python -m gateway``: run the public gateway."""

from __future__ import annotations

import asyncio
import gc
import sys

import structlog
from aiohttp import web
from pydantic import ValidationError

from bus import describe_settings_error
from gateway.app import create_app
from gateway.logs import protect_logs
from gateway.settings import GatewaySettings
from logsetup import configure_logging

__all__ = ["main"]


def load_settings() -> GatewaySettings:
    """Settings from the environment, or exit with one clear line (no secret echoed)."""
    try:
        return GatewaySettings()
    except ValidationError as exc:
        fields = {str(err["loc"][0]).upper() for err in exc.errors() if err["loc"]}
        if "CHAT_PASSWORD" in fields:
            print(
                "gateway: CHAT_PASSWORD is required (the visitor access code; "
                "comma-separate several for rotation). Refusing to start.",
                file=sys.stderr,
            )
        else:
            problems = describe_settings_error(exc)
            print(
                f"gateway: invalid configuration: {problems}. Refusing to start.", file=sys.stderr
            )
        raise SystemExit(2) from None


def event_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    """A new uvloop loop when wanted and installed, else the stdlib's."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main() -> None:
    """Entry point of the ``terrarium-gateway`` console script."""
    settings = load_settings()
    configure_logging(settings.log_level)
    protect_logs(settings)
    app = create_app(settings)
    # Long-lived startup objects leave the GC's generations: full collections with
    # thousands of sockets open then stay short (benchmarks/fanout.py saw 26-116 ms).
    gc.freeze()
    loop = event_loop(settings.uvloop)
    kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    structlog.get_logger("gateway.http").info("gateway.event_loop", loop=kind)
    web.run_app(
        app,
        loop=loop,
        host=settings.host,
        port=settings.port,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        keepalive_timeout=settings.keepalive_timeout_seconds,
        print=lambda line: print(line, file=sys.stderr),
        handle_signals=True,
    )


if __name__ == "__main__":
    main()
