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


def main(argv: list[str] | None = None) -> None:
    """``python -m bus.layout [prefix] [partitions] [--cluster]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bus.layout", description="Print the Redis key layout and ACL globs."
    )
    parser.add_argument("prefix", nargs="?", default="terra", help="REDIS_KEY_PREFIX (terra)")
    parser.add_argument(
        "partitions", nargs="?", type=int, help="REDIS_PARTITIONS (1; 16 with --cluster)"
    )
    parser.add_argument("--cluster", action="store_true", help="REDIS_CLUSTER=true")
    args = parser.parse_args(argv)
    partitions = args.partitions if args.partitions is not None else (16 if args.cluster else 1)
    try:
        keys = BusKeys(args.prefix, partitions, cluster=args.cluster)
    except ValueError as exc:
        parser.error(str(exc))
    print(describe_layout(keys))


if __name__ == "__main__":
    main()
