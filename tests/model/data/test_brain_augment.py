"""Brain training views: flips swap pixels, labels and words together; geometry moves image and masks together."""

import numpy as np
import pytest
import torch

from model.data.brain.augment import (
    BrainAugment,
    View,
    apply_view,
    draw_view,
    swap_sides,
    training_view,
    view_names,
    view_rounds,
)
from model.data.brain.generate import BrainSplitSpec, generate_dataset
from model.data.brain.scene import brain_slice
from model.data.brain.volume import load_brain
from model.data.dataset import ImageMaskDataset, MRMedSegDataset
from model.data.images import load_image, load_mask
from model.data.mrmedseg import Round
from tests.conftest import require_brain_templates


@pytest.fixture(scope="module")
def small_brain(tmp_path_factory):
    require_brain_templates()
    root = tmp_path_factory.mktemp("brain_small")
    generate_dataset(root, seed=1, splits={"train": BrainSplitSpec("train", 2)}, stride=25, workers=1, progress=False)
    return root


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_swap_sides_exchanges_whole_words_only_and_keeps_case():
    text = "Left of the left putamen, right? The RIGHT one."
    assert swap_sides(text) == "Right of the right putamen, left? The LEFT one."
    assert swap_sides("leftover brightness rightly") == "leftover brightness rightly"
    assert swap_sides(swap_sides("the left caudate nucleus")) == "the left caudate nucleus"


