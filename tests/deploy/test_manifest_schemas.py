"""The chart's objects against real schemas: Kubernetes 1.33's own (data/, from kubernetes-validate) for
the native objects and for every pod template inside the RayService; KubeRay 1.4.0's RayService CRD
(data/, see data/PROVENANCE.md) for the whole RayService."""

import copy
import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest

from .kuberay import CRD, rayservice_errors

DATA = Path(__file__).parent / "data"
KUBERNETES = json.loads((DATA / "kubernetes-v1.33.0-schemas.json").read_text())
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
    native = [o for o in objects if o["apiVersion"] not in ("ray.io/v1", "monitoring.coreos.com/v1")]
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


def test_the_crd_is_kuberays_file_unchanged():
    (recorded,) = re.findall(r"sha256 `([0-9a-f]{64})`", (DATA / "PROVENANCE.md").read_text().split("## `kuberay")[1])
    assert hashlib.sha256(CRD.read_bytes()).hexdigest() == recorded


def test_rayservice_matches_kuberays_crd(objects):
    """The render fixture already refuses a RayService the CRD refuses; this says so for each value set, and
    checks the metadata, which the CRD leaves to the API server's ObjectMeta."""
    (rayservice,) = [o for o in objects if o["kind"] == "RayService"]
    assert rayservice_errors(rayservice) == []
    assert kubernetes_errors(rayservice["metadata"], "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta") == []


def front_group(rayservice: dict) -> dict:
    (front,) = [g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "front"]
    return front


def null_volume_mounts(rayservice):  # what the front rendered before it left out empty lists
    front_group(rayservice)["template"]["spec"]["containers"][0]["volumeMounts"] = None


def duplicate_redis_url(rayservice):
    env = front_group(rayservice)["template"]["spec"]["containers"][0]["env"]
    env.append(copy.deepcopy(env[0]))


@pytest.mark.parametrize("breaks, path, message", [
    (lambda rs: front_group(rs).update(replicas="2"), r"workerGroupSpecs/\d+/replicas", "not of type 'integer'"),
    (lambda rs: rs["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
     "headGroupSpec/rayStartParams", "not of type 'string'"),
    (lambda rs: front_group(rs).update(replica=2), r"workerGroupSpecs/\d+$", "'replica' was unexpected"),
    (lambda rs: front_group(rs).pop("groupName"), r"workerGroupSpecs/\d+$", "'groupName' is a required property"),
    (null_volume_mounts, "containers/0/volumeMounts", "None is not of type 'array'"),
    (duplicate_redis_url, "containers/0/env", "duplicate entry"),
], ids=["string replicas", "int rayStartParam", "unknown field", "no groupName", "null list", "duplicate env"])
def test_the_crd_refuses_what_kuberay_would(render, breaks, path, message):
    (rayservice,) = [o for o in render() if o["kind"] == "RayService"]
    breaks(rayservice)
    errors = rayservice_errors(rayservice)
    assert len(errors) == 1 and re.search(path, errors[0].split(": ")[0]) and message in errors[0], errors
