"""The public gateway: visitor REST, WebSocket and SSE over the Redis bus."""

from gateway.app import create_app
from gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
