"""The chart's objects against real schemas: Kubernetes 1.33's own (data/, from kubernetes-validate) for
the native objects and for every pod template inside the RayService; KubeRay's RayService CRD once its
schema is in data/ (see data/PROVENANCE.md)."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

DATA = Path(__file__).parent / "data"
KUBERNETES = json.loads((DATA / "kubernetes-v1.33.0-schemas.json").read_text())
RAYSERVICE_CRD = DATA / "kuberay-rayservice-crd.yaml"
DEFINITIONS = {"v1/Service": "io.k8s.api.core.v1.Service", "v1/Secret": "io.k8s.api.core.v1.Secret",
               "v1/ConfigMap": "io.k8s.api.core.v1.ConfigMap", "apps/v1/Deployment": "io.k8s.api.apps.v1.Deployment",
               "policy/v1/PodDisruptionBudget": "io.k8s.api.policy.v1.PodDisruptionBudget"}
EVERYTHING_ON = {"redis": {"dev": {"enabled": True}}, "auth": {"token": "t"},
                 "tls": {"enabled": True, "secretName": "s"}, "autoscaler": {"enabled": True},
                 "podDisruptionBudget": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}},
                 "model": {"volume": {"persistentVolumeClaim": {"claimName": "models"}}},
                 "gcsFaultTolerance": {"enabled": True, "redisAddress": "gcs:6379", "passwordSecret": {"name": "g"}}}


def kubernetes_errors(obj: dict, definition: str) -> list[str]:
    schema = {"$schema": KUBERNETES["$schema"], "$defs": KUBERNETES["$defs"], "$ref": f"#/$defs/{definition}"}
    errors = jsonschema.Draft202012Validator(schema).iter_errors(obj)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.fixture(scope="module")
def value_sets(values_file):
    return {"defaults": {}, "gpu": values_file("values-gpu.yaml"), "everything on": EVERYTHING_ON}


@pytest.fixture(params=["defaults", "gpu", "everything on"])
def objects(request, render, value_sets):
    return render(value_sets[request.param])


def test_native_objects_match_kubernetes(objects):
    native = [o for o in objects if o["apiVersion"] != "ray.io/v1" and o["kind"] != "ServiceMonitor"]
    assert native
    for obj in native:
        assert kubernetes_errors(obj, DEFINITIONS[f"{obj['apiVersion']}/{obj['kind']}"]) == [], obj["kind"]


def test_rayservice_pod_templates_match_kubernetes(objects):
    (rayservice,) = [o for o in objects if o["kind"] == "RayService"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert kubernetes_errors(group["template"], "io.k8s.api.core.v1.PodTemplateSpec") == []
    if "gcsFaultToleranceOptions" in cluster:
        password = cluster["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]
        assert kubernetes_errors(password, "io.k8s.api.core.v1.EnvVarSource") == []


def test_the_kubernetes_schema_refuses_what_kubernetes_would(render):
    (rayservice,) = [o for o in render() if o["kind"] == "RayService"]
    template = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    template["spec"]["containers"][0]["resource"] = template["spec"]["containers"][0].pop("resources")
    assert kubernetes_errors(template, "io.k8s.api.core.v1.PodTemplateSpec")


@pytest.mark.skipif(not RAYSERVICE_CRD.exists(), reason="KubeRay's RayService CRD is not in tests/deploy/data yet "
                    "(none could be fetched here; data/PROVENANCE.md says where it comes from)")
def test_rayservice_matches_kuberays_crd(render, value_sets):
    crd = yaml.safe_load(RAYSERVICE_CRD.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    validator = jsonschema.Draft7Validator(v1["schema"]["openAPIV3Schema"])
    for values in value_sets.values():
        (rayservice,) = [o for o in render(values) if o["kind"] == "RayService"]
        validator.validate(rayservice)
