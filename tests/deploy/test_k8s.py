"""deploy/k8s/ validated offline against Kubernetes' own schemas (kubernetes-validate, strict: unknown fields are
errors), and against what sleepd needs: readiness on /ready, rolling updates that keep streams, one scheduler,
GPU workers, a shared ReadWriteMany registry, settings that exist. No cluster or kubectl needed."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import cli_commands, health_paths, unknown_settings
from tests.deploy.promql import ROOT

K8S = ROOT / "deploy" / "k8s"
VERSION = "1.30.0"  # the oldest Kubernetes these manifests are for


@cache
def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _get(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("index", range(len(documents())))
def test_manifests_are_valid_kubernetes_objects(index: int) -> None:
    name, doc = documents()[index]
    try:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"]["strategy"]["rollingUpdate"].update(maxUnavailble=0),  # misspelt field
        lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds="60"),  # wrong type
        lambda d: d["spec"].pop("selector"),  # required
    ],
)
def test_validation_refuses_a_broken_manifest(mutate: Any) -> None:
    doc = copy.deepcopy(_get("Deployment", "sleepd-api"))
    mutate(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_api_rolls_out_without_dropping_streams() -> None:
    api = _get("Deployment", "sleepd-api")
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = api["spec"]["template"]["spec"]
    container = _container(api)
    assert container["args"] == ["serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    probes = [container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")]
    assert set(probes) <= health_paths(), f"probes {probes} vs routes {health_paths()}"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    # uvicorn's graceful shutdown in `sleepd serve` (cli/main.py) waits this long for requests in flight.
    cli = (ROOT / "cli" / "main.py").read_text()
    drain = int(cli.split("timeout_graceful_shutdown=")[1].split(",")[0].split(")")[0])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


def test_workers_run_on_gpu_nodes_and_one_scheduler_runs() -> None:
    worker = _get("DaemonSet", "sleepd-worker")
    assert worker["spec"]["template"]["spec"]["nodeSelector"]
    assert _container(worker)["args"] == ["worker"]
    assert _container(worker)["resources"]["limits"]["nvidia.com/gpu"] == 1
    scheduler = _get("Deployment", "sleepd-scheduler")
    assert scheduler["spec"]["replicas"] == 1 and scheduler["spec"]["strategy"]["type"] == "Recreate"
    assert _container(scheduler)["args"] == ["scheduler"]
    for _, doc in documents():
        if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet") and doc["metadata"]["name"].startswith("sleepd"):
            assert _container(doc)["args"][0] in cli_commands()


def test_registry_is_one_shared_volume_where_the_setting_points() -> None:
    pvc = _get("PersistentVolumeClaim", "sleepd-registry")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    registry_dir = _get("ConfigMap", "sleepd-config")["data"]["SLEEPD_REGISTRY_DIR"]
    for kind, name in (("Deployment", "sleepd-api"), ("DaemonSet", "sleepd-worker")):
        pod = _get(kind, name)["spec"]["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}  # fmt: skip
        mounts = {m["name"]: m["mountPath"] for m in _container(_get(kind, name))["volumeMounts"]}
        assert any(claims.get(v) == "sleepd-registry" and p == registry_dir for v, p in mounts.items()), name


def test_settings_and_secrets_name_real_settings() -> None:
    config = _get("ConfigMap", "sleepd-config")["data"]
    assert not unknown_settings(config), unknown_settings(config)
    assert config["SLEEPD_HOST"] == "0.0.0.0", "the API must listen beyond the pod's loopback"
    secret = _get("Secret", "sleepd-admin")
    assert list(secret["stringData"]) == ["SLEEPD_ADMIN_TOKEN"]
    for _, doc in documents():
        if doc["kind"] in ("Deployment", "DaemonSet"):
            for ref in _container(doc).get("envFrom", []):
                target = ref.get("configMapRef") or ref.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in ref else "Secret"
                assert _get(kind, target["name"])
