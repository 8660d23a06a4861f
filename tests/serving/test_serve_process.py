"""``mediround serve`` as a real process: kill -9 leaves no redis-server or Ray process of its own behind,
a restart on the same data directory still has the session and its round, a second server on a data
directory in use fails clearly, and SIGTERM still stops everything. Real Redis, Ray, Serve and gRPC."""

import contextlib
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from model.data.real import REAL_SLICES
from serving.client import MediRoundClient

pytestmark = pytest.mark.slow

ENV = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS", "MEDIROUND_DATA_DIR")}


def _serve(data_dir, port: int, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--address", f"127.0.0.1:{port}",
                             "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=log, text=True, env=ENV)


def _started(proc: subprocess.Popen, port: int) -> list[psutil.Process]:
    """Wait for the ready line; the processes it runs then (redis-server, Ray's, the watchdog)."""
    line = proc.stdout.readline()
    assert f"mediround serving on 127.0.0.1:{port}" in line, line
    children = psutil.Process(proc.pid).children(recursive=True)
    names = {p.name() for p in children}
    assert {"redis-server", "raylet", "gcs_server"} <= names, names
    return children


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _leftovers(children: list[psutil.Process], timeout: float) -> list[str]:
    """Those of ``children`` still running after ``timeout`` seconds, killed so the next test starts clean."""
    _, alive = psutil.wait_procs(children, timeout=timeout)
    left = [f"{p.pid} {p.name()}" for p in alive if _running(p)]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    return left


def test_kill_9_leaves_no_processes_and_a_restart_keeps_the_dialogue(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    image = REAL_SLICES / "images" / sorted(p.name for p in (REAL_SLICES / "images").iterdir())[0]
    with open(tmp_path / "serve.log", "w") as log:
        first = _serve(data, port, log)
        try:
            children = _started(first, port)
            with MediRoundClient(f"127.0.0.1:{port}") as client:
                session = client.create_session(image)
                answer = client.ask(session.id, "Segment the liver.").answer
            first.kill()
            first.wait()
            assert _leftovers(children, timeout=15) == [], "processes outlived kill -9 of mediround serve"
        finally:
            first.kill()

        second = _serve(data, port, log)
        try:
            children = _started(second, port)
            with MediRoundClient(f"127.0.0.1:{port}") as client:
                assert client.session(session.id).round_count == 1
                (stored,) = client.rounds(session.id)
                assert stored.number == 1 and stored.answer == answer
            third = subprocess.run([sys.executable, "-m", "serving.cli", "serve", "--address", "127.0.0.1:0",
                                    "--data-dir", str(data)], capture_output=True, text=True, env=ENV, timeout=120)
            assert third.returncode == 2 and "is in use by another mediround serve" in third.stderr, third.stderr
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=120) == 0
            assert _leftovers(children, timeout=15) == [], "processes outlived a graceful stop"
        finally:
            second.kill()
