"""docker-compose.yml: valid for docker-compose, and describes the production deployment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "redis", "api", "worker", "beat", "flower"}
CARILLON_SERVICES = ("api", "worker", "beat")
URLS = {
    "CARILLON_DATABASE_URL": "postgresql+psycopg2://carillon:carillon@postgres:5432/carillon",
    "CARILLON_BROKER_URL": "redis://redis:6379/0",
    "CARILLON_RESULT_BACKEND": "redis://redis:6379/1",
}


def _compose_command() -> list[str] | None:
    """`docker-compose` (Debian's package), else the `docker compose` plugin; None if neither."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose.get("services")
    assert isinstance(found, dict)
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def test_docker_compose_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        message = "neither docker-compose nor `docker compose` is installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install docker-compose (see .ci/run)")
        pytest.skip(message)
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{' '.join(command)} config failed:\n{result.stderr}"


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_the_six_services_exist(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(services: dict[str, Any], name: str) -> None:
    healthcheck = services[name].get("healthcheck")
    assert isinstance(healthcheck, dict), f"{name} has no healthcheck"
    assert healthcheck.get("test"), f"{name}'s healthcheck has no test"
    assert not healthcheck.get("disable", False)


@pytest.mark.parametrize("name", CARILLON_SERVICES)
def test_carillon_services_get_the_urls(services: dict[str, Any], name: str) -> None:
    env = _environment(services[name])
    for key, value in URLS.items():
        assert env.get(key) == value, f"{name}: {key}"
    assert env.get("CARILLON_PUBLIC_URL"), f"{name}: CARILLON_PUBLIC_URL"


def test_carillon_environment_comes_from_the_extension(compose: dict[str, Any]) -> None:
    extension = compose.get("x-carillon")
    assert isinstance(extension, dict)
    assert URLS.items() <= _environment(extension).items()


@pytest.mark.parametrize("name", CARILLON_SERVICES)
def test_carillon_services_wait_for_healthy_stores(services: dict[str, Any], name: str) -> None:
    depends_on = services[name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form with conditions"
    for store in ("postgres", "redis"):
        assert (depends_on.get(store) or {}).get("condition") == "service_healthy", (
            f"{name} must wait for {store} to be healthy"
        )


def test_flower_waits_for_a_healthy_broker(services: dict[str, Any]) -> None:
    depends_on = services["flower"].get("depends_on")
    assert isinstance(depends_on, dict)
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_beat_is_not_scaled(services: dict[str, Any]) -> None:
    beat = services["beat"]
    assert beat.get("scale", 1) == 1
    assert (beat.get("deploy") or {}).get("replicas", 1) == 1
    assert "beat" in " ".join(map(str, beat["command"]))


def test_worker_can_be_scaled(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "a published port would clash between replicas"


def test_api_serves_on_8080(services: dict[str, Any]) -> None:
    api = services["api"]
    assert any(str(port).endswith("8080:8080") for port in api.get("ports", []))
    assert "/healthz" in " ".join(map(str, api["healthcheck"]["test"]))


def test_redis_is_a_durable_broker(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    text = command if isinstance(command, str) else " ".join(map(str, command))
    for option in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert option in text
