"""The page as a whole, in a real browser against ``mediround serve --http``: a 4-round dialogue on an example case
(its screenshot, the page's load time, the latency the gateway adds to a round against direct gRPC), no serious
accessibility violation (axe-core), a plain-http origin that is not localhost, and nothing fetched but from
127.0.0.1."""

import json
import os
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from model.data.real import REAL_SLICES
from serving.http.examples import example_cases
from tests.serving.http.conftest import CHROMIUM, Guard
from tests.serving.http.http_client import request
from tests.serving.http.pagekit import ask, open_page, session_id, upload

pytestmark = pytest.mark.slow

IMAGE = REAL_SLICES / "images" / "amos_0006_90.png"
SERIOUS = ("serious", "critical")


def _four_rounds(page, url: str) -> str:
    open_page(page, url)
    page.select_option("#example", "real_0")
    page.click("#open-example")
    sid = session_id(page)
    for _ in example_cases()["real_0"].rounds:
        ask(page)  # the case's questions, in order, each by Enter
    page.click("#round-1 .reveal")
    expect(page.locator("#round-1 .dice")).not_to_be_empty()
    return sid


def test_a_four_round_dialogue_with_its_screenshot_and_timings(page, served, client, tmp_path):
    started = time.perf_counter()
    open_page(page, served.url)
    load_s = time.perf_counter() - started  # cold: HTML, CSS, modules, config and the example list
    sid = _four_rounds(page, served.url)
    expect(page.locator("#transcript > li.round")).to_have_count(4)
    assert [r.reference_round for r in client.rounds(sid)] == [0, 1, 2, 1]  # as the case's questions say
    for r in client.rounds(sid):
        refers = page.locator(f"#round-{r.number} .refers")
        if r.reference_round:
            expect(refers).to_have_text(f"refers to round {r.reference_round}")
        else:
            expect(refers).to_have_count(0)
    shot = Path(os.environ.get("MEDIROUND_PAGE_SCREENSHOT") or tmp_path / "four-rounds.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # the latency the gateway adds to a round: HTTP JSON and direct gRPC, alternating on one session
    session = client.create_session(IMAGE)
    http_ms, grpc_ms = [], []
    for k in range(6):
        t = time.perf_counter()
        reply = request(f"{served.url}/api/v1/sessions/{session.id}/rounds", "POST",
                        {"question": "Segment the liver.", "request_id": f"http-{k}"})
        http_ms.append(1e3 * (time.perf_counter() - t))
        assert reply.status == 200, reply.body
        t = time.perf_counter()
        client.ask(session.id, "Segment the liver.", request_id=f"grpc-{k}")
        grpc_ms.append(1e3 * (time.perf_counter() - t))
    # and on a call without the model, where the gateway's own share is not lost in the model's variance
    get_http, get_grpc = [], []
    for _ in range(40):
        t = time.perf_counter()
        assert request(f"{served.url}/api/v1/sessions/{session.id}/rounds/1").status == 200
        get_http.append(1e3 * (time.perf_counter() - t))
        t = time.perf_counter()
        client.get_round(session.id, 1)
        get_grpc.append(1e3 * (time.perf_counter() - t))
    median = statistics.median
    report = {"page_load_s": round(load_s, 3), "round_http_ms": round(median(http_ms), 1),
              "round_grpc_ms": round(median(grpc_ms), 1),
              "round_gateway_adds_ms": round(median(http_ms) - median(grpc_ms), 1),
              "get_round_http_ms": round(median(get_http), 2), "get_round_grpc_ms": round(median(get_grpc), 2),
              "get_round_gateway_adds_ms": round(median(get_http) - median(get_grpc), 2)}
    print("page timings:", json.dumps(report))
    assert load_s < 10 and report["get_round_gateway_adds_ms"] < 50, report


def test_axe_finds_no_serious_accessibility_violation(browser, served, axe_js):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=True)  # to inject axe
    guard = Guard(context)
    try:
        page = context.new_page()
        _four_rounds(page, served.url)
        page.add_script_tag(content=axe_js)
        results = page.evaluate("axe.run(document).then(r => ({violations: r.violations, passes: r.passes.length}))")
        assert results["passes"] > 20  # it did check the page
        violations = results["violations"]
        serious = [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3])
                   for v in violations if v["impact"] in SERIOUS]
        assert serious == []
    finally:
        context.close()
    assert guard.outside == []


def test_a_plain_http_origin_that_is_not_localhost(playwright_driver, served):
    # a name that resolves to 127.0.0.1 but is no secure context, as a school's http://server.lan:8080 would be
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=[
        "--host-resolver-rules=MAP mediround.test 127.0.0.1", "--disable-features=HttpsUpgrades"])
    try:
        context = browser.new_context()
        guard = Guard(context, hosts={"mediround.test"})
        page = context.new_page()
        open_page(page, f"http://mediround.test:{served.http_port}/")
        assert page.evaluate("[window.isSecureContext, typeof crypto.randomUUID]") == [False, "undefined"]
        upload(page, IMAGE)
        session_id(page)
        ask(page, "Segment the aorta.")
        expect(page.locator("#round-1 .chip")).to_have_text("Round 1 · orange")
        assert guard.outside == []
    finally:
        browser.close()


def test_no_request_leaves_loopback(context, served):
    page = context.new_page()
    _four_rounds(page, served.url)
    with page.expect_download():
        page.click("#round-2 .download")
    page.reload()
    expect(page.locator("#transcript > li.round")).to_have_count(4)
    hosts = {urlsplit(url).hostname for url in context.guard.seen}
    assert hosts == {"127.0.0.1"} and context.guard.outside == []
    assert all(urlsplit(url).port == served.http_port for url in context.guard.seen)
