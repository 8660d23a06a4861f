"""The Helm chart (deploy/helm/mediround), rendered and linted offline with the Helm 4 SDK: its values and
their schema, the Serve config KubeRay deploys, the gRPC front's wiring, secrets, optional objects, and
whether the Ray cluster has room for every replica."""

import base64
import copy
import json
import re
import shlex
import tomllib
from pathlib import Path

import helm_python as helm
import jsonschema
import pytest
import yaml
from ray.serve.schema import DeploymentSchema, RayActorOptionsSchema, ServeDeploySchema

from serving.cli import build_parser
from serving.pipeline import APPS, CONFIGS

from .test_manifest_schemas import kubernetes_errors

VALUE_FILES = ["values.yaml", "values-gpu.yaml"]
MIRRORS = {"values.yaml": "cpu-tiny.yaml", "values-gpu.yaml": "gpu-full.yaml"}
ROOT = Path(__file__).resolve().parents[2]


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    (found,) = of_kind(objects, kind)
    return found


def serve_config(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "RayService")["spec"]["serveConfigV2"])


def groups(objects: list[dict]) -> dict[str, dict]:
    """Worker groups by name, the head group as "head"."""
    cluster = one(objects, "RayService")["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"]} | {g["groupName"]: g for g in cluster["workerGroupSpecs"]}


def front_command(objects: list[dict]) -> list[str]:
    """The arguments of `mediround` in the front's start script ("serve", ...), split as bash would
    but not expanded."""
    (script,) = groups(objects)["front"]["template"]["spec"]["containers"][0]["args"]
    (line,) = [ln for ln in script.splitlines() if ln.startswith("exec mediround serve ")]
    return shlex.split(line)[2:]


def containers(objects: list[dict]) -> list[dict]:
    """Every container that runs the MediRound image: Ray head, workers, gRPC fronts."""
    return [c for g in groups(objects).values() for c in g["template"]["spec"]["containers"]]


def applications(config: dict) -> dict:
    """A Serve config's applications by name, less what differs on purpose: the checkpoint and Redis URL
    (filled in at deploy time; the chart keeps the URL out of the RayService) and the custom resources
    that pin deployments to worker groups."""
    apps = {}
    for app in config["applications"]:
        deployments = copy.deepcopy(app["deployments"])
        for d in deployments:
            d.get("ray_actor_options", {}).pop("resources", None)
        args = {k: v for k, v in (app.get("args") or {}).items() if k not in ("checkpoint", "redis_url")}
        apps[app["name"]] = {"import_path": app["import_path"], "args": args, "deployments": deployments}
    return apps


