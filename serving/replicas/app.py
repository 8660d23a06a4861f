"""The Ray Serve applications' builders: what each application's ``import_path`` in a Serve config
names (``serving.replicas.app:encoder_app`` ...). They run where Serve builds the applications, never in the
gRPC front (which deploys and reaches the applications through ``serving.pipeline``).

Each builder reads its application's ``args``: ``checkpoint``, ``redis_url`` (the dialogue store the steps
read from and sweep their caches against; else the replica's ``REDIS_URL``, how a cluster passes a secret) and the
settings fields of ``serving.replicas.settings``. ``run_targets`` builds a whole config's applications, each
deployment with the options its config gives it, for Serve's public ``serve.run_many`` (what
``serving.pipeline.deploy_pipeline`` does; a cluster operator such as KubeRay applies the config itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import cast

from ray import serve
from ray.serve import Application, Deployment
from ray.serve.schema import ServeDeploySchema

from serving.replicas.deployments import ImageEncoder, Reasoner, Segmenter
from serving.replicas.settings import EncoderSettings, ReasonerSettings, SegmenterSettings


def _redis_url(args: dict) -> str | None:
    return args.get("redis_url") or os.environ.get("REDIS_URL")


def _deployment(decorated: object) -> Deployment:
    """A class under ``@serve.deployment`` is a ``Deployment`` (the decorator's typing keeps the class)."""
    return cast(Deployment, decorated)


def _encoder(args: dict, options: dict[str, dict]) -> Application:
    return _deployment(ImageEncoder).options(**options.get("ImageEncoder", {})).bind(
        args["checkpoint"], _redis_url(args), EncoderSettings.from_args(args))


def _reasoner(args: dict, options: dict[str, dict]) -> Application:
    return _deployment(Reasoner).options(**options.get("Reasoner", {})).bind(
        args["checkpoint"], _redis_url(args), ReasonerSettings.from_args(args))


def _segmenter(args: dict, options: dict[str, dict]) -> Application:
    return _deployment(Segmenter).options(**options.get("Segmenter", {})).bind(
        args["checkpoint"], _redis_url(args), SegmenterSettings.from_args(args))


def encoder_app(args: dict) -> Application:
    return _encoder(args, {})


def reasoner_app(args: dict) -> Application:
    return _reasoner(args, {})


def segmenter_app(args: dict) -> Application:
    return _segmenter(args, {})


BUILDERS: dict[str, Callable[[dict, dict[str, dict]], Application]] = {
    f"{__name__}:encoder_app": _encoder, f"{__name__}:reasoner_app": _reasoner,
    f"{__name__}:segmenter_app": _segmenter}
"""A config's ``import_path`` -> its builder, taking the deployments' options (deployment name -> options) too."""


def run_targets(config: dict) -> list[serve.RunTarget]:
    """The applications of a Serve config (``serve build``'s schema), built as ``serve deploy`` would build them:
    each deployment with the options the config's ``deployments`` entry gives it."""
    targets = []
    for app in ServeDeploySchema.model_validate(config).applications:
        build = BUILDERS.get(app.import_path)
        if build is None:
            raise ValueError(f"application {app.name!r}: import_path {app.import_path!r} is not one of "
                             f"{', '.join(BUILDERS)}")
        options = {d.name: d.model_dump(exclude_unset=True, exclude={"name"}) for d in app.deployments}
        targets.append(serve.RunTarget(build(app.args, options), name=app.name, route_prefix=app.route_prefix))
    return targets
