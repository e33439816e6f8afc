"""deploy/kubernetes/ and the compose `two-nodes` profile: every Kubernetes object valid against the API's JSON schemas
(kubernetes-validate's bundled ones, strict: an unknown field fails), and the files agreeing with the code and with
each other — probe and scrape paths are public routes of the app, ports and setting names are the service's, the
config files load with its own loader, and the gateway's deployments name the inference pods' stable DNS names."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from sop_llm.api.middleware.auth import PUBLIC_PATHS
from sop_llm.app import create_app
from sop_llm.infra.model_config import load_service_config
from sop_llm.infra.settings import Settings
from sop_llm.providers.registry import provider_types
from tests.live_server import make_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy/kubernetes"
COMPOSE = ROOT / "deploy/compose"
KUBERNETES_VERSION = "1.31.0"
MANIFESTS = sorted(path.name for path in KUBE.glob("*.yaml") if path.name != "kustomization.yaml")
WORKLOADS = {"Deployment", "StatefulSet"}
CONFIG_FILES = ("providers.yaml", "models.yaml", "embeddings.yaml")

Object = dict[str, Any]


def _objects() -> list[Object]:
    return [doc for name in MANIFESTS for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]


def _one(kind: str, name: str) -> Object:
    found = [obj for obj in _objects() if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _workloads() -> list[Object]:
    return [obj for obj in _objects() if obj["kind"] in WORKLOADS]


def _containers(workload: Object) -> Iterator[Object]:
    pod = workload["spec"]["template"]["spec"]
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def _env(container: Object) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def _image_facts() -> tuple[int, str, int]:
    """The runtime user's uid and home, and the exposed port, as the Dockerfile has them."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"useradd --create-home --uid (\d+) (\w+)", dockerfile)
    port = re.search(r"^EXPOSE (\d+)", dockerfile, re.M)
    assert user and port
    return int(user.group(1)), f"/home/{user.group(2)}", int(port.group(1))


def _configmap_folder(name: str, folder: Path) -> Path:
    for file_name, text in _one("ConfigMap", name)["data"].items():
        (folder / file_name).write_text(text)
    return folder


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_manifest_is_valid_for_kubernetes(manifest: str) -> None:
    documents = [doc for doc in yaml.safe_load_all((KUBE / manifest).read_text()) if doc]
    assert documents, manifest
    for document in documents:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{manifest}: {document['kind']}/{document['metadata']['name']}: {where}: {exc.message}")


