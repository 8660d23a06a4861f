import json

import numpy as np
import pytest
from PIL import Image

from model.data.images import MaskFormatError, load_image, load_mask
from model.data.real import REAL_SLICES
from model.data.validate import validate_dataset


def write_dataset(root, mask=None, image_size=(8, 6)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros(image_size[::-1], np.uint8)).save(root / "images" / "a.png")
    m = np.zeros(image_size[::-1], np.uint8)
    m[1:3, 1:3] = 255
    Image.fromarray(m if mask is None else mask).save(root / "masks" / "m0.png")
    Image.fromarray(m).save(root / "masks" / "m1.png")
    record = {"task": "segmentation", "base": "[null]", "conversations": [
        {"from": "human", "value": "[IMAGE256:images/a.png] Segment the liver."},
        {"from": "gpt", "value": "[MASK-DECODE:masks/m0.png]."},
        {"from": "human", "value": "[MASK-ENCODE:masks/m0.png][BOX-ENCODE:masks/m0.png] Its lesion.", "ind": 0},
        {"from": "gpt", "value": "It is [REF-DECODE:masks/m0.png][MASK-DECODE:masks/m1.png]."}]}
    (root / "train.json").write_text(json.dumps([record]))
    return root


def only_problem(root):
    report = validate_dataset(root)
    assert len(report.problems) >= 1
    return report.problems[0]


def test_a_good_dataset_validates(tmp_path):
    report = validate_dataset(write_dataset(tmp_path))
    assert report.ok, report.summary()
    assert report.conversations["train"] == 1 and report.rounds["train"] == 2


def test_a_round_not_in_the_image_validates_without_a_mask_file_and_is_counted(tmp_path):
    root = write_dataset(tmp_path)
    (record,) = json.loads((root / "train.json").read_text())
    record["conversations"] += [{"from": "human", "value": "Segment the left kidney."},
                                {"from": "gpt", "value": "There is no left kidney in this image."}]
    (root / "train.json").write_text(json.dumps([record]))
    report = validate_dataset(root)
    assert report.ok, report.summary()
    assert (report.rounds["train"], report.absent["train"]) == (3, 1)
    assert report.masks == {"masks/m0.png", "masks/m1.png"}
    assert "not in image" in report.summary()


def test_a_gpt_turn_with_three_tokens_is_still_refused(tmp_path):
    root = write_dataset(tmp_path)
    (record,) = json.loads((root / "train.json").read_text())
    three = "[REF-DECODE:masks/m0.png][MASK-DECODE:masks/m1.png][MASK-DECODE:masks/m0.png]"
    record["conversations"][3]["value"] = f"It is {three}."
    (root / "train.json").write_text(json.dumps([record]))
    p = only_problem(root)
    assert "optionally preceded" in str(p) and p.turn == 3


def test_zero_one_mask_is_rejected_not_read_as_empty(tmp_path):
    m = np.zeros((6, 8), np.uint8)
    m[1:3, 1:3] = 1
    p = only_problem(write_dataset(tmp_path, mask=m))
    assert "0/1 mask would read as empty" in str(p) and p.turn == 1
    with pytest.raises(MaskFormatError):
        load_mask(tmp_path / "masks" / "m0.png")


def test_rgb_mask_is_rejected(tmp_path):
    p = only_problem(write_dataset(tmp_path, mask=np.zeros((6, 8, 3), np.uint8)))
    assert "single-channel" in str(p)


def test_size_mismatch_names_both_sizes(tmp_path):
    root = write_dataset(tmp_path)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "m1.png")
    p = only_problem(root)
    assert "5x5" in str(p) and "8x6" in str(p) and p.turn == 3


def test_missing_image_and_mask_files(tmp_path):
    root = write_dataset(tmp_path)
    (root / "images" / "a.png").unlink()
    (root / "masks" / "m1.png").unlink()
    messages = [str(p) for p in validate_dataset(root).problems]
    assert any("image file not found" in m for m in messages)
    assert any("mask file not found" in m for m in messages)


def test_format_errors_are_collected_per_record(tmp_path):
    root = write_dataset(tmp_path)
    records = json.loads((root / "train.json").read_text())
    bad = json.loads(json.dumps(records[0]))
    bad["task"] = "vqa"
    (root / "train.json").write_text(json.dumps([records[0], bad, records[0]]))
    report = validate_dataset(root)
    assert report.conversations["train"] == 2
    assert [p.record for p in report.problems] == [1]


def test_real_slice_dialogues_validate():
    report = validate_dataset(REAL_SLICES, ["dialogues"])
    assert report.ok, report.summary()
    assert report.conversations["dialogues"] >= 6 and len(report.images) == 4


@pytest.mark.parametrize("mode,dtype", [("L", np.uint8), ("RGB", np.uint8), ("RGBA", np.uint8),
                                        ("I;16", np.uint16)])
def test_images_of_any_common_form_become_uint8_rgb(tmp_path, mode, dtype):
    shape = (5, 7, 4) if mode == "RGBA" else (5, 7, 3) if mode == "RGB" else (5, 7)
    a = (np.arange(np.prod(shape)).reshape(shape) * (300 if dtype == np.uint16 else 1) % 65000).astype(dtype)
    Image.fromarray(a).save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png")
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    if dtype == np.uint16:
        assert out.max() == 255 and out.min() == 0
