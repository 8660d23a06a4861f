"""The watchdog: when the process running a ``Service`` dies, even by SIGKILL, the local Ray it started goes too.

Ray fate-shares gcs_server, raylet and its monitors with the driver (PR_SET_PDEATHSIG), and workers exit
once the raylet is gone, but the raylet's agents (dashboard and runtime-env agents) linger for a minute
or more. The watchdog is a small process that holds the read end of a pipe from the service process and,
every second, records the processes started under the service process since it began. When the pipe
closes without a stop word (the service process died), it sends SIGTERM to those still running, then
SIGKILL. It only ever touches processes descended from the service process, so an external Ray cluster
(``--ray-address``) and other users' Ray are never touched.

    python -m serving.runtime.watchdog PID     (stdin: the pipe, 'stop' on it ends the watch quietly;
                                        stdout: 'ready' once it knows what ran before it)
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys

import psutil


class Watchdog:
    """Start it before the processes it should reap; ``stop()`` on a graceful shutdown."""

    def __init__(self):
        self._process = subprocess.Popen([sys.executable, "-m", "serving.runtime.watchdog", str(os.getpid())],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        # start_new_session: a Ctrl-C or SIGTERM sent to our process group leaves it to watch our shutdown
        if self._process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the watchdog did not start ({self._process.wait()})")

    def stop(self) -> None:
        try:
            self._process.communicate(b"stop\n", timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            self._process.kill()
            self._process.wait()


def _descendants(parent: psutil.Process) -> list[psutil.Process]:
    try:
        return parent.children(recursive=True)
    except psutil.Error:
        return []


def watch(parent_pid: int, *, interval: float = 1.0, grace: float = 2.0) -> None:
    me = os.getpid()
    parent = psutil.Process(parent_pid)
    before = {p.pid for p in _descendants(parent)}  # what the parent ran before us is not ours to reap
    print("ready", flush=True)
    seen: dict[int, psutil.Process] = {}
    while True:
        seen = {pid: p for pid, p in seen.items() if p.is_running()}
        for p in _descendants(parent):
            if p.pid != me and p.pid not in before:
                seen.setdefault(p.pid, p)  # a psutil.Process refuses to signal a reused pid
        if select.select([sys.stdin.buffer], [], [], interval)[0]:
            if sys.stdin.buffer.readline().strip() == b"stop":
                return
            break  # end of file: the parent is gone
    alive = []
    for p in seen.values():
        try:
            p.terminate()
            alive.append(p)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