# --- values, schema, lint ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_FILES)
def test_chart_lints_clean(chart_dir, values_file, name):
    report = helm.lint(chart_dir, values_file(name), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", VALUE_FILES)
def test_values_files_meet_the_values_schema(chart, chart_dir, values_file, name):
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(chart.merge_values(values_file(name)))


@pytest.mark.parametrize("values, where", [
    ({"front": {"replicas": "two"}}, "/front/replicas"),
    ({"serve": {"applications": {"reasoner": {"deployment": {"num_replicas": "two"}}}}}, "num_replicas"),
    ({"serve": {"applications": {"reasoner": {"deployment": {"num_replica": 2}}}}}, "num_replica"),
    ({"head": {"rayStartParams": {"num-cpus": 0}}}, "num-cpus"),
    ({"workerGroups": [{"name": "front", "replicas": 1, "minReplicas": 1, "maxReplicas": 1}]}, "/name"),
    ({"gcsFaultTolerance": {"enabled": True}}, "redisAddress"),
    ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
    # the replicas read REDIS_URL from their pods: a URL in args would put its password in the RayService
    ({"serve": {"applications": {"reasoner": {"args": {"redis_url": "redis://:pw@r:6379"}}}}}, "/reasoner/args"),
    ({"auth": {"tenantSecret": "mediround-tenants"}}, "tenantSecret"),
    ({"auth": {"tenantsSecret": "Tenants_Secret"}}, "/auth/tenantsSecret"),
    # the key is the file's name in the mounted directory
    ({"auth": {"tenantsSecret": "t", "tenantsSecretKey": "../tenants.yaml"}}, "/auth/tenantsSecretKey"),
    ({"pacs": {"secret": "Hospital PACS"}}, "/pacs/secret"),
    ({"pacs": {"secret": "p", "secretKey": ".."}}, "/pacs/secretKey"),
])
def test_helm_refuses_wrong_values(chart, values, where):
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.render(values, name="mr")


def test_the_schema_only_allows_fields_ray_serve_knows(chart_dir):
    """Serve ignores unknown deployment fields, so the values schema must not let a misspelt one through."""
    deployment = json.loads((chart_dir / "values.schema.json").read_text())["definitions"]["deployment"]
    assert set(deployment["properties"]) <= set(DeploymentSchema.model_fields)
    assert set(deployment["properties"]["ray_actor_options"]["properties"]) <= set(RayActorOptionsSchema.model_fields)


def test_chart_runs_the_ray_the_package_pins(chart):
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"ray[serve,train]=={chart.values['rayVersion']}" in pins


# --- the Serve config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_FILES)
def test_serve_config_is_a_ray_serve_deploy_config(render, values_file, name):
    values = values_file(name)
    config = ServeDeploySchema.model_validate(serve_config(render(values)))
    assert sorted(a.name for a in config.applications) == sorted(APPS)
    assert all(a.args["checkpoint"] == values["model"]["checkpoint"] for a in config.applications)
    assert all(a.route_prefix is None for a in config.applications)  # requests come over gRPC


@pytest.mark.parametrize("name", VALUE_FILES)
def test_serve_config_mirrors_the_shipped_one(render, values_file, name):
    shipped = yaml.safe_load((CONFIGS / MIRRORS[name]).read_text())
    assert applications(serve_config(render(values_file(name)))) == applications(shipped)


def test_replicas_come_from_values(render):
    objects = render({"serve": {"applications": {"reasoner": {"deployment": {"num_replicas": 3}}}},
                      "front": {"replicas": 2}})
    deployments = {a["deployments"][0]["name"]: a["deployments"][0] for a in serve_config(objects)["applications"]}
    assert {n: d["num_replicas"] for n, d in deployments.items()} == {"ImageEncoder": 1, "Reasoner": 3,
                                                                      "Segmenter": 1}
    front = groups(objects)["front"]
    assert front["replicas"] == front["minReplicas"] == front["maxReplicas"] == 2


def test_the_front_attaches_to_what_kuberay_deploys(render):
    args = build_parser().parse_args(front_command(render()))
    # it serves the applications of serveConfigV2 and deploys nothing, so stopping it stops nothing else
    assert args.attach and args.serve_config is None


# --- the gRPC front --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, {"tls": {"enabled": True, "secretName": "front-tls"},
                                         "front": {"extraArgs": ["--replicas", "Reasoner=2"]}}])
