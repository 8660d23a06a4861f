"""A whole running service in one call: Redis (embedded unless a URL is given), Ray, the Serve
applications and the gRPC front. ``mediround serve``, ``mediround demo`` and the tests use it.

What the service starts goes when it stops, and also when its process is killed: the embedded Redis
by the kernel's parent-death signal (``serving/runtime/embedded_redis.py``), a local Ray by the watchdog
(``serving/runtime/watchdog.py``). An external Redis or Ray cluster is never stopped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serving.front.dialogue import Dialogue, Limits
from serving.front.server import ServerOptions, start_server
from serving.runtime.preflight import check_service
from serving.store import RedisSessionStore

if TYPE_CHECKING:
    import grpc

    from serving.http.server import Gateway, HttpOptions
    from serving.runtime.embedded_redis import EmbeddedRedis
    from serving.runtime.watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclass
class ServiceOptions:
    checkpoint: str | None = None
    """Model checkpoint directory (default: the shipped tiny model)."""
    redis_url: str | None = None
    """Dialogue Redis; None starts an embedded one (or uses ``REDIS_URL`` when set)."""
    data_dir: str | None = None
    """Where the embedded Redis keeps its append-only file (``DATA_DIR/redis``); None: a throwaway
    directory, removed on stop (the demo, the tests)."""
    serve_config: str | None = None
    """Ray Serve config file (default ``deploy/serve/cpu-tiny.yaml``)."""
    replicas: dict[str, int] = field(default_factory=dict)
    server: ServerOptions = field(default_factory=ServerOptions)
    limits: Limits = field(default_factory=Limits)
    metrics_port: int | None = None
    """Serve the front's Prometheus metrics on this port (``serving.front.metrics``); None: not served."""
    metrics_address: str = "127.0.0.1"
    """The address the front's metrics listen on (a pod gives ``0.0.0.0`` so Prometheus can reach it)."""
    ray_metrics_port: int | None = None
    """The local Ray node's metrics export port, where Ray's metrics agent serves the replicas' metrics
    (``serving.replicas.metrics``); None lets Ray pick one. A Ray cluster's own ports are set where it starts."""
    ray_address: str | None = None
    """Connect to this Ray cluster instead of starting a local one."""
    attach: bool = False
    """Serve the applications already running on the Ray cluster (e.g. deployed by KubeRay) instead of
    deploying them; stopping then leaves them running for the other fronts."""
    http: HttpOptions | None = None
    """Also serve the HTTP/JSON gateway and the page (``serving.http``) beside the gRPC server; None: gRPC only."""


class Service:
    """Start with ``await Service(options).start()``; ``address`` is then the gRPC target."""

    def __init__(self, options: ServiceOptions | None = None):
        self.options = options or ServiceOptions()
        self.redis: EmbeddedRedis | None = None
        self.server: grpc.aio.Server | None = None
        self.store: RedisSessionStore | None = None
        self.watchdog: Watchdog | None = None
        self.gateway: Gateway | None = None
        self.local_ray = False
        """This service started the Ray node it runs on (and stopping it takes the whole node down)."""
        self.address = ""

    async def start(self) -> Service:
        import ray

        from serving.pipeline import attach_pipeline, deploy_pipeline, load_serve_config

        o = self.options
        check_service(o)  # before anything starts: a bad file or port is found in a second, not after Ray
        if o.http is not None:
            from serving.http.server import Gateway

            if o.server.tls_cert:  # the gateway dials the gRPC server in plaintext
                raise ValueError("--http needs a plaintext gRPC server: put TLS in front of both, not --tls-cert")
            self.gateway = Gateway(o.http, checkpoint=o.checkpoint,
                                   max_message_bytes=o.server.max_message_bytes).bind()  # a port in use fails now
        url = o.redis_url or os.environ.get("REDIS_URL")
        if url is None:
            from serving.runtime.embedded_redis import EmbeddedRedis

            log.info("starting the dialogue store (embedded Redis%s)", ", kept in the data directory" if o.data_dir
                     else ", in a temporary directory")
            self.redis = EmbeddedRedis(os.path.join(o.data_dir, "redis") if o.data_dir else None)
            url = self.redis.url
        # a Ray node of our own (no address given, none in RAY_ADDRESS, none running): ours to take down whole
        self.local_ray = not ray.is_initialized() and o.ray_address is None and not os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized():
            log.info("starting Ray (a local node)" if self.local_ray else "joining the Ray cluster")
            if o.ray_address is None:  # a local Ray, ours to take down if this process dies
                from serving.runtime.watchdog import Watchdog

                self.watchdog = Watchdog()
            metrics: dict[str, Any] = {"_metrics_export_port": o.ray_metrics_port} if o.ray_address is None else {}
            # Ray's notices (token authentication on, Serve started) stay in its log files (/tmp/ray/session_*), off
            # the user's terminal: its driver logger from before ray.init, which logs the first of them
            logging.getLogger("ray").setLevel(logging.ERROR)
            ray.init(address=o.ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     logging_level=logging.ERROR, **metrics)
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
        log.info("attaching to the running model applications" if o.attach else
                 "deploying the model's applications (image encoder, reasoner, segmenter): the first start loads "
                 "the model in each replica")
        if o.attach:
            pipeline = attach_pipeline(taken_within_s=o.limits.replica_retry_s)
        else:
            pipeline = deploy_pipeline(load_serve_config(o.serve_config, checkpoint=o.checkpoint, redis_url=url,
                                                         replicas=o.replicas), taken_within_s=o.limits.replica_retry_s)
        store = self.store = RedisSessionStore(url)
        self.dialogue = Dialogue(store, pipeline, o.limits)
        self.server, port = await start_server(self.dialogue, o.server)
        self.address = f"{o.server.address.rsplit(':', 1)[0]}:{port}"
        if self.gateway is not None:
            await self.gateway.start(self.address)
        if o.metrics_port:
            from serving.front.metrics import serve_metrics

            serve_metrics(o.metrics_port, o.metrics_address)
        log.info("ready")
        return self

    async def stop(self) -> None:
        import ray
        from ray import serve

        if self.gateway is not None:
            await self.gateway.stop()
        if self.server is not None:
            await self.server.stop(grace=2)
        if self.store is not None:
            await self.store.close()
        # Serve's applications on a cluster are taken down (unless attached to); a local Ray of our own goes down
        # whole, and serve.shutdown() there only adds a "(raylet) Task ServeController.graceful_shutdown failed" line
        if not self.options.attach and not self.local_ray:
            serve.shutdown()
        ray.shutdown()
        if self.redis is not None:
            self.redis.close()
        if self.watchdog is not None:
            self.watchdog.stop()
        log.info("stopped")

    async def __aenter__(self) -> Service:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


class BackgroundService:
    """A ``Service`` on its own event-loop thread, for synchronous callers (demo, tests, benchmarks).

        with BackgroundService(options) as service:
            client = MediRoundClient(service.address)
    """

    def __init__(self, options: ServiceOptions | None = None, *, start_timeout: float = 900.0):
        self.options, self.start_timeout = options or ServiceOptions(), start_timeout

    def __enter__(self) -> Service:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mediround-service", daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(Service(self.options).start(), self.loop)
        self.service = future.result(timeout=self.start_timeout)
        return self.service

    def __exit__(self, *exc) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(timeout=120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
