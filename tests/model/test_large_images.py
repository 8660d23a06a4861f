"""Images far larger than the model's input: masks at their own size, refined at a bounded working size."""

import numpy as np
import pytest
import torch
from PIL import Image

import model.mediround as mediround
from model.checkpoint import load_checkpoint
from model.config import SHIPPED_TINY
from model.data.images import load_image, load_mask, mask_box
from model.data.real import REAL_SLICES
from model.preprocess import WORKING_SIDE, shrink, working_size

ORGANS = ("liver", "spleen", "inferior_vena_cava", "aorta")  # of the 512 x 512 slice amos_0006_90


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(SHIPPED_TINY)[0].eval()


def _picture(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _upscaled(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A smooth (bicubic) copy at (H, W), as a scan taken at a higher resolution would be."""
    return np.array(Image.fromarray(array).resize(size[::-1], Image.BICUBIC))


def _box_masks(model, picture: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        enc = model.encode_image(picture)
        logits = model.box_masks(enc.sam_embedding, torch.from_numpy(boxes).float(), enc.input_size,
                                 enc.original_size, picture)
    return (logits > 0).numpy()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_the_working_size_is_the_image_up_to_512_px_and_bounded_above_it():
    assert WORKING_SIDE == 512
    for size in ((192, 192), (155, 225), (512, 512), (512, 100)):
        assert working_size(size) == size
    assert working_size((4096, 4096)) == (512, 512)
    assert working_size((2500, 3000)) == (427, 512) and working_size((3000, 2500)) == (512, 427)
    assert working_size((513, 1024)) == (257, 512)


def test_shrink_keeps_a_small_image_itself_and_makes_a_large_one_uint8_at_the_working_size():
    small = torch.randint(0, 255, (3, 512, 300), dtype=torch.uint8)
    assert shrink(small) is small
    large = torch.full((3, 2500, 3000), 77, dtype=torch.uint8)
    out = shrink(large)
    assert out.dtype == torch.uint8 and out.shape == (3, 427, 512) and bool((out == 77).all())


@pytest.mark.parametrize("size", [(512, 512), (2048, 2048), (2500, 3000), (4096, 4096)])
def test_the_guided_filter_works_at_a_bounded_size_and_the_mask_comes_back_at_the_original(tiny_model, monkeypatch,
                                                                                           size):
    model, cfg = tiny_model  # a size whose masks are refined on the image (tiny-scratch's 192 px SAM)
    assert cfg.seg.guided_filter_eps is not None and cfg.seg.img_size == 192
    calls = []

    def spy(guide, prob, kernel_size, eps):
        calls.append((tuple(guide.shape), tuple(prob.shape), kernel_size))
        return prob

    monkeypatch.setattr(mediround, "guided_blur", spy)
    low_res = torch.randn(3, 1, 96, 96)
    picture = torch.zeros(3, *size, dtype=torch.uint8)
    input_size = (160, 192) if size == (2500, 3000) else (192, 192)
    logits = model.postprocess(low_res, input_size, size, picture)
    assert logits.shape == (3, 1, *size)
    work = working_size(size)
    # one call for the 3 masks, at the working size, over one low-res cell each side in its pixels (5 at 512 px)
    assert calls == [((1, 1, *work), (1, 3, *work), 11)]


def test_a_4096_px_copy_of_a_real_slice_gets_the_masks_of_its_working_size_copy_upscaled(shipped):
    """The model sees a 4096 px image at the 512 px working size: its masks are those of that 512 px copy, brought
    back to 4096 px (comparing with the original slice instead would also measure how the model takes the
    smoothing of a bicubic round trip)."""
    image = load_image(REAL_SLICES / "images" / "amos_0006_90.png")
    truths = [load_mask(REAL_SLICES / "masks" / f"amos_0006_90_{organ}_000.png") for organ in ORGANS]
    boxes = np.array([mask_box(t) for t in truths], dtype=np.float32)
    large_picture = _picture(_upscaled(image, (4096, 4096)))
    working = shrink(large_picture)
    assert working.shape == (3, 512, 512)
    small = _box_masks(shipped, working, boxes)

    factor = 8
    large = _box_masks(shipped, large_picture, boxes * factor)  # the same prompt
    assert large.shape == (len(ORGANS), 4096, 4096)
    for organ, s, big in zip(ORGANS, small, large, strict=True):
        assert s.any(), organ
        assert _dice(big, s.repeat(factor, 0).repeat(factor, 1)) > 0.95, organ


def test_a_large_non_square_image_gets_masks_of_its_own_size(shipped):
    image = _upscaled(load_image(REAL_SLICES / "images" / "amos_0006_90.png"), (2500, 3000))
    masks = _box_masks(shipped, _picture(image), np.array([[600, 500, 2400, 2000]], dtype=np.float32))
    assert masks.shape == (1, 2500, 3000) and masks.any()


def test_mask_box_is_the_tight_box_of_the_foreground():
    rng = np.random.default_rng(0)
    for shape, p in (((4096, 4096), 1e-6), ((37, 5), 0.2), ((1, 1), 1.0), ((9, 9), 0.0)):
        mask = rng.random(shape) < p
        ys, xs = np.nonzero(mask)
        expected = (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else None
        assert mask_box(mask) == expected
