"""The page in a real browser (Debian's chromium) against a real ``mediround serve --http`` with the tiny model:
upload, rounds by Enter, chips and references as the server says, overlays pixel by pixel, inline errors, downloads
byte for byte, a retried request appended once, a reload that rebuilds the dialogue, no request off 127.0.0.1."""

import json
import re

import grpc
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from model.data.real import REAL_SLICES
from tests.serving.http.pagekit import (
    ORANGE,
    ask,
    blend,
    decode,
    edge_pixel,
    inside_pixel,
    label_area,
    near,
    open_page,
    outside_pixel,
    pixel,
    rgb,
    session_id,
    settled_pixel,
    upload,
)

pytestmark = pytest.mark.slow

IMAGE = REAL_SLICES / "images" / "amos_0006_90.png"
BASE = rgb(IMAGE.read_bytes())  # an 8-bit image is drawn as it is


@pytest.fixture
def opened(page, served):
    """The page with IMAGE open; its session id."""
    open_page(page, served.url)
    upload(page, IMAGE)
    return session_id(page)


def _mask(client, sid, number):
    r = client.get_round(sid, number)
    return r, decode(r.mask_png) > 0


def test_a_png_opens_and_round_1_by_enter_shows_the_answer_before_the_mask(page, opened, client):
    page.evaluate("""() => {  // when the answer text shows, and when the first mask joins the legend
        window.seen = [];
        new MutationObserver(() => {
            const answer = document.querySelector('#transcript .answer');
            if (answer && answer.textContent !== '…' && !seen.some(s => s.what === 'answer'))
                seen.push({what: 'answer', text: answer.textContent,
                           legend: document.querySelectorAll('#legend li').length});
            if (document.querySelector('#legend li') && !seen.some(s => s.what === 'mask')) seen.push({what: 'mask'});
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")
    ask(page, "Segment the aorta.")
    r, mask = _mask(client, opened, 1)
    seen = page.evaluate("window.seen")
    assert [s["what"] for s in seen] == ["answer", "mask"]
    assert seen[0]["text"] == shown(r.answer) and seen[0]["legend"] == 0  # the answer was there, the mask not yet
    assert mask.any()
    expect(page.locator("#round-1 .chip")).to_have_text("Round 1 · orange")
    x, y = inside_pixel(mask, avoid=label_area(page, mask))
    assert near(pixel(page, x, y), blend(BASE[y, x], ORANGE, 0.5)), "a pixel inside the mask is coloured"
    x, y = outside_pixel([mask], [r.box])
    assert near(pixel(page, x, y), BASE[y, x]), "a pixel outside the mask is not"
    expect(page.locator("#announcer")).to_contain_text(shown(r.answer))  # told to screen readers
    assert page.get_attribute("#announcer", "aria-live") == "polite"


def test_a_gif_gets_the_servers_message_inline_and_the_page_goes_on(page, served, client, tmp_path):
    gif = tmp_path / "scan.gif"
    Image.new("L", (64, 64), 128).save(gif)
    with pytest.raises(grpc.RpcError) as refused:
        client.create_session(gif)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    open_page(page, served.url)
    upload(page, gif)
    expect(page.locator("#transcript .error")).to_have_text(f"{refused.value.details()} (INVALID_ARGUMENT)")
    expect(page.locator("#announcer")).to_contain_text(refused.value.details())
    upload(page, IMAGE)
    assert session_id(page)


def test_round_2_refers_to_round_1_as_the_server_says(page, opened, client):
    ask(page, "Segment the aorta.")
    ask(page, "Segment the organ on the image-right of the output of round 1.")
    assert client.get_round(opened, 2).reference_round == 1
    expect(page.locator("#round-2 .refers")).to_have_text("refers to round 1")
    expect(page.locator("#round-2")).to_have_attribute("data-reference", "1")
    expect(page.locator("#round-1 .refers")).to_have_count(0)
    expect(page.locator("#round-2 .chip")).to_have_text("Round 2 · sky blue")


def test_a_chip_makes_the_next_question_refer_to_its_round(page, opened, client):
    ask(page, "Segment the aorta.")
    ask(page, "Segment the liver.")
    page.click("#round-1 .chip")
    expect(page.locator("#refer-note")).to_be_visible()
    expect(page.locator("#round-1 .chip")).to_have_attribute("aria-pressed", "true")
    ask(page, "Segment the spleen.")  # names no round: the reference is the chip's
    assert client.get_round(opened, 3).reference_round == 1
    expect(page.locator("#round-3 .refers")).to_have_text("refers to round 1")
    expect(page.locator("#refer-note")).to_be_hidden()  # one question only


def test_toggling_opacity_outline_and_hover_change_the_pixels(page, opened, client):
    ask(page, "Segment the aorta.")
    r, mask = _mask(client, opened, 1)
    x, y = inside_pixel(mask, margin=3, avoid=label_area(page, mask))
    page.locator("body").click(position={"x": 5, "y": 5})  # keys go to the page, not the question box
    coloured = blend(BASE[y, x], ORANGE, 0.5)
    assert near(pixel(page, x, y), coloured)

    page.keyboard.press("1")
    assert near(pixel(page, x, y), BASE[y, x]) and not page.is_checked("#show-round-1")
    page.keyboard.press("1")
    assert near(pixel(page, x, y), coloured) and page.is_checked("#show-round-1")
    page.uncheck("#show-round-1")
    assert near(pixel(page, x, y), BASE[y, x])
    page.check("#show-round-1")

    page.locator("#opacity").fill("100")
    assert near(pixel(page, x, y), ORANGE)
    page.locator("#opacity").fill("0")
    assert near(pixel(page, x, y), BASE[y, x])
    page.locator("#opacity").fill("50")

    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("o")
    expect(page.locator("#mode")).to_have_attribute("aria-pressed", "true")
    assert near(pixel(page, x, y), BASE[y, x]), "outline: the inside is clear"
    ex, ey = edge_pixel(mask)
    assert near(pixel(page, ex, ey), blend(BASE[ey, ex], ORANGE, 0.5)), "outline: the edge is coloured"
    page.keyboard.press("O")
    assert near(pixel(page, x, y), coloured)

    assert hover(page, mask, x, y) == "round 1 (orange)"
    ox, oy = outside_pixel([mask], [r.box])
    assert hover(page, mask, ox, oy) == "no round"

    gx, gy = outside_pixel([mask], [r.box], among=(BASE[..., 0] > 60) & (BASE[..., 0] < 120))  # mid-grey
    grey = BASE[gy, gx]
    page.locator("#brightness").fill("150")
    assert np.all(pixel(page, gx, gy) > grey + 20), "brighter"
    page.locator("#brightness").fill("100")
    page.locator("#contrast").fill("200")
    assert np.all(pixel(page, gx, gy) < grey - 10), "more contrast: a darker than middle grey gets darker"
    page.locator("#contrast").fill("100")
    assert near(pixel(page, gx, gy), grey)


def hover(page, mask, x, y) -> str:
    """Move the mouse over image pixel (x, y); what the readout says is there (it names the pixel it read, within
    a pixel of (x, y) as the canvas is scaled)."""
    canvas = page.locator("#view").bounding_box()
    scale = canvas["width"] / mask.shape[1]
    page.mouse.move(canvas["x"] + (x + 0.5) * scale, canvas["y"] + (y + 0.5) * scale)
    expect(page.locator("#readout")).to_have_text(re.compile(r"At \(\d+, \d+\): "))
    rx, ry, said = re.fullmatch(r"At \((\d+), (\d+)\): (.*)", page.inner_text("#readout")).groups()
    assert abs(int(rx) - x) <= 1 and abs(int(ry) - y) <= 1
    assert mask[int(ry), int(rx)] == mask[y, x]
    return said


def test_a_reference_to_a_round_that_does_not_exist_shows_the_error_and_the_next_round_works(page, opened, client):
    ask(page, "Segment the aorta.")
    ask(page, "Segment the organ left of round 5.")
    failed = page.locator("#transcript li.failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".error")).to_have_text(
        "the question refers to round 5, but the dialogue has rounds 1..1 (FAILED_PRECONDITION)")
    expect(failed).to_have_attribute("role", "alert")
    ask(page, "Segment the liver.")
    expect(page.locator("#round-2")).to_be_visible()
    assert client.session(opened).round_count == 2


def test_a_downloaded_mask_is_getrounds_mask_byte_for_byte(page, opened, client):
    ask(page, "Segment the aorta.")
    with page.expect_download() as download:
        page.click("#round-1 .download")
    assert download.value.suggested_filename == f"mediround-{opened}-round1.png"
    with open(download.value.path(), "rb") as f:
        assert f.read() == client.get_round(opened, 1).mask_png
    with page.expect_download() as download:
        page.click("#download-transcript")
    with open(download.value.path()) as f:
        transcript = json.load(f)
    assert transcript["session"]["id"] == opened
    assert [(r["number"], r["answer"]) for r in transcript["rounds"]] == [(1, client.get_round(opened, 1).answer)]


def shown(answer: str) -> str:
    """An answer as the page shows it: a mask chip where the model said [SEG], never the token."""
    return answer.replace("[SEG]", "mask")


def test_a_retried_request_appends_once(page, opened, client):
    bodies = []

    def drop_the_first_answer(route):
        bodies.append(json.loads(route.request.post_data))
        if len(bodies) == 1:
            route.fetch()  # the server has the request and appends the round ...
            route.abort("connectionreset")  # ... and the page never hears of it, so it sends it again
        else:
            route.continue_()

    page.route(re.compile(r".*/api/v1/sessions/[0-9a-f]+/rounds$"), drop_the_first_answer)
    ask(page, "Segment the aorta.")
    assert len(bodies) == 2 and bodies[0] == bodies[1] and re.fullmatch(r"[0-9a-f]{32}", bodies[0]["request_id"])
    assert client.session(opened).round_count == 1
    expect(page.locator("#transcript > li")).to_have_count(1)
    expect(page.locator("#round-1 .answer")).to_have_text(shown(client.get_round(opened, 1).answer))


def test_a_reload_rebuilds_the_transcript(page, opened, client):
    ask(page, "Segment the aorta.")
    ask(page, "Segment the organ on the image-right of the output of round 1.")
    assert f"session={opened}" in page.url
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#transcript > li")).to_have_count(2)
    for r in client.rounds(opened):
        expect(page.locator(f"#round-{r.number} .answer")).to_have_text(shown(r.answer))
        expect(page.locator(f"#round-{r.number} .answer .mask-chip")).to_have_count(r.answer.count("[SEG]"))
        expect(page.locator(f"#round-{r.number}")).to_have_attribute("data-reference", str(r.reference_round))
    expect(page.locator("#round-2 .refers")).to_have_text("refers to round 1")
    _, mask = _mask(client, opened, 1)
    x, y = inside_pixel(mask, avoid=label_area(page, mask))
    colour = pixel(page, x, y)
    assert not near(colour, BASE[y, x]), "the masks are drawn again"
    ask(page, "Segment the liver.")  # and the dialogue goes on where it was
    assert client.session(opened).round_count == 3


def test_quality_warnings_follow_the_servers_threshold(page, opened, client, served):
    ask(page, "Segment the aorta.")
    r = client.get_round(opened, 1)
    beta = json.loads(page.evaluate("fetch('api/v1/config').then(r => r.text())"))["jcm_beta"]
    expect(page.locator("#round-1 .warn")).to_have_count(1 if r.quality <= beta else 0)
    expect(page.locator("#round-1 .corrected")).to_have_count(1 if r.corrected else 0)
    expect(page.locator("#round-1 .score")).to_have_text(
        f"Estimated overlap with the true structure: {int(100 * r.quality + 0.5)}%")  # as Math.round
    # the tiny model's masks score above the threshold: a low one, drawn by the page's own module
    shown = page.evaluate("""async (beta) => {
        const { Transcript } = await import('./static/js/transcript.js');
        const t = new Transcript(document.createElement('ol'), {});
        t.beta = beta;
        const li = t.done(null, {number: 7, question: 'q', answer: 'a', has_mask: true, quality: 0.31, corrected: true,
                                 reference_round: 2, box: null});
        return [li.querySelector('.warn')?.textContent, li.querySelector('.corrected')?.textContent,
                li.querySelector('.refers').textContent];
    }""", beta)
    assert shown == [f"⚠ at or below the {int(100 * beta + 0.5)}% threshold: check this mask",
                     "✎ redrawn by the JCM (the estimate was for its first draft)", "refers to round 2"]


def test_education_mode_predicts_first_then_reveals_the_truth_and_the_dice(page, served, client):
    from model.data.images import load_mask
    from serving.http.examples import example_cases

    case = example_cases()["real_0"]
    open_page(page, served.url)
    page.select_option("#example", "real_0")
    page.click("#open-example")
    sid = session_id(page)
    expect(page.locator("#education")).to_be_visible()
    expect(page.locator("#case-note")).to_contain_text("some of these slices are upside down")
    expect(page.locator("#question")).to_have_value(case.rounds[0].question)
    ask(page)
    expect(page.locator("#question")).to_have_value(case.rounds[1].question)  # the case's next question
    expect(page.locator("#show-truth-1")).to_have_count(0)  # the prediction first
    page.click("#round-1 .reveal")
    predicted = decode(client.get_round(sid, 1).mask_png) > 0
    truth = load_mask(case.rounds[0].truth)
    dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    expect(page.locator("#round-1 .dice")).to_have_text(f"Dice against the ground truth: {dice:.2f}")
    expect(page.locator("#show-truth-1")).to_be_checked()


def test_a_16_bit_image_is_windowed_by_the_server(page, served, tmp_path):
    deep = (rgb(IMAGE.read_bytes())[..., 0].astype(np.uint16) * 150)  # 0..38250
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    open_page(page, served.url)
    upload(page, path)
    session_id(page)
    expect(page.locator("#window-controls")).to_be_visible()
    y, x = (int(v) for v in np.argwhere((deep > 14000) & (deep < 16000))[0])
    lo, hi = int(deep.min()), int(deep.max())
    full = [round((deep[y, x] - lo) / (hi - lo) * 255)] * 3  # the full range, as the model sees it
    assert near(settled_pixel(page, x, y, full), full)
    page.evaluate("""() => {
        document.getElementById('window-center').value = 15000;
        document.getElementById('window-width').value = 4000;
        document.getElementById('window-center').dispatchEvent(new Event('input'));
    }""")
    expect(page.locator("#window-value")).to_have_text("centre 15000, width 4000")
    expected = round(np.clip((deep[y, x] - 13000) / 4000, 0, 1) * 255)
    assert near(settled_pixel(page, x, y, [expected] * 3), [expected] * 3)  # centre +- width/2: black to white
    page.click("#window-reset")
    assert near(settled_pixel(page, x, y, full), full)


def test_a_dicom_file_goes_with_its_window_and_the_server_answers_inline(page, served, client):
    import pydicom.data as pydicom_data

    from mediround.v1 import mediround_pb2 as pb

    path = pydicom_data.get_testdata_file("CT_small.dcm")
    open_page(page, served.url)
    page.click("#dicom-options summary")
    page.select_option("#dicom-preset", "ct-abdomen")
    with page.expect_request(re.compile(r".*/api/v1/sessions\?")) as sent:
        upload(page, path)
    assert "window_preset=ct-abdomen" in sent.value.url
    try:  # whatever the server says about DICOM, the page shows it
        with open(path, "rb") as f:
            session = client.stub.CreateSession(pb.CreateSessionRequest(
                image=f.read(), dicom_options=pb.DicomOptions(window_preset="ct-abdomen")))
    except grpc.RpcError as e:
        expect(page.locator("#transcript .error")).to_have_text(f"{e.details()} ({e.code().name})")
    else:
        assert session.dicom.window_source == "preset:ct-abdomen"
        expect(page.locator("#dicom-window")).to_contain_text("preset:ct-abdomen")
        expect(page.locator("#download-seg")).to_be_disabled()  # the SEG holds the rounds' masks: none yet
        expect(page.locator("#download-seg")).to_have_attribute("title", re.compile("ask a round first"))
        ask(page, "Segment the left lung.")
        sid = session_id(page)
        assert client.get_round(sid, 1).has_mask
        expect(page.locator("#download-seg")).to_be_enabled()
        with page.expect_download() as download:
            page.click("#download-seg")
        import pydicom

        seg = pydicom.dcmread(download.value.path())
        expected = client.stub.GetSegmentation(pb.GetSegmentationRequest(session_id=sid))
        assert seg.Modality == "SEG" and seg.SOPInstanceUID == expected.sop_instance_uid


def test_the_empty_page_says_what_to_do_and_that_the_model_is_for_teaching(page, served):
    open_page(page, served.url)
    welcome = page.locator("#welcome")
    expect(welcome).to_be_visible()
    expect(page.locator("#view")).to_be_hidden()  # no empty black square: the words instead
    for said in ("Open an image above", "Segment the lesion inside round 1.", "refers to round 1",
                 "Clicking a round's chip", "not a clinical tool"):
        expect(welcome).to_contain_text(said)
    upload(page, IMAGE)
    session_id(page)
    expect(welcome).to_be_hidden()
    expect(page.locator("#view")).to_be_visible()


def test_a_label_sits_on_its_mask_at_one_size_on_screen_and_a_truth_outline_shows_on_grey(page, served):
    """On a radiograph-sized picture shown 400 px wide: the label is on the mask's body, not pulled off it by a
    stray pixel, 16 CSS px high; a white ground-truth outline has a dark halo on mid-grey."""
    open_page(page, served.url)
    found = page.evaluate("""async () => {
        const { Viewer } = await import('./static/js/viewer.js');
        const canvas = document.createElement('canvas');
        canvas.style.width = '400px';
        document.body.append(canvas);
        const viewer = new Viewer(canvas, document.createElement('p'));
        const [w, h] = [1841, 1955];
        viewer.open(w, h, 'test');
        const grey = new ImageData(w, h);
        grey.data.fill(128);
        viewer.setPicture(await createImageBitmap(grey));
        const bits = new Uint8Array(w * h);
        for (let y = 1400; y < 1600; y++) for (let x = 1100; x < 1300; x++) bits[y * w + x] = 1;  // the body
        bits[3 * w + 3] = 1;  // a stray pixel in the corner
        const mask = viewer.addLayer({ key: 'round-1', label: '1', name: 'round 1', bits,
                                       colour: { rgb: [230, 159, 0], name: 'orange', ink: '#000' } });
        const ring = new Uint8Array(w * h);
        for (let y = 400; y < 600; y++) for (let x = 400; x < 600; x++) ring[y * w + x] = 1;
        viewer.addLayer({ key: 'truth-1', label: 'T1', name: 'truth', bits: ring, outlineOnly: true,
                          colour: { rgb: [255, 255, 255], name: 'white', ink: '#000' } });
        const at = (x, y) => [...viewer.ctx.getImageData(x, y, 1, 1).data.slice(0, 3)];
        const t = viewer.lineWidth();
        return { box: viewer.labelBox(mask), shown: canvas.getBoundingClientRect().width, w, t,
                 edge: at(400 - t, 500), halo: at(400 - 2 * t, 500), inside: at(500, 500), far: at(300, 500) };
    }""")
    box, scale = found["box"], found["shown"] / found["w"]
    cx, cy = box["x"] + box["w"] / 2, box["y"] + box["h"] / 2
    assert 1100 <= cx < 1300 and 1400 <= cy < 1600, "the label is on the mask's body"
    assert box["h"] * scale == pytest.approx(16, abs=1), "16 CSS px high on screen"
    assert found["t"] * scale == pytest.approx(1, abs=0.5), "the outline is about a CSS pixel wide whatever the size"
    assert found["edge"] == [255, 255, 255] and found["halo"] == [0, 0, 0], "a white line with a dark halo"
    assert found["inside"] == found["far"] == [128, 128, 128], "an outline only: the grey shows inside and around"


def test_a_long_word_in_a_question_wraps_instead_of_widening_the_page(page, opened):
    ask(page, "x" * 1000)  # refused (too long for the model), shown inline with the question
    expect(page.locator("#transcript li.failed")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_round_that_found_nothing_offers_no_reference_to_it(page, served):
    open_page(page, served.url)
    chip = page.evaluate("""async () => {
        const { Transcript } = await import('./static/js/transcript.js');
        const t = new Transcript(document.createElement('ol'), { chip: () => {} });
        const li = t.done(null, {number: 2, question: 'Segment the spleen.', has_mask: false, quality: 0,
                                 answer: 'Nothing was found for this in the image.', corrected: false,
                                 reference_round: 0, box: null});
        const c = li.querySelector('.chip');
        return { disabled: c.disabled, title: c.title, quality: li.querySelector('.quality').textContent };
    }""")
    assert chip == {"disabled": True, "title": "Round 2 has no mask: a later question cannot refer to it",
                    "quality": "No mask in this answer"}
