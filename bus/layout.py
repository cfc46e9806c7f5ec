"""The key layout and the Redis users' key globs for operators:
``python -m bus.layout [prefix] [partitions] [--cluster]``."""

from __future__ import annotations

from bus.keys import ROLE_FAMILIES, BusKeys

__all__ = ["describe_layout"]


def describe_layout(keys: BusKeys) -> str:
    """The key layout and each Redis user's globs, as operators read it."""
    if keys.partitioned:
        where = "a cluster" if keys.cluster else "one Redis"
        kind = f"partitioned: {keys.partition_count} partitions on {where}"
    else:
        kind = "legacy: one partition"
    lines = [f"key families (prefix {keys.prefix!r}, {kind}):"]
    lines += [f"  {name:<13} {glob}" for name, glob in keys.families().items()]
    if keys.partitioned:
        tags = " ".join(keys.tag(p) for p in keys.partitions)
        lines.append(f"partition tags: {tags}")
    lines.append("redis users (infra/redis/users.acl grants both layouts):")
    lines += [f"  {user:<8} {' '.join(sorted(keys.acl_key_globs(user)))}" for user in ROLE_FAMILIES]
    lines.append(f"channels: {' '.join(sorted(keys.channel_globs()))}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    args = [a for a in sys.argv[1:] if a != "--cluster"]
    prefix = args[0] if args else "terra"
    partitions = int(args[1]) if len(args) > 1 else 1
    print(describe_layout(BusKeys(prefix, partitions, cluster="--cluster" in sys.argv)))
