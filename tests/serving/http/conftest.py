"""Fixtures for the page's tests: one real ``mediround serve --http`` with the tiny model for the whole test session
(it takes about a minute to start; stopped even when a test fails), Debian's chromium driven by playwright through
``executable_path`` (playwright's own browser download cannot work here), and axe-core from npm."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import require_system_file

CHROMIUM = "/usr/lib/chromium/chromium"
AXE_VERSION = "4.14.1"
AXE_PREFIX = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mediround" / "npm"
LOOPBACK = {"127.0.0.1"}
ENV = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS", "MEDIROUND_DATA_DIR",
                                                          "MEDIROUND_TOKEN", "MEDIROUND_TOKENS_FILE")}


@dataclass(frozen=True)
class Served:
    grpc: str
    """The gRPC address, for checking the page against the API itself."""
    url: str
    """The page, e.g. http://127.0.0.1:8123 (no trailing slash)."""
    http_port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    if os.environ.get("MEDIROUND_TEST_SERVED"):  # "GRPC_ADDRESS,PAGE_URL" of one already running, to iterate faster
        address, url = os.environ["MEDIROUND_TEST_SERVED"].split(",")
        yield Served(address, url.rstrip("/"), urlsplit(url).port)
        return
    grpc_port, http_port = _free_port(), _free_port()
    root = tmp_path_factory.mktemp("serve-http")
    with open(root / "serve.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving.cli", "serve", "--address", f"127.0.0.1:{grpc_port}",
             "--http", str(http_port), "--data-dir", str(root / "data"), "--audit-log", str(root / "audit.log")],
            stdout=subprocess.PIPE, stderr=log, text=True, env=ENV)
        try:
            line = process.stdout.readline()  # the ready line, or "" when it exited
            assert f"the page and HTTP API on http://127.0.0.1:{http_port}/" in line, (
                f"mediround serve --http did not start: {line!r}; log:\n{(root / 'serve.log').read_text()[-3000:]}")
            yield Served(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", http_port)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def backend():
    """The scripted gRPC backend of ``backend.py`` and the gateways made onto it."""
    from tests.serving.http.backend import Backend

    backend = Backend()
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def client(served):
    from serving.client import MediRoundClient

    with MediRoundClient(served.grpc) as client:
        yield client


# Per module, not per session: while playwright's sync API runs, this thread has a running event loop, and every
# later test that calls asyncio.run (most of tests/serving) would fail.
@pytest.fixture(scope="module")
def playwright_driver():
    require_system_file(CHROMIUM, "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_driver):
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM)
    yield browser
    browser.close()


class Guard:
    """Every request a browser context makes; anything not to an allowed host is refused and remembered."""

    def __init__(self, context, hosts=LOOPBACK):
        self.hosts, self.seen, self.outside = set(hosts), [], []
        context.route("**/*", self.route)

    def route(self, route):
        url = route.request.url
        self.seen.append(url)
        if urlsplit(url).hostname in self.hosts:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort("blockedbyclient")


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    guard = Guard(context)
    context.guard = guard
    yield context
    context.close()
    assert guard.outside == [], f"requests left 127.0.0.1: {guard.outside}"


@pytest.fixture
def page(context):
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    assert page.errors == [], f"the page threw: {page.errors}"


def _axe_candidates():
    if os.environ.get("AXE_CORE_JS"):
        yield Path(os.environ["AXE_CORE_JS"])
    yield AXE_PREFIX / "node_modules" / "axe-core" / "axe.min.js"
    yield Path("/usr/share/nodejs/axe-core/axe.min.js")


@pytest.fixture(scope="session")
def axe_js() -> str:
    """axe-core's axe.min.js: AXE_CORE_JS, else installed from npm into the user's cache on first use."""
    for path in _axe_candidates():
        if path.exists():
            return path.read_text()
    if shutil.which("npm"):
        AXE_PREFIX.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(AXE_PREFIX),
                            f"axe-core@{AXE_VERSION}"], check=True, timeout=180, capture_output=True)
    path = AXE_PREFIX / "node_modules" / "axe-core" / "axe.min.js"
    if not path.exists():
        message = f"axe-core is missing: npm install --prefix {AXE_PREFIX} axe-core@{AXE_VERSION} (or set AXE_CORE_JS)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path.read_text()
