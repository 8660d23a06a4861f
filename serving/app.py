"""The Ray Serve applications and their deployment from a Serve config file.

Three applications (``encoder``, ``reasoner``, ``decoder``), each one deployment; replicas, CPU/GPU
shares, batch sizes and waits come from a config in ``serve build``'s schema (``deploy/serve/``).
``deploy_pipeline`` deploys them and returns the ``ServePipeline`` the gRPC front calls;
``attach_pipeline`` takes that of applications already running (a KubeRay RayService).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import yaml
from ray import serve

from model.config import SHIPPED_TINY
from serving.deployments import ImageEncoder, MaskDecoder, Reasoner, ServePipeline

CONFIGS = Path(__file__).resolve().parent.parent / "deploy" / "serve"
APPS = ("encoder", "reasoner", "decoder")


def encoder_app(args: dict):
    # The shared encoding tier: the app's argument, else the replica's REDIS_URL (how a cluster passes a secret).
    redis_url = args.get("redis_url") or os.environ.get("REDIS_URL")
    return ImageEncoder.bind(args["checkpoint"], redis_url, args.get("cache_size", 64))


def reasoner_app(args: dict):
    return Reasoner.bind(args["checkpoint"], args.get("dialogue_cache_size", 256))


def decoder_app(args: dict):
    return MaskDecoder.bind(args["checkpoint"], args.get("use_jcm", True))


def load_serve_config(path: str | Path | None = None, *, checkpoint: str | Path | None = None,
                      redis_url: str | None = None, replicas: dict[str, int] | None = None) -> dict:
    """A Serve config dict with every application's null ``checkpoint``/``redis_url`` filled in and
    ``replicas`` (deployment name -> count) applied."""
    config = copy.deepcopy(yaml.safe_load(Path(path or CONFIGS / "cpu-tiny.yaml").read_text()))
    for app in config["applications"]:
        args = app.setdefault("args", {})
        if args.get("checkpoint") is None:
            args["checkpoint"] = str(checkpoint or SHIPPED_TINY)
        if "redis_url" in args and args["redis_url"] is None:
            args["redis_url"] = redis_url
        for d in app.get("deployments", []):
            if replicas and d["name"] in replicas:
                d["num_replicas"] = replicas[d["name"]]
    return config


def deploy_pipeline(config: dict, *, timeout: float = 600.0) -> ServePipeline:
    """Deploy the three applications of ``config`` on the connected Ray cluster; wait until running."""
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(),
                                   proxy_location=schema.proxy_location)
    client.deploy_apps(schema)
    return attach_pipeline(timeout=timeout)


def attach_pipeline(*, timeout: float = 600.0) -> ServePipeline:
    """The ``ServePipeline`` of the three applications on the connected Ray cluster, once they all run
    (deployed by ``deploy_pipeline`` or by a cluster operator such as KubeRay)."""
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout
    while True:
        apps = serve.status().applications
        failed = {n: a.message for n, a in apps.items() if a.status == ApplicationStatus.DEPLOY_FAILED}
        if failed:
            raise RuntimeError(f"Serve applications failed to deploy: {failed}")
        if all(n in apps and apps[n].status == ApplicationStatus.RUNNING for n in APPS):
            return ServePipeline(*(serve.get_app_handle(name) for name in APPS))
        if time.monotonic() > deadline:
            raise TimeoutError(f"Serve applications not running after {timeout:.0f} s: "
                               f"{ {n: a.status for n, a in apps.items()} }")
        time.sleep(0.5)