def test_front_runs_a_mediround_serve_the_cli_accepts(render, values):
    objects = render(values)
    front = groups(objects)["front"]
    pod = front["template"]
    container = pod["spec"]["containers"][0]
    args = build_parser().parse_args(front_command(objects))
    assert args.command == "serve"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.address == f"0.0.0.0:{ports['grpc']}" and args.metrics_port == ports["metrics"]
    # a Ray node first (KubeRay's own `ray start`, not blocking), then a driver attached to it
    assert pod["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    assert 'eval "${KUBERAY_GEN_RAY_START_CMD/--block/}"' in container["args"][0]
    assert args.ray_address == "auto" and front["rayStartParams"] == {"num-cpus": "0"}
    assert args.token is None  # read from MEDIROUND_TOKEN (a Secret), never on the command line
    if values:
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert args.tls_cert == f"{mounts['tls']}/tls.crt" and args.tls_key == f"{mounts['tls']}/tls.key"
        assert args.replicas == ["Reasoner=2"] and "tcpSocket" in container["readinessProbe"]
    else:
        assert args.tls_cert is None and container["readinessProbe"]["grpc"] == {"port": ports["grpc"]}


def test_grpc_service_and_pdb_select_only_the_front(render):
    objects = render({"podDisruptionBudget": {"enabled": True}})
    labels = {name: g["template"]["metadata"]["labels"] for name, g in groups(objects).items()}
    service = one(objects, "Service")
    pdb = one(objects, "PodDisruptionBudget")
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert [n for n, group in labels.items() if selector.items() <= group.items()] == ["front"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}


# --- secrets ---------------------------------------------------------------------------------------------


def secret_refs(objects: list[dict], env: str) -> list[dict]:
    """The secretKeyRef of `env` in every container of the image (an error if any sets it in plain text)."""
    refs = []
    for container in containers(objects):
        (var,) = [e for e in container["env"] if e["name"] == env]
        assert "value" not in var
        refs.append(var["valueFrom"]["secretKeyRef"])
    return refs


def test_redis_url_is_only_ever_a_secret_reference(chart, render):
    url = "redis://:hunter2@redis.internal:6379/0"
    manifests = chart.render({"redis": {"url": url}}, name="mr")
    assert not [path for path, text in manifests.items() if "hunter2" in text]
    objects = render({"redis": {"url": url}})
    (secret,) = [s for s in of_kind(objects, "Secret") if s["metadata"]["name"] == "mr-mediround-redis-url"]
    assert base64.b64decode(secret["data"]["url"]).decode() == url
    assert all(ref == {"name": "mr-mediround-redis-url", "key": "url"} for ref in secret_refs(objects, "REDIS_URL"))


@pytest.mark.parametrize("name", VALUE_FILES)
def test_replicas_that_read_redis_find_it_on_every_node_that_can_host_them(render, values_file, name):
    """The encoder and the Reasoner (whose replicas read stored rounds to rebuild a dialogue) take
    args["redis_url"], else REDIS_URL: the chart leaves the URL out of serveConfigV2, so the pods of every
    group a replica fits on carry REDIS_URL from the Secret, which their Ray workers inherit."""
    objects = render(values_file(name))
    apps = {a["name"]: a for a in serve_config(objects)["applications"]}
    for app in ("encoder", "reasoner"):
        assert "redis_url" not in apps[app]["args"]
        (deployment,) = apps[app]["deployments"]
        hosts = [g for g in groups(objects).values()
                 if all(node(g).get(r, 0) >= v for r, v in ask(deployment).items())]
        assert hosts
        for group in hosts:
            (var,) = [e for e in group["template"]["spec"]["containers"][0]["env"] if e["name"] == "REDIS_URL"]
            assert var["valueFrom"]["secretKeyRef"] == {"name": "mediround-redis", "key": "url"}


def test_default_redis_is_an_existing_secret(render, values_file):
    for objects in (render(), render(values_file("values-gpu.yaml"))):
        assert of_kind(objects, "Secret") == []
        assert all(ref == {"name": "mediround-redis", "key": "url"} for ref in secret_refs(objects, "REDIS_URL"))


def test_bearer_token_reaches_only_the_front_through_a_secret(chart, render):
    manifests = chart.render({"auth": {"token": "s3cr3t-t0ken"}}, name="mr")
    assert not [path for path, text in manifests.items() if "s3cr3t-t0ken" in text]
    objects = render({"auth": {"token": "s3cr3t-t0ken"}})
    (secret,) = of_kind(objects, "Secret")
    assert base64.b64decode(secret["data"]["token"]).decode() == "s3cr3t-t0ken"
    front = groups(objects)["front"]["template"]["spec"]["containers"][0]
    (var,) = [e for e in front["env"] if e["name"] == "MEDIROUND_TOKEN"]
    assert var["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "token"}
    without = render({"auth": {"enabled": False}})
    assert not [c for c in containers(without) for e in c["env"] if e["name"] == "MEDIROUND_TOKEN"]


def tenants_front(objects: list[dict]) -> tuple[dict, dict]:
    """The front's pod spec and container."""
    pod = groups(objects)["front"]["template"]["spec"]
    return pod, pod["containers"][0]


@pytest.mark.parametrize("values", [
    {"auth": {"tenantsSecret": "mediround-tenants"}},
    # beside the other mounts, with another key
    {"auth": {"tenantsSecret": "clinics", "tenantsSecretKey": "clinics.yaml"},
     "tls": {"enabled": True, "secretName": "front-tls"},
     "model": {"volume": {"persistentVolumeClaim": {"claimName": "mediround-models"}}}},
])
def test_tenants_come_from_a_secret_mounted_as_a_directory(render, values):
    """render() has checked the RayService against KubeRay's CRD; the pod template is checked here."""
    auth = values["auth"]
    objects = render(values)
    pod, container = tenants_front(objects)
    assert kubernetes_errors(groups(objects)["front"]["template"], "io.k8s.api.core.v1.PodTemplateSpec") == []
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if volumes[m["name"]].get("secret", {}).get("secretName")
                == auth["tenantsSecret"]]
    # the whole Secret as a directory: a subPath mount never sees the Secret rotate, the directory does
    assert "subPath" not in mount and "subPathExpr" not in mount and mount["readOnly"]
    assert volumes[mount["name"]]["secret"] == {"secretName": auth["tenantsSecret"]}
    command = front_command(objects)
    key = auth.get("tenantsSecretKey", "tenants.yaml")
    assert command[command.index("--tokens-file") + 1] == f"{mount['mountPath']}/{key}"
    # --tokens-file and --token exclude each other: no single token anywhere, and no Secret made for one
    assert not [c for c in containers(objects) for e in c["env"] if e["name"].startswith("MEDIROUND_TOKEN")]
    assert of_kind(objects, "Secret") == []


def test_the_cli_accepts_the_fronts_tokens_file(render):
    args = build_parser().parse_args(front_command(render({"auth": {"tenantsSecret": "mediround-tenants"}})))
    assert args.tokens_file == "/etc/mediround/tenants/tenants.yaml" and args.token is None


def test_pacs_endpoints_come_from_a_secret_mounted_as_a_directory(render):
    objects = render({"pacs": {"secret": "hospital-pacs"}, "auth": {"tenantsSecret": "mediround-tenants"}})
    pod, container = tenants_front(objects)
    assert kubernetes_errors(groups(objects)["front"]["template"], "io.k8s.api.core.v1.PodTemplateSpec") == []
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"]
                if volumes[m["name"]].get("secret", {}).get("secretName") == "hospital-pacs"]
    assert "subPath" not in mount and mount["readOnly"]  # the endpoints file and its credentials, rotatable
    args = build_parser().parse_args(front_command(objects))
    assert args.pacs_file == f"{mount['mountPath']}/pacs.yaml" and args.tokens_file
    assert "--pacs-file" not in front_command(render({}))  # no PACS unless one is configured
    assert args.checkpoint == "/opt/mediround/checkpoints/tiny"  # the SEG names the checkpoint the replicas run
    other = build_parser().parse_args(front_command(render({"model": {"checkpoint": "/models/full"}})))
    assert other.checkpoint == "/models/full"


