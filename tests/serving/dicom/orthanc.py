"""A real Orthanc PACS (Debian's ``orthanc`` + ``orthanc-dicomweb``) for tests, as pytest fixtures.

``orthanc``: one Orthanc for the test session, no authentication. ``orthanc_with_users``: a second one that
asks for basic auth (``ORTHANC_USERS``), started only by the tests that use it. Each runs from its own
configuration file in a temp dir (storage there, its own ports, the DICOMweb plugin and nothing from
/etc/orthanc); each use checks it is still alive, since one exited unexplained once. Both are shared by the
whole session: store instances under their own UIDs (Orthanc keeps the first content of a SOP instance UID).

``conftest.py`` registers the fixtures; ``Orthanc.endpoint()`` gives a ``PacsEndpoint`` for it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from serving.dicom.endpoints import PacsEndpoint
from tests.conftest import require_system_file

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ORTHANC_USERS = {"mediround": "orthanc-test-password"}


def free_port() -> int:
    """A TCP port nobody listens on now (Orthanc 1.10 binds all interfaces: there is no listen-address key)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """An Orthanc process with a temporary configuration; ``start()``, then ``stop()`` (or use ``with``)."""

    def __init__(self, root: Path, *, users: dict[str, str] | None = None):
        self.root, self.users = root, users
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self._process: subprocess.Popen | None = None

    @property
    def auth(self) -> tuple[str, str] | None:
        return next(iter(self.users.items())) if self.users else None

    def endpoint(self, name: str = "orthanc", **options) -> PacsEndpoint:
        """This Orthanc as a configured PACS (with its first user's credentials, if it has users)."""
        username, password = self.auth or (None, None)
        return PacsEndpoint(name=name, url=self.dicomweb_url, **{"username": username, "password": password,
                                                                 **options})

    def start(self, timeout_s: float = 10.0) -> Orthanc:
        binary = require_system_file(ORTHANC, "orthanc")
        plugin = require_system_file(DICOMWEB_PLUGIN, "orthanc-dicomweb")
        config = {
            "Name": "mediround-test", "DicomAet": "MEDIROUNDTEST",
            "StorageDirectory": str(self.root / "storage"), "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False,  # HTTP from 127.0.0.1 only
            "AuthenticationEnabled": bool(self.users), "RegisteredUsers": self.users or {},
            "Plugins": [str(plugin)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": "127.0.0.1"},
        }
        (self.root / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log = self.root / "orthanc.log"
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen([str(binary), str(self.root / "orthanc.json")], stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            try:
                requests.get(f"{self.url}/system", auth=self.auth, timeout=1).raise_for_status()
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"Orthanc did not answer /system within {timeout_s} s; its log ends:\n{self._tail()}")
                time.sleep(0.02)
        plugins = requests.get(f"{self.url}/plugins", auth=self.auth, timeout=5).json()
        if "dicom-web" not in plugins:
            self.stop()
            pytest.fail(f"Orthanc started without its DICOMweb plugin (plugins: {plugins}); log:\n{self._tail()}")
        return self

    def check_alive(self) -> None:
        """Fail the test, with Orthanc's log, if the process has exited."""
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            pytest.fail(f"Orthanc is not running (exit status {code}); its log ends:\n{self._tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (Orthanc takes ~4 s to stop), then SIGKILL after ``grace_s``."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def instance_count(self) -> int:
        """How many instances Orthanc holds (its own REST API, not DICOMweb)."""
        return len(requests.get(f"{self.url}/instances", auth=self.auth, timeout=5).json())

    def _tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def orthanc_process(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    # Stopping takes Orthanc seconds: the two stop side by side, and the interpreter waits for both at exit.
    threading.Thread(target=server.stop).start()


@pytest.fixture(scope="session")
def orthanc_with_users_process(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc-users"), users=ORTHANC_USERS).start()
    yield server
    threading.Thread(target=server.stop).start()


@pytest.fixture
def orthanc(orthanc_process) -> Orthanc:
    """The session's Orthanc without authentication (``.dicomweb_url``, ``.endpoint()``), checked alive."""
    orthanc_process.check_alive()
    return orthanc_process


@pytest.fixture
def orthanc_with_users(orthanc_with_users_process) -> Orthanc:
    """The session's Orthanc that asks for basic auth (``ORTHANC_USERS``), checked alive."""
    orthanc_with_users_process.check_alive()
    return orthanc_with_users_process
