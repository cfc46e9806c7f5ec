"""The Redis containers' start scripts, run as compose runs them, without a container engine.

``infra/redis/compose-start.sh`` (the single Redis) and ``infra/redis/cluster/node-start.sh``
(a cluster node) run as root with only CAP_CHOWN, CAP_SETUID and CAP_SETGID
(``cap_drop: ALL`` in compose.yaml), in a tmpfs at /run/redis, with the secrets under
/run/secrets. Here: a private mount namespace gives them those paths (a tmpfs over /run
and /etc/redis there; the host's are never touched), ``setpriv`` the same capability set,
and a stand-in for the image's ``docker-entrypoint.sh`` checks, as the redis user, what
redis-server would need: the rendered ACL, the keys and the replication login readable, its
pid file writable.
Without CAP_DAC_OVERRIDE and CAP_FOWNER root cannot chmod or write in a directory once
redis owns it, which the scripts once did (``chmod: Operation not permitted``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS_DIR = REPO / "infra" / "redis"

ENTRYPOINT = """#!/bin/sh
echo "ARGS $*"
exec setpriv --reuid redis --regid redis --clear-groups sh -c '
for f in /run/redis/users.acl /run/redis/server.key /run/redis/node.key /run/redis/auth.conf; do
  [ -e "$f" ] && { cat "$f" > /dev/null && echo "READ $f" || echo "DENIED $f"; }
done
touch /run/redis/redis-server.pid && echo "PIDFILE ok"'
"""

#: Mounts the paths the container has, then runs the script with the container's caps.
HARNESS = """set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/redis /run/secrets
mount -t tmpfs tmpfs /etc/redis
mkdir -p /etc/redis/infra /etc/redis/cluster
mount --bind "$REPO/infra/redis" /etc/redis/infra
cp "$REPO/infra/redis/compose-start.sh" /etc/redis/compose-start.sh
cp "$REPO/infra/redis/render-acl.sh" /etc/redis/render-acl.sh
cp "$REPO/infra/redis/users.acl" /etc/redis/users.acl.template
mount --bind "$SECRETS" /run/secrets
PATH="$STUBS:$PATH" exec setpriv --bounding-set=-all,+chown,+setuid,+setgid --inh-caps=-all \\
    env NODE_HOSTNAME=redis-node-1 sh "$SCRIPT"
"""


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount namespace)"
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux)"
    try:
        pwd.getpwnam("redis")
    except KeyError:
        return "needs a 'redis' user (the image's, here the redis-server package's)"
    if not Path("/etc/redis").is_dir():
        return "needs /etc/redis as a mount point (the redis-server package makes it)"
    return None


@pytest.mark.parametrize(
    ("script", "files"),
    [
        ("/etc/redis/compose-start.sh", ["users.acl", "server.key"]),
        (
            "/etc/redis/infra/cluster/node-start.sh",
            ["users.acl", "server.key", "node.key", "auth.conf"],
        ),
    ],
    ids=["single", "cluster-node"],
)
def test_start_script_runs_with_the_containers_capabilities(
    tmp_path: Path, script: str, files: list[str]
) -> None:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for user in ("admin", "gateway", "worker", "ops"):
        (secrets_dir / f"redis_{user}_password").write_text(secrets.token_hex(16) + "\n")
    for name in ("redis_tls_key", "redis_tls_node_key"):
        (secrets_dir / name).write_text("not a real key\n")
    for path in secrets_dir.iterdir():
        path.chmod(0o644)  # as generate.sh leaves them: the container reads bind mounts
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    entrypoint = stubs / "docker-entrypoint.sh"
    entrypoint.write_text(ENTRYPOINT)
    entrypoint.chmod(0o755)
    env = {
        **os.environ,
        "REPO": str(REPO),
        "SECRETS": str(secrets_dir),
        "STUBS": str(stubs),
        "SCRIPT": script,
    }
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", HARNESS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ARGS redis-server " in result.stdout, output
    for name in files:
        assert f"READ /run/redis/{name}" in result.stdout, output
    assert "DENIED" not in result.stdout, output
    assert "PIDFILE ok" in result.stdout, output
    if "auth.conf" in files:
        assert "--include /run/redis/auth.conf" in result.stdout
        assert "masterauth" not in result.stdout  # the password stays in the file
