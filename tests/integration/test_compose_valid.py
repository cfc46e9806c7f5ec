"""compose.yaml is a valid Compose file, with and without the `cluster` profile (checked by
the compose CLI, no engine needed), and the profile is wired as docs/cluster.md says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
SERVICES = {"redis", "gateway", "worker", "demo-agent", "redis-exporter", "prometheus", "grafana"}
NODES = {f"redis-node-{n}" for n in range(1, 7)}
CLUSTER_SERVICES = NODES | {"cluster-init", "gateway-cluster", "worker-cluster"}
ENTRYPOINT = REPO / "infra" / "docker" / "entrypoint.sh"
GENERATE = REPO / "infra" / "secrets" / "generate.sh"


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _config(*profiles: str) -> dict[str, Any]:
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _compose(*args, "config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.mark.parametrize("profiles", [(), ("cluster",)], ids=["default", "cluster"])
def test_compose_config_is_valid(profiles: tuple[str, ...]) -> None:
    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _compose(*args, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_defines_the_services() -> None:
    services = _config("cluster")["services"]
    by_profile = {name: tuple(spec.get("profiles", ())) for name, spec in services.items()}
    assert {name for name, profiles in by_profile.items() if not profiles} == SERVICES
    assert {name for name, profiles in by_profile.items() if profiles} == CLUSTER_SERVICES
    assert all(by_profile[name] == ("cluster",) for name in CLUSTER_SERVICES)


def test_the_cluster_profile_runs_the_app_on_six_nodes() -> None:
    services = _config("cluster")["services"]
    init = services["cluster-init"]
    assert set(init["environment"]["CLUSTER_NODES"].split()) == {f"{n}:6380" for n in NODES}
    assert init["environment"]["CLUSTER_REPLICAS"] == "1"  # 3 masters + 3 replicas
    assert set(init["depends_on"]) == NODES
    hostnames = {services[node]["environment"]["NODE_HOSTNAME"] for node in NODES}
    assert hostnames == NODES
    volumes = {volume for node in NODES for volume in services[node]["volumes"]}
    assert len([v for v in volumes if ":/data" in v]) == 6  # one data volume each
    for name in ("gateway-cluster", "worker-cluster"):
        env = services[name]["environment"]
        assert env["REDIS_CLUSTER"] == "true"
        assert int(env["REDIS_PARTITIONS"]) >= 3
        assert env["REDIS_URL_FILE"].endswith("_cluster_redis_url")
        assert services[name]["depends_on"]["cluster-init"] == {
            "condition": "service_completed_successfully"
        }
    # arq cannot run on the cluster: the worker's scheduled jobs use the single redis.
    worker = services["worker-cluster"]
    assert worker["environment"]["ARQ_REDIS_URL_FILE"] == "/run/secrets/worker_redis_url"
    assert "redis" in worker["depends_on"]
    # The stack without the profile is unchanged: one Redis, no cluster settings.
    for name in ("gateway", "worker"):
        assert "REDIS_CLUSTER" not in services[name]["environment"]


def test_node_names_are_in_the_generated_certificate() -> None:
    """Clients check every node's host name against the server certificate's names."""
    text = GENERATE.read_text()
    assert all(node in text for node in NODES)
    assert "-c node" in text  # the client certificate nodes present to each other


def test_every_secret_file_variable_is_read_by_the_entrypoint() -> None:
    """An app service's NAME_FILE must be one the image's entrypoint turns into NAME."""
    names = re.search(r'secret_names="([^"]+)"', ENTRYPOINT.read_text())
    assert names is not None
    known = set(names.group(1).split())
    services = _config("cluster")["services"]
    for name, spec in services.items():
        if spec.get("image") != "terrarium-webchat:latest":
            continue
        for variable in spec.get("environment", {}):
            if variable.endswith("_FILE"):
                assert variable.removesuffix("_FILE") in known, (name, variable)


def test_files_mounted_from_the_repo_exist() -> None:
    """Every ./infra/... path that compose bind-mounts is committed (secrets aside)."""
    paths = set(re.findall(r"\./(infra/[\w./-]+?)(?::|$)", COMPOSE.read_text(), re.M))
    assert paths, "no ./infra/ mounts found"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"compose.yaml mounts missing files: {missing}"