def test_tenants_and_a_single_token_exclude_each_other(chart, render):
    with pytest.raises(helm.HelmRenderError, match="auth.token and auth.tenantsSecret exclude each other"):
        chart.render({"auth": {"tenantsSecret": "mediround-tenants", "token": "dev"}}, name="mr")
    # no auth at all: neither
    objects = render({"auth": {"enabled": False, "tenantsSecret": "mediround-tenants"}})
    pod, container = tenants_front(objects)
    assert "--tokens-file" not in front_command(objects) and "volumes" not in pod
    assert not [e for e in container["env"] if e["name"] == "MEDIROUND_TOKEN"]


# --- optional objects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, kinds", [
    ({"metrics": {"serviceMonitor": {"enabled": True}}}, ["ServiceMonitor", "PodMonitor"]),
    ({"podDisruptionBudget": {"enabled": True}}, ["PodDisruptionBudget"]),
    ({"redis": {"dev": {"enabled": True}}}, ["Deployment", "Service", "Secret"]),
])
def test_optional_objects_appear_only_when_enabled(render, values, kinds):
    base = [o["kind"] for o in render()]
    added = [o["kind"] for o in render(values)]
    for kind in kinds:
        assert added.count(kind) == base.count(kind) + 1


def test_service_monitor_scrapes_the_front_metrics_port(render):
    objects = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = one(objects, "ServiceMonitor")
    service = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "mr-mediround-grpc"][0]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
    assert monitor["metadata"]["labels"]["release"] == "prom"


