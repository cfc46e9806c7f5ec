"""The shipped nginx config in front of a real gateway, on non-default ports (issue 11).

infra/nginx/terrarium.conf is rendered with test ports, a throwaway certificate and log
paths under the test's directory, then run by a real nginx (skipped when nginx is not
installed: Debian's ``nginx`` package). Checked: it is valid, its access log never holds
the access code (the query string is not logged), and a browser's WebSocket handshake
from the site's own origin on a non-default port is accepted through it.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from demo.launcher import free_port
from tests.support.system import Process, System
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

CONF = Path(__file__).parents[2] / "infra" / "nginx" / "terrarium.conf"
SECRET = "nginx-secret-code-4711"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def render(conf: str, workdir: Path, *, https: int, http: int, upstream: int) -> str:
    """The site config with test ports, certificate and log paths."""
    conf = conf.replace("server 127.0.0.1:4100;", f"server 127.0.0.1:{upstream};")
    conf = re.sub(r"\n\s*listen \[::\]:\d+[^;]*;", "", conf)
    conf = conf.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl;")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{http};")
    conf = re.sub(r"/etc/letsencrypt/live/[^;]*/fullchain\.pem", str(workdir / "cert.pem"), conf)
    conf = re.sub(r"/etc/letsencrypt/live/[^;]*/privkey\.pem", str(workdir / "key.pem"), conf)
    return conf.replace("/var/log/nginx/", f"{workdir}/")


def main_conf(workdir: Path) -> str:
    temp = " ".join(
        f"{name}_temp_path {workdir}/{name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        "daemon off;\nworker_processes 1;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{ {temp} include {workdir}/site.conf; }}\n"
    )


@pytest.fixture
def gateway(system: System) -> Process:
    return system.gateway(CHAT_PASSWORD=SECRET, TRUSTED_PROXIES="127.0.0.1", BASE_PATH="/terrarium")


@pytest.fixture
def nginx(tmp_path: Path, gateway: Process) -> Iterator[tuple[int, Path]]:
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian package nginx)")
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=chat.example.org", "-keyout", str(workdir / "key.pem"),
         "-out", str(workdir / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    https = free_port()
    assert gateway.port is not None
    site = render(CONF.read_text(), workdir, https=https, http=free_port(), upstream=gateway.port)
    (workdir / "site.conf").write_text(site)
    (workdir / "nginx.conf").write_text(main_conf(workdir))
    args = [NGINX, "-c", str(workdir / "nginx.conf"), "-p", str(workdir)]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield https, workdir
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_nginx_on_a_non_default_port_accepts_the_own_origin_and_logs_no_code(
    nginx: tuple[int, Path],
) -> None:
    port, workdir = nginx
    base = f"https://chat.example.org:{port}/terrarium/api"
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    connector = aiohttp.TCPConnector(ssl=tls, resolver=Loopback())
    async with aiohttp.ClientSession(connector=connector) as s:

        async def up() -> bool:
            try:
                async with s.get(f"{base}/config") as r:
                    return r.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(up, 10, "nginx answering")
        async with s.get(f"{base}/chat/n/messages", params={"accessCode": SECRET}) as r:
            assert r.status == 200
        origin = f"https://chat.example.org:{port}"
        async with s.ws_connect(
            f"wss://chat.example.org:{port}/terrarium/api/chat?chatId=n&accessCode={SECRET}",
            headers={"Origin": origin},
        ) as ws:
            await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
            await s.ws_connect(
                f"wss://chat.example.org:{port}/terrarium/api/chat?chatId=n&accessCode={SECRET}",
                headers={"Origin": "https://evil.example"},
            )
        assert foreign.value.status == 403
    log = (workdir / "terrarium.access.log").read_text()
    assert "/terrarium/api/chat/n/messages" in log
    assert "accessCode" not in log
    assert SECRET not in log


class Loopback(AbstractResolver):
    """Every name is 127.0.0.1 (chat.example.org, for this client only)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None
