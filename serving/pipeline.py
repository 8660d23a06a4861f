"""The front's side of the Ray Serve applications: the Serve config, deploying or attaching to the
three applications, and ``ServePipeline``, the ``Pipeline`` over their handles. Imports no torch.

Three applications (``encoder``, ``reasoner``, ``segmenter``), each one deployment; replicas, CPU/GPU
shares, batch sizes and waits come from a config in ``serve build``'s schema (``deploy/serve/``).
``deploy_pipeline`` deploys them and returns the ``ServePipeline`` the gRPC front calls;
``attach_pipeline`` takes that of applications already running (a KubeRay RayService). Both use Serve's
public API only: building an application imports the model steps (torch), so ``deploy_pipeline`` has a
Ray task build and run them (``serving.replicas.app.run_targets``), never the front process.
"""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path

import ray
import yaml
from ray import serve
from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from model.config import SHIPPED_TINY
from serving.errors import Overloaded, StepUnavailable
from serving.messages import DecodedMask, Encoding, MaskRequest, ReasonedTurn, ReasonRequest

CONFIGS = Path(__file__).resolve().parent.parent / "deploy" / "serve"
APPS = ("encoder", "reasoner", "segmenter")


_REPLICA_LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError, DeploymentUnavailableError)
"""A replica (or the replica holding an encoding) died or is unreachable: the step did not happen."""


async def _result(response, taken_within_s: float):
    """A deployment's answer once a replica takes the request: ``StepUnavailable`` when none does within
    ``taken_within_s`` (Serve holds a request to a deployment without replicas until one starts) or the replica
    is lost, which the dialogue retries. A request a replica holds is waited for as long as it takes: a burst of
    new images queues at the encoder, which is no outage. An error raised in a replica comes back as that error
    itself, not Ray's wrapper, whose text carries the replica's traceback, process id and host (never for
    clients)."""
    try:
        try:  # resolves when a replica has taken the request (Serve's developer API)
            taken = await asyncio.wait_for(response._to_object_ref(), taken_within_s)
        except TimeoutError:
            response.cancel()
            raise StepUnavailable(f"no model replica took the step within {taken_within_s:g} s") from None
        return await taken
    except RayTaskError as e:
        if isinstance(e.cause, _REPLICA_LOST):
            raise StepUnavailable(f"a model replica was lost mid-round ({type(e.cause).__name__})") from None
        if isinstance(e.cause, Exception):
            raise e.cause from None
        raise
    except _REPLICA_LOST as e:
        raise StepUnavailable(f"a model replica was lost mid-round ({type(e).__name__})") from None
    except BackPressureError:  # the deployment's queues are full: retrying would only add to them
        raise Overloaded("the model's replicas have all the rounds they can queue; retry with backoff") from None


class ServePipeline:
    """The ``Pipeline`` over the three deployments' handles (encodings pass by object reference);
    ``taken_within_s``: how long a step may wait for a replica to take it."""

    def __init__(self, encoder, reasoner, segmenter, *, taken_within_s: float = 10.0):
        self.encoder, self.reasoner, self.segmenter = encoder, reasoner, segmenter
        self.taken_within_s = taken_within_s

    async def encode(self, image_key: str, image: bytes | None = None) -> Encoding:
        return await _result(self.encoder.encode.remote(image_key, image), self.taken_within_s)

    async def reason(self, request: ReasonRequest) -> ReasonedTurn:
        # routed by its session (SessionAffinityRouter)
        return await _result(self.reasoner.reason.remote(request), self.taken_within_s)

    async def decode(self, request: MaskRequest) -> DecodedMask:
        return await _result(self.segmenter.decode.remote(request), self.taken_within_s)  # one batch item


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


def deploy_pipeline(config: dict, *, timeout: float = 600.0, taken_within_s: float = 10.0) -> ServePipeline:
    """Deploy the three applications of ``config`` on the connected Ray cluster; wait until running."""
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    serve.start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    ray.get(_run_applications.remote(config))
    return attach_pipeline(timeout=timeout, taken_within_s=taken_within_s)


@ray.remote(num_cpus=0, max_calls=1)  # one call per worker: the torch it imported leaves with it
def _run_applications(config: dict) -> None:
    """Build and run the config's applications (in a Ray worker: building imports the model steps)."""
    from serving.replicas.app import run_targets

    serve.run_many(run_targets(config), wait_for_applications_running=False)


def attach_pipeline(*, timeout: float = 600.0, taken_within_s: float = 10.0) -> ServePipeline:
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
            return ServePipeline(*(serve.get_app_handle(name) for name in APPS), taken_within_s=taken_within_s)
        if time.monotonic() > deadline:
            raise TimeoutError(f"Serve applications not running after {timeout:.0f} s: "
                               f"{ {n: a.status for n, a in apps.items()} }")
        time.sleep(0.5)