def test_strict_validation_refuses_an_unknown_field() -> None:
    gateway = copy.deepcopy(_one("Deployment", "sop-llm-gateway"))
    gateway["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/api/v1/health"
    with pytest.raises(kubernetes_validate.ValidationError, match="'pth' was unexpected"):
        kubernetes_validate.validate(gateway, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_names_the_image() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == MANIFESTS
    assert "namespace" not in kustomization  # applied with -n, or set by whoever deploys
    for obj in _objects():
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
    images = {image["name"] for image in kustomization["images"]}
    used = {container["image"] for workload in _workloads() for container in _containers(workload)}
    assert used == images == {"sop-llm"}
    assert "image: sop-llm:latest" in (ROOT / "docker-compose.yml").read_text()


def test_probes_and_scrapes_hit_public_routes_of_the_app_on_its_port() -> None:
    routes = create_app(make_settings()).openapi()["paths"]  # nothing started, no model loaded
    _, _, port = _image_facts()
    assert port == Settings.model_fields["server_port"].default
    probed = set()
    for workload in _workloads():
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        for container in workload["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            env = _env(container)
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "httpGet" not in container.get(kind, {}):
                    continue
                probe = container[kind]["httpGet"]
                assert ports[probe["port"]] == port
                assert "get" in routes.get(probe["path"], {}), f"{probe['path']} is not a GET route of the app"
                assert probe["path"] in PUBLIC_PATHS, f"{probe['path']} would need credentials with auth on"
                probed.add((kind, probe["path"]))
            if ports:
                assert env["SERVER_PORT"] == str(port)
            if annotations.get("prometheus.io/scrape") == "true":
                assert annotations["prometheus.io/port"] == str(port)
                assert "get" in routes.get(annotations["prometheus.io/path"], {})
                assert env["METRICS_PUBLIC"] == "true", "annotation scrapes carry no credentials"
    assert ("livenessProbe", "/api/v1/health") in probed
    assert ("readinessProbe", "/api/v1/health/ready") in probed
    inference = _one("StatefulSet", "sop-llm-inference")["spec"]["template"]["spec"]["containers"][0]
    assert inference["startupProbe"]["httpGet"]["path"] == "/api/v1/health/ready"


def test_every_environment_variable_is_a_setting_or_used_by_the_config() -> None:
    known = {field.alias for field in Settings.model_fields.values()}
    texts = [path.read_text() for path in (ROOT / "config").glob("*.yaml")]
    texts += [text for obj in _objects() if obj["kind"] == "ConfigMap" for text in obj["data"].values()]
    for text in texts:
        known |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    named = set(_one("Secret", "sop-llm-secrets")["stringData"])
    for workload in _workloads():
        for container in _containers(workload):
            named |= set(_env(container))
    assert named - known == {"HOME"}, f"unknown settings: {named - known - {'HOME'}}"


def test_secret_is_a_marked_template_for_external_postgres_and_redis() -> None:
    secret = _one("Secret", "sop-llm-secrets")["stringData"]
    assert all("REPLACE_ME" in value for value in secret.values())
    assert urlparse(secret["DATABASE_URL"]).scheme == "postgresql+asyncpg"
    assert urlparse(secret["REDIS_URL"]).scheme == urlparse(secret["BROKER_URL"]).scheme == "redis"
    services = [obj["metadata"]["name"] for obj in _objects() if obj["kind"] == "Service"]
    assert sorted(services) == ["sop-llm-gateway", "sop-llm-inference"]  # PostgreSQL and Redis live elsewhere


def test_pods_run_non_root_on_a_read_only_root_with_writable_mounts() -> None:
    uid, home, _ = _image_facts()
    for workload in _workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["enableServiceLinks"] is False  # a Service named redis would inject REDIS_PORT=tcp://…
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in _containers(workload):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert _env(container)["HOME"] == home
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]
            # The image exported the ONNX embedding graphs under ~/.cache/sop-llm: no mount may hide them.
            assert not any(f"{home}/.cache/sop-llm".startswith(path) for path in mounts if path != "/tmp")
            if container["name"] != "migrate":
                assert "emptyDir" in volumes[mounts["/app/data"]]  # FILES_DIR; SQLite on the inference nodes
                assert volumes[mounts["/app/config"]]["configMap"]["name"]


def test_references_between_objects_resolve() -> None:
    objects = _objects()
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    labels = {obj["metadata"]["name"]: obj["spec"]["template"]["metadata"]["labels"] for obj in _workloads()}
    for workload in _workloads():
        name = workload["metadata"]["name"]
        assert _matches(workload["spec"]["selector"]["matchLabels"], labels[name])
        for volume in workload["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
        for container in _containers(workload):
            for source in container.get("envFrom", []):
                assert ("Secret", source["secretRef"]["name"]) in names
            for item in container.get("env", []):
                if "resourceFieldRef" in item.get("valueFrom", {}):
                    assert item["valueFrom"]["resourceFieldRef"]["containerName"] == container["name"]
    for obj in objects:
        if obj["kind"] == "Service":
            assert [n for n, lab in labels.items() if _matches(obj["spec"]["selector"], lab)] == [
                obj["metadata"]["name"]
            ]
        elif obj["kind"] == "PodDisruptionBudget":
            assert sum(_matches(obj["spec"]["selector"]["matchLabels"], lab) for lab in labels.values()) == 1
        elif obj["kind"] == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) in names
            assert "replicas" not in _one(target["kind"], target["name"])["spec"]  # the autoscaler owns it
        elif obj["kind"] == "NetworkPolicy":
            assert any(_matches(obj["spec"]["podSelector"]["matchLabels"], lab) for lab in labels.values())


def test_inference_threads_follow_the_cpu_request() -> None:
    statefulset = _one("StatefulSet", "sop-llm-inference")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    field = next(item for item in container["env"] if item["name"] == "LLAMA_N_THREADS")["valueFrom"]
    assert field["resourceFieldRef"]["resource"] == "requests.cpu"
    assert container["resources"]["requests"] == container["resources"]["limits"]
    models = yaml.safe_load(_one("ConfigMap", "sop-llm-inference-config")["data"]["models.yaml"])["models"]
    for model in models.values():
        assert model["provider"] == "llamacpp"
        assert model["options"]["n_threads"].startswith("${LLAMA_N_THREADS")


def test_gateway_deployments_are_the_statefulset_pods() -> None:
    statefulset = _one("StatefulSet", "sop-llm-inference")
    headless = _one("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    gateway = {name: yaml.safe_load(text) for name, text in _one("ConfigMap", "sop-llm-gateway-config")["data"].items()}
    nodes = yaml.safe_load(_one("ConfigMap", "sop-llm-inference-config")["data"]["models.yaml"])["models"]
    pods = {
        f"{statefulset['metadata']['name']}-{i}.{headless['metadata']['name']}"
        for i in range(statefulset["spec"]["replicas"])
    }
    _check_deployments(gateway, nodes, pods, port)
    for workload in ("sop-llm-gateway", "sop-llm-worker"):
        volumes = _one("Deployment", workload)["spec"]["template"]["spec"]["volumes"]
        assert {"name": "sop-llm-gateway-config"} in [volume.get("configMap") for volume in volumes]


def _check_deployments(gateway: dict[str, Any], nodes: dict[str, Any], hosts: set[str], port: int) -> None:
    """Every model with deployments spreads over exactly `hosts`, through openai-type providers, onto a model the
    nodes serve, asking for no more slots than it has."""
    providers = gateway["providers.yaml"]["providers"]
    routed = {name: model for name, model in gateway["models.yaml"]["models"].items() if "deployments" in model}
    assert routed
    served = {label: model for name, model in nodes.items() for label in (name, *model.get("aliases", []))}
    for name, model in routed.items():
        assert model["strategy"] == "prefix_affinity", name
        urls = [urlparse(deployment["base_url"]) for deployment in model["deployments"]]
        assert sorted(url.hostname or "" for url in urls) == sorted(hosts), name
        assert {(url.scheme, url.port, url.path) for url in urls} == {("http", port, "/v1")}
        for deployment in model["deployments"]:
            assert providers[deployment["provider"]]["type"] == "openai"
            assert deployment["max_parallel"] <= served[deployment["model"]]["parallel"]


@pytest.mark.parametrize("source", ["kubernetes", "compose"])
def test_inference_config_loads(source: str, tmp_path: Path) -> None:
    folder = _configmap_folder("sop-llm-inference-config", tmp_path) if source == "kubernetes" else COMPOSE / "nodes"
    config = load_service_config(folder, provider_types(), {})
    assert {config.providers[model.provider].type for model in config.models.values()} == {"llamacpp"}
    assert not config.embeddings


@pytest.mark.parametrize("source", ["kubernetes", "compose"])
def test_gateway_config_loads(source: str, tmp_path: Path) -> None:
    folder = _configmap_folder("sop-llm-gateway-config", tmp_path) if source == "kubernetes" else COMPOSE / "gateway"
    config = load_service_config(folder, provider_types(), {})
    assert "smollm2-135m" in config.models
    assert config.embeddings["all-minilm-l6-v2"].backend == "onnx"


def test_compose_two_nodes_profile() -> None:
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    included = [entry if isinstance(entry, str) else entry["path"] for entry in main["include"]]
    assert included == ["deploy/compose/two-nodes.yml"]
    services = yaml.safe_load((ROOT / included[0]).read_text())["services"]
    assert set(services) == {"inference-1", "inference-2", "gateway"}
    assert not set(services) & set(main["services"])
    for name, service in services.items():
        assert service["profiles"] == ["two-nodes"], name
        assert "/api/v1/health/ready" in " ".join(service["healthcheck"]["test"])
        assert service["image"] == "sop-llm:latest"
        (mount,) = service["volumes"]
        source, target, mode = mount.split(":")
        assert target == "/app/config" and mode == "ro"
        assert {path.name for path in (COMPOSE / source).glob("*.yaml")} == set(CONFIG_FILES)
    assert services["gateway"]["depends_on"] == {
        node: {"condition": "service_healthy"} for node in ("inference-1", "inference-2")
    }
    gateway = {name: yaml.safe_load((COMPOSE / "gateway" / name).read_text()) for name in CONFIG_FILES}
    nodes = yaml.safe_load((COMPOSE / "nodes/models.yaml").read_text())["models"]
    _check_deployments(gateway, nodes, {"inference-1", "inference-2"}, Settings.model_fields["server_port"].default)
