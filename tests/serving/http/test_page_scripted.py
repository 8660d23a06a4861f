"""The page against the scripted backend (backend.py), for what the tiny model cannot be made to do on demand: a
server that wants a token (the page's token field goes out as the bearer token, and survives a reload), and a
mask at or below the JCM threshold that the JCM corrected."""

import re

import pytest
from playwright.sync_api import expect

from tests.serving.http.backend import SESSION, TOKEN
from tests.serving.http.pagekit import ask, open_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scripted(backend):
    return backend.gateway()


def test_the_token_field_is_the_bearer_token(page, backend, scripted, tmp_path):
    image = tmp_path / "any.png"
    image.write_bytes(b"\x89PNG any bytes: the scripted server takes them")
    open_page(page, scripted)
    page.set_input_files("#file", str(image))
    expect(page.locator("#transcript .error")).to_contain_text("missing or unknown token")
    expect(page.locator("#transcript .error")).to_contain_text("(UNAUTHENTICATED)")
    page.fill("#token", TOKEN)
    page.press("#token", "Tab")
    page.set_input_files("#file", [])
    page.set_input_files("#file", str(image))
    expect(page.locator("#session-info")).to_contain_text(f"Session {SESSION}")
    assert backend.servicer.metadata[-1]["authorization"] == f"Bearer {TOKEN}"

    page.reload()  # the token stays for the tab (sessionStorage), and the dialogue comes back with it
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#round-1 .chip")).to_have_text("Round 1 · orange")


def test_a_low_quality_mask_is_warned_about_and_its_correction_marked(page, scripted):
    page.add_init_script(f"sessionStorage.setItem('mediround-token', '{TOKEN}')")
    page.goto(f"{scripted}/#session={SESSION}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    ask(page, "Segment the liver.")  # the scripted round: quality 0.5, corrected
    entry = page.locator("#transcript > li").last
    expect(entry.locator(".warn")).to_have_text("⚠ at or below the 60% threshold: check this mask")
    expect(entry.locator(".corrected")).to_have_text("✎ redrawn by the JCM (the estimate was for its first draft)")
    expect(entry.locator(".score")).to_have_text("Estimated overlap with the true structure: 50%")
    expect(entry.locator(".quality")).to_have_attribute("title", re.compile(r"IoU\)\. At or below 60% the JCM "
                                                                            r"distrusts the mask and redraws it\."))
