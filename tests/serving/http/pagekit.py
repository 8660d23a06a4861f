"""What the page tests do to the page and read back from it: open it, upload, ask by Enter, read canvas pixels, and
pick pixels inside and outside a mask to read."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image
from playwright.sync_api import expect

ORANGE = (230, 159, 0)  # round 1's colour (static/js/palette.js)


def open_page(page, url: str) -> None:
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def upload(page, path) -> None:
    page.set_input_files("#file", str(path))


def session_id(page) -> str:
    expect(page.locator("#session-info")).to_contain_text("Session ")
    return re.search(r"Session ([0-9a-f]{32})", page.inner_text("#session-info")).group(1)


def ask(page, question: str | None = None) -> None:
    """Type the question (None: keep what is there) and press Enter; wait until the page can ask again."""
    box = page.locator("#question")
    expect(box).to_be_enabled()
    if question is not None:
        box.fill(question)
    box.press("Enter")
    expect(page.locator("#transcript > li[aria-busy]")).to_have_count(0, timeout=60_000)
    expect(box).to_be_enabled()


def pixel(page, x: int, y: int) -> np.ndarray:
    rgba = page.evaluate("([x, y]) => Array.from(document.getElementById('view').getContext('2d')"
                         ".getImageData(x, y, 1, 1).data)", [x, y])
    return np.array(rgba[:3], dtype=int)


def settled_pixel(page, x: int, y: int, expected, timeout_s: float = 5.0) -> np.ndarray:
    """The pixel once it equals ``expected`` (a picture that the server renders arrives a little later), or as it is
    when ``timeout_s`` has passed."""
    for _ in range(int(timeout_s * 10)):
        if near(pixel(page, x, y), expected):
            break
        page.wait_for_timeout(100)
    return pixel(page, x, y)


def near(a, b, tolerance: int = 2) -> bool:
    """Canvas pixels read back premultiplied: equal within 2 levels."""
    return bool(np.all(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)) <= tolerance))


def blend(base, colour, alpha: float) -> np.ndarray:
    return np.round(np.asarray(colour) * alpha + np.asarray(base) * (1 - alpha)).astype(int)


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _shrink(mask: np.ndarray, steps: int) -> np.ndarray:
    m = mask.copy()
    for _ in range(steps):
        m[1:-1, 1:-1] = (m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])
        m[[0, -1], :] = False
        m[:, [0, -1]] = False
    return m


def inside_pixel(mask: np.ndarray, margin: int = 2, avoid: tuple[int, int, int, int] | None = None) -> tuple[int, int]:
    """(x, y) deep inside the mask: ``margin`` pixels from its edge, nearest its centroid, outside ``avoid``
    (x0, y0, x1, y1: where a label sits, ``label_area``)."""
    core = _shrink(mask, margin)
    core = core if core.any() else mask.copy()
    if avoid is not None:
        x0, y0, x1, y1 = avoid
        core[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
    assert core.any(), "the mask is too small to find a pixel the label leaves uncovered"
    ys, xs = np.nonzero(core)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(xs[k]), int(ys[k])


def label_area(page, mask: np.ndarray) -> tuple[int, int, int, int]:
    """Where the page draws the mask's label, with room to spare, in image pixels (x0, y0, x1, y1): viewer.js centres
    it on the mask pixel nearest the mask's centroid, 16 CSS pixels high."""
    scale = mask.shape[1] / page.locator("#view").bounding_box()["width"]
    h = max(6, round(16 * scale))
    ys, xs = np.nonzero(mask)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(xs[k]) - 3 * h, int(ys[k]) - h, int(xs[k]) + 3 * h, int(ys[k]) + 2 * h


def edge_pixel(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) on the mask's outline: inside, with a 4-neighbour outside."""
    ys, xs = np.nonzero(mask & ~_shrink(mask, 1))
    return int(xs[0]), int(ys[0])


def outside_pixel(masks: list[np.ndarray], boxes: list, margin: int = 20, among=None) -> tuple[int, int]:
    """(x, y) at least ``margin`` pixels from every mask and every box (where the text labels sit), and among the
    pixels where ``among`` (an (H, W) bool array) holds, if given."""
    h, w = masks[0].shape
    free = np.ones((h, w), dtype=bool) if among is None else among.copy()
    for mask, box in zip(masks, boxes, strict=True):
        ys, xs = np.nonzero(mask)
        free[max(0, ys.min() - margin):ys.max() + margin, max(0, xs.min() - margin):xs.max() + margin] = False
        free[max(0, box.y_min - margin):box.y_max + margin, max(0, box.x_min - margin):box.x_max + margin] = False
    ys, xs = np.nonzero(free)
    return int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