def test_pod_monitor_scrapes_the_ray_metrics_port_of_the_head_and_every_model_worker(render):
    """The replicas' metrics are served by Ray's metrics agent on the Ray pods that run them, not by the front."""
    objects = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    monitor = one(objects, "PodMonitor")
    cluster = one(objects, "RayService")["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]

    def scraped(pod) -> bool:
        labels, wanted = pod["metadata"]["labels"], monitor["spec"]["selector"]
        return (wanted["matchLabels"].items() <= labels.items()
                and all(labels.get(e["key"]) in e["values"] for e in wanted["matchExpressions"]))

    components = {p["metadata"]["labels"]["app.kubernetes.io/component"]: scraped(p) for p in pods}
    assert components == {"ray-head": True, "ray-worker": True, "grpc-front": False}
    for pod in filter(scraped, pods):
        assert "ray-metrics" in [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["ray-metrics"]


def test_dev_redis_is_what_the_pods_are_pointed_at(render):
    objects = render({"redis": {"dev": {"enabled": True}}})
    (redis,) = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "mr-mediround-redis"]
    (secret,) = of_kind(objects, "Secret")
    assert base64.b64decode(secret["data"]["url"]).decode() == f"redis://{redis['metadata']['name']}:6379/0"
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7"
    assert all(ref["name"] == secret["metadata"]["name"] for ref in secret_refs(objects, "REDIS_URL"))


def test_dev_redis_keeps_sessions_across_container_restarts(render):
    """AOF, fsync'd on every write, on an emptyDir: a restarted Redis container reads its sessions back
    (the pod's own volume outlives its containers); noeviction: a full Redis refuses writes rather than
    dropping sessions."""
    (deployment,) = of_kind(render({"redis": {"dev": {"enabled": True}}}), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (redis,) = pod["containers"]
    options = dict(zip(redis["args"][::2], redis["args"][1::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    (mount,) = redis["volumeMounts"]
    assert mount["mountPath"] == options["--dir"]
    assert {v["name"]: v for v in pod["volumes"]}[mount["name"]] == {"name": mount["name"], "emptyDir": {}}


def test_gcs_fault_tolerance_is_off_unless_asked(render):
    assert "gcsFaultToleranceOptions" not in one(render(), "RayService")["spec"]["rayClusterConfig"]
    objects = render({"gcsFaultTolerance": {"enabled": True, "redisAddress": "gcs-redis:6379",
                                            "passwordSecret": {"name": "gcs-redis", "key": "password"}}})
    options = one(objects, "RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options == {"redisAddress": "gcs-redis:6379",
                       "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "gcs-redis", "key": "password"}}}}


# --- room for every replica ------------------------------------------------------------------------------


def quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def node(group: dict) -> dict[str, float]:
    """The Ray resources of a group's nodes, as KubeRay starts them (num-cpus param, else the CPU limit)."""
    params = group["rayStartParams"]
    limits = group["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    found = {"CPU": quantity(params.get("num-cpus", limits.get("cpu", 0))),
             "GPU": quantity(limits.get("nvidia.com/gpu", 0))}
    if "resources" in params:  # '"{\"llm_gpu\":1}"': a bash-quoted JSON object
        found |= json.loads(shlex.split(params["resources"])[0])
    return found


def nodes(objects: list[dict]) -> list[dict[str, float]]:
    """Every Ray node's resources."""
    return [node(group) for group in groups(objects).values() for _ in range(group.get("replicas", 1))]


def ask(deployment: dict) -> dict[str, float]:
    """What one replica of a deployment asks Ray for."""
    options = deployment.get("ray_actor_options", {})
    return {"CPU": options.get("num_cpus", 1), "GPU": options.get("num_gpus", 0)} | options.get("resources", {})


def replicas(objects: list[dict]) -> list[dict[str, float]]:
    return [ask(d) for app in serve_config(objects)["applications"] for d in app["deployments"]
            for _ in range(d["num_replicas"])]


def always_placed(free: list[dict], asks: list[dict]) -> bool:
    """Whatever order the replicas start in and whichever fitting node Ray picks, all of them fit."""
    for i, ask in enumerate(asks):
        fitting = [n for n, node in enumerate(free) if all(node.get(r, 0) >= v for r, v in ask.items())]
        if not fitting:
            return False
        for n in fitting:
            after = [dict(node) for node in free]
            for r, v in ask.items():
                after[n][r] -= v
            if not always_placed(after, asks[:i] + asks[i + 1:]):
                return False
    return True


@pytest.mark.parametrize("name", VALUE_FILES)
def test_the_cluster_has_room_for_every_replica(render, values_file, name):
    objects = render(values_file(name))
    assert always_placed(nodes(objects), replicas(objects))


def test_gpu_stages_would_strand_the_reasoner_without_their_pinning(render, values_file):
    """Why values-gpu.yaml pins deployments to worker groups: half a SAM stage on the LLM's GPU leaves the
    Reasoner nowhere to go."""
    values = values_file("values-gpu.yaml")
    for app in values["serve"]["applications"].values():
        app["deployment"]["ray_actor_options"].pop("resources")
    objects = render(values)
    assert not always_placed(nodes(objects), replicas(objects))


def test_gpu_groups_ask_kubernetes_for_gpu_nodes(render, values_file):
    gpu_groups = {n: g for n, g in groups(render(values_file("values-gpu.yaml"))).items() if n in ("llm", "sam")}
    assert len(gpu_groups) == 2
    for group in gpu_groups.values():
        spec = group["template"]["spec"]
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] and spec["tolerations"][0]["key"] == "nvidia.com/gpu"
