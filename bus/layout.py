"""The key layout and the Redis users' key globs for operators: ``python -m bus.layout``."""

from __future__ import annotations

from bus.keys import ROLE_FAMILIES, BusKeys

__all__ = ["describe_layout"]


def describe_layout(keys: BusKeys) -> str:
    """The key layout and each Redis user's globs, as operators read it."""
    lines = [f"key families (prefix {keys.prefix!r}):"]
    lines += [f"  {name:<13} {glob}" for name, glob in keys.families().items()]
    lines.append("redis users (infra/redis/users.acl):")
    lines += [f"  {user:<8} {' '.join(sorted(keys.acl_key_globs(user)))}" for user in ROLE_FAMILIES]
    lines.append(f"channels: {' '.join(sorted(keys.channel_globs()))}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bus.layout [prefix]
    import sys

    print(describe_layout(BusKeys(sys.argv[1] if len(sys.argv) > 1 else "terra")))