def test_an_axial_flip_mirrors_pixels_and_masks_and_swaps_the_words_consistently(small_brain):
    scene = brain_slice(load_brain(), "axial", 80, 192)
    keys = ["left_putamen", "right_putamen", "left_cerebral_hemisphere", "right_cerebral_hemisphere"]
    masks = np.stack([scene.entities[k].mask for k in keys])
    image = np.repeat(scene.image[..., None], 3, axis=2)
    seen, seen_masks = apply_view(View(flip=True), image, masks, "axial")
    assert np.array_equal(seen, image[:, ::-1]) and np.array_equal(seen_masks, masks[:, :, ::-1])
    names = view_names(View(flip=True), [k.replace("_", " ") for k in keys])
    assert names == ["right putamen", "left putamen", "right cerebral hemisphere", "left cerebral hemisphere"]
    w = image.shape[1]
    for name, mask in zip(names, seen_masks, strict=True):
        on_right = mask[:, w // 2:].sum() / mask.sum()  # radiological: the patient's left is on the image right
        assert (on_right > 0.9) if name.startswith("left") else (on_right < 0.1), (name, on_right)
    # the mirrored left structure is (nearly) where the real right one is: one brain, nearly symmetric
    assert _dice(seen_masks[0], masks[1]) > 0.5 and _dice(seen_masks[2], masks[3]) > 0.85
    rounds = [Round("Segment the left putamen.", "Sure,", "m.png"),
              Round("Segment the contralateral counterpart of it.", "", "n.png", 0, "m.png", "m.png", "m.png")]
    flipped = view_rounds(View(flip=True), rounds)
    assert [r.question for r in flipped] == ["Segment the right putamen.",
                                             "Segment the contralateral counterpart of it."]
    assert view_rounds(View(), rounds) == rounds


def test_a_sagittal_flip_keeps_the_pixels_and_swaps_only_the_words():
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    image[..., 1] = image[..., 2] = image[..., 0]
    masks = np.zeros((1, 32, 32), dtype=bool)
    masks[0, 4:10, 2:9] = True
    seen, seen_masks = apply_view(View(flip=True), image, masks, "sagittal")
    assert np.array_equal(seen, image) and np.array_equal(seen_masks, masks)
    assert view_names(View(flip=True), ["left putamen"]) == ["right putamen"]


def test_rotation_and_scale_move_image_and_masks_together():
    masks = np.zeros((2, 96, 96), dtype=bool)
    masks[0, 20:40, 50:80] = True
    masks[1, 60:75, 15:30] = True
    image = np.repeat((masks.any(0) * 255).astype(np.uint8)[..., None], 3, axis=2)  # the image is the masks
    view = View(angle_deg=7.0, scale=1.07)
    seen, seen_masks = apply_view(view, image, masks, "axial")
    assert not np.array_equal(seen_masks, masks)
    assert _dice(seen[..., 0] > 127, seen_masks.any(0)) > 0.95
    assert abs(seen_masks[0].sum() / masks[0].sum() - 1.07**2) < 0.1  # area grows with the scale squared


def test_views_are_a_pure_function_of_file_and_variant_and_variant_zero_is_the_original():
    config = BrainAugment()
    assert draw_view(config, "images/a.png", 3) == draw_view(config, "images/a.png", 3)
    assert draw_view(config, "images/a.png", 3) != draw_view(config, "images/b.png", 3)
    assert draw_view(config, "images/a.png", 0) == View()
    views = [draw_view(config, "images/a.png", v) for v in range(1, 60)]
    assert 0.3 < np.mean([v.flip for v in views]) < 0.7
    assert all(abs(v.angle_deg) <= config.rotate_deg and config.scale[0] <= v.scale <= config.scale[1] for v in views)
    image = np.full((64, 64, 3), 120, dtype=np.uint8)
    masks = np.ones((1, 64, 64), dtype=bool)
    a = apply_view(views[0], image, masks, "axial")[0]
    assert np.array_equal(a, apply_view(views[0], image, masks, "axial")[0])
    intensity = View(gamma=1.3, contrast=1.1, bias=0.2, noise=0.03, noise_seed=4)
    seen, seen_masks = apply_view(intensity, image, masks, "axial")
    assert np.array_equal(seen_masks, masks) and not np.array_equal(seen, image) and seen.std() > 1


def test_a_view_that_would_empty_a_mask_falls_back_to_the_original():
    masks = np.zeros((1, 64, 64), dtype=bool)
    masks[0, 1:4, 1:4] = True  # in a corner: a 3x zoom about the centre pushes it out of the image
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    config = BrainAugment(scale=(3.0, 3.0), variants=2)
    assert not apply_view(draw_view(config, "images/x.png", 1), image, masks, "axial")[1].any()
    rng = np.random.default_rng(0)
    for _ in range(6):  # variant 1 drawn about half the time: each falls back
        variant, view, seen, seen_masks = training_view(config, "images/x.png", rng, image, masks, "axial")
        assert (variant, view) == (0, View()) and np.array_equal(seen_masks, masks)


def test_the_dataset_shows_brain_items_through_views_named_apart_for_the_caches(small_brain):
    plain = MRMedSegDataset(small_brain, "train")
    seen = MRMedSegDataset(small_brain, "train", augment=BrainAugment(flip=1.0, variants=2))
    flipped_items = 0
    for i in range(min(len(plain), 12)):
        a, b = plain[i], seen[i]
        if b["image_file"] == a["image_file"]:  # variant 0: the original, untouched
            assert torch.equal(a["image"], b["image"]) and a["text"] == b["text"]
            continue
        flipped_items += 1
        assert b["image_file"] == a["image_file"] + "#aug1"
        assert all(f == "" or f.endswith("#aug1") for f in b["reference_files"])
        assert b["text"] == swap_sides(a["text"])
        for k, ref in enumerate(b["references"].tolist()):
            if ref >= 0:
                assert torch.equal(b["reference_masks"][k], b["masks"][ref])  # teacher forcing on the view's masks
        # the same view of the same image every time: the frozen encodings cached under its name stay right
        again = seen[i]
        if again["image_file"] == b["image_file"]:
            assert torch.equal(again["image"], b["image"]) and torch.equal(again["masks"], b["masks"])
    assert flipped_items >= 2


def test_image_mask_items_swap_their_names_with_a_flip(small_brain):
    plain = ImageMaskDataset(small_brain, "train")
    seen = ImageMaskDataset(small_brain, "train", augment=BrainAugment(flip=1.0, variants=2, rotate_deg=0.0,
                                                                      scale=(1.0, 1.0)))
    swapped = 0
    for i in range(len(plain)):
        a, b = plain[i], seen[i]
        if a["names"] != b["names"]:
            assert b["names"] == [swap_sides(n) for n in a["names"]]
            swapped += 1
        for name, mask in zip(b["names"], b["masks"], strict=True):
            w = mask.shape[1]
            if name.startswith(("left ", "right ")) and "sagittal" not in a["image_file"]:
                on_right = float(mask[:, w // 2:].sum() / mask.sum())
                assert (on_right > 0.9) if name.startswith("left") else (on_right < 0.1), (a["image_file"], name)
    assert swapped >= 2


def test_phantom_items_are_never_augmented(phantom_root):
    plain = MRMedSegDataset(phantom_root, "train")
    seen = MRMedSegDataset(phantom_root, "train", augment=BrainAugment(flip=1.0))
    for i in range(4):
        a, b = plain[i], seen[i]
        assert a["image_file"] == b["image_file"] and torch.equal(a["image"], b["image"]) and a["text"] == b["text"]
    assert np.array_equal(load_image(phantom_root / plain.conversations[0].image), plain[0]["image"].permute(1, 2, 0))
    assert load_mask(phantom_root / plain.conversations[0].rounds[0].mask).any()
