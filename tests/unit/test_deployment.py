"""Deployment files agree with each other and with the code: docker-compose services, ports, health checks,
environment and mounted files; the Prometheus and Grafana provisioning; the Dockerfile; .env.example."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sop_llm.infra.settings import Settings
from sop_llm.services.container import build_services
from tests.live_server import make_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"api", "worker", "redis", "postgres", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def _resolve(value: str) -> str:
    """Compose's ${VAR:-default} with the default taken."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_every_service_is_there_with_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if services[name]["depends_on"][dependency].get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency]


def test_ports_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api_port = Settings.model_fields["server_port"].default
    assert f"{api_port}:{api_port}" in services["api"]["ports"]
    assert f"EXPOSE {api_port}" in (ROOT / "Dockerfile").read_text()
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = prometheus["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"api:{api_port}"]
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    url = urlparse(datasource["datasources"][0]["url"])
    assert url.hostname == "prometheus"
    assert f"{url.port}:{url.port}" in services["prometheus"]["ports"]


def test_environment_wires_the_services_together(compose: dict[str, Any]) -> None:
    services = compose["services"]
    known = {field.alias for field in Settings.model_fields.values()}
    for config in (ROOT / "config").glob("*.yaml"):  # ${VAR} in config files are settings too
        known |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", config.read_text()))
    postgres = _env(services["postgres"])
    for name in ("api", "worker"):
        env = {key: _resolve(value) for key, value in _env(services[name]).items()}
        assert set(env) <= known, f"{name}: unknown settings {set(env) - known}"
        database = urlparse(env["DATABASE_URL"])
        assert database.scheme == "postgresql+asyncpg"
        assert database.hostname == "postgres"
        assert database.username == postgres["POSTGRES_USER"]
        assert database.path.lstrip("/") == postgres["POSTGRES_DB"]
        assert urlparse(env["REDIS_URL"]).hostname == "redis"
        assert urlparse(env["BROKER_URL"]).hostname == "redis"
    assert services["worker"]["command"] == ["sop-llm", "worker"]
    assert "sop-llm db upgrade" in " ".join(services["api"]["command"])


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    mounts = 0
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
                mounts += 1
    assert mounts >= 3
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text())
    grafana_mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert provider["providers"][0]["options"]["path"] in grafana_mounts.values()


def test_the_grafana_dashboard_only_asks_for_metrics_the_service_exposes() -> None:
    services = build_services(make_settings())  # nothing started, no model loaded
    exposed = set()
    for family in text_string_to_metric_families(generate_latest(services.metrics.registry).decode()):
        exposed |= {sample.name for sample in family.samples} | {family.name}
        if family.type == "counter":  # a labelled counter shows samples only once used
            exposed.add(f"{family.name}_total")
    # Histograms show their _bucket series only once observed; list them from the families' names.
    exposed |= {f"{name}_bucket" for name in exposed}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/sop-llm.json").read_text())
    asked = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            asked |= set(re.findall(r"\bsop_llm_[a-z_]+", target["expr"]))
    assert asked, "the dashboard queries nothing"
    assert asked <= exposed, f"unknown metrics: {asked - exposed}"


def test_dockerfile_is_multi_stage_non_root_portable_and_health_checked() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text
    assert "-DGGML_NATIVE=OFF" in text  # no -march=native: the image runs on other CPUs
    assert "torch==2.13.0" in text and "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    missing = {field.alias for field in Settings.model_fields.values() if f"{field.alias}=" not in text}
    assert not missing, f".env.example lacks {sorted(missing)}"
