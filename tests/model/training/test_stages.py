"""Stage 1 and the JCM on batches holding rounds about a structure the image does not show: text loss, no mask."""

import json

import pytest
import torch

from model.data.dataset import MRMedSegDataset
from model.data.phantoms.generate import SplitSpec, generate_dataset
from model.training.stages import JCMTraining, MediRoundTraining


@pytest.fixture(scope="module")
def absent_root(tmp_path_factory):
    """Four phantom images whose dialogues ask, about half the time, for a structure the image does not show."""
    root = tmp_path_factory.mktemp("absent_phantoms")
    generate_dataset(root, seed=5, splits={"train": SplitSpec(4, 1, 0.0, absent=0.5)}, image_size=128, workers=1,
                     progress=False)
    return root


def _batch(stage, root, split="train"):
    """Two conversations, the first with a round not in the image, the second with none if there is one."""
    ds = MRMedSegDataset(root, split, tokenizer=stage.tokenizer, image_tokens=stage.image_tokens)
    items = [ds[i] for i in range(len(ds))]
    absent = [x for x in items if not x["has_mask"].all()]
    assert absent, "the fixture's dialogues hold a round not in the image"
    rest = [x for x in items if x is not absent[0]]
    return stage.collate([absent[0], rest[0]])


def test_a_stage_one_step_on_a_batch_with_a_round_not_in_the_image(tiny_model, phantom_tokenizer, absent_root):
    model, cfg = tiny_model
    stage = MediRoundTraining(absent_root, phantom_tokenizer, cfg.mllm.image_tokens)
    batch = _batch(stage, absent_root)
    found = sum(int(m.sum()) for m in batch["has_mask"])
    assert found < sum(len(m) for m in batch["has_mask"])
    _, h, _ = stage.seg_states(model, batch)
    assert h.shape[0] == found  # one [SEG] state per round with a mask, none for the others
    losses = stage.loss(model, batch)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["ce"] > 0 and losses["bce"] > 0
    losses["loss"].backward()
    head = model.mllm.lm_head.weight.grad
    assert head is not None and torch.isfinite(head).all() and head.abs().sum() > 0


def test_the_jcm_judges_only_rounds_with_a_mask(tiny_model, phantom_tokenizer, absent_root):
    model, cfg = tiny_model
    stage = JCMTraining(absent_root, phantom_tokenizer, cfg.mllm.image_tokens)
    losses = stage.loss(model, _batch(stage, absent_root))
    assert all(torch.isfinite(v) for v in losses.values()) and 0 <= losses["q_target"] <= 1
    losses["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.jcm.parameters())


def test_a_batch_where_nothing_is_in_the_image_trains_the_text_alone(tiny_model, phantom_tokenizer, absent_root):
    """A hand-written dialogue of two "not in this image" rounds: the mask terms are zero, the step still runs."""
    record = json.loads((absent_root / "train.json").read_text())[0]
    image = record["conversations"][0]["value"].split("]")[0] + "]"  # [IMAGE256:images/...]
    record["conversations"] = [
        {"from": "human", "value": f"{image} Segment the left kidney."},
        {"from": "gpt", "value": "There is no left kidney in this image."},
        {"from": "human", "value": "Segment the brain tumor."},
        {"from": "gpt", "value": "No brain tumor is visible in this image."}]
    (absent_root / "nothing.json").write_text(json.dumps([record]))
    model, cfg = tiny_model
    for stage in (MediRoundTraining(absent_root, phantom_tokenizer, cfg.mllm.image_tokens),
                  JCMTraining(absent_root, phantom_tokenizer, cfg.mllm.image_tokens)):
        ds = MRMedSegDataset(absent_root, "nothing", tokenizer=phantom_tokenizer, image_tokens=cfg.mllm.image_tokens)
        losses = stage.loss(model, stage.collate([ds[0]]))
        assert losses["bce"] == 0 and losses["dice"] == 0 and torch.isfinite(losses["loss"])
        losses["loss"].backward()


def test_masks_per_dialogue_decodes_that_many_rounds_of_each_and_keeps_their_pairing(tiny_model, phantom_tokenizer,
                                                                                      absent_root):
    model, cfg = tiny_model
    stage = MediRoundTraining(absent_root, phantom_tokenizer, cfg.mllm.image_tokens, masks_per_dialogue=1)
    batch = _batch(stage, absent_root)
    chosen, rows = stage.choose(batch)
    with_mask = [int(m.sum()) for m in batch["has_mask"]]
    assert [len(c) for c in chosen] == [min(1, n) for n in with_mask]
    assert all(0 <= k < n for c, n in zip(chosen, with_mask, strict=True) for k in c)
    assert len(rows) == sum(len(c) for c in chosen) and len(set(rows.tolist())) == len(rows)
    encodings, h, _ = stage.seg_states(model, batch)
    decoded = stage.decode_each(model, encodings, model.seg_prompts(h[rows]), batch, chosen)
    kept = [(c, m, f) for c, m, f in zip(chosen, batch["masks"], batch["has_mask"], strict=True) if c]
    for (logits, target), (places, masks, found) in zip(decoded, kept, strict=True):
        assert logits.shape == target.shape and torch.equal(target, masks[found][places])
    everything = MediRoundTraining(absent_root, phantom_tokenizer, cfg.mllm.image_tokens)
    assert [len(c) for c in everything.choose(batch)[0]] == with_mask
    losses = stage.loss(model, batch)
    assert torch.isfinite(losses["loss"]) and losses["bce"] > 0


def test_box_share_decodes_a_chosen_mask_again_from_its_box_and_trains_the_decoder_on_it(tiny_model,
                                                                                           phantom_tokenizer,
                                                                                           absent_root):
    """box_share 1: every conversation with a chosen round adds its first chosen mask, decoded from a box inside
    the image that covers most of it; 0 adds none. The box term's gradient reaches the mask decoder."""
    model, cfg = tiny_model
    stage = MediRoundTraining(absent_root, phantom_tokenizer, cfg.mllm.image_tokens, masks_per_dialogue=2,
                              box_share=1.0)
    batch = _batch(stage, absent_root)
    encodings, _, _ = stage.seg_states(model, batch)
    chosen, _ = stage.choose(batch)
    boxed = stage.box_prompted(model, encodings, batch, chosen)
    kept = [(c, m, f) for c, m, f in zip(chosen, batch["masks"], batch["has_mask"], strict=True) if c]
    assert len(boxed) == len(kept) > 0
    for (logits, target), (places, masks, found) in zip(boxed, kept, strict=True):
        assert logits.shape == target.shape and torch.equal(target, masks[found][places[:1]])
    model.zero_grad()
    stage.mask_terms(boxed, 2.0, 0.5, logits)["mask"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.sam.mask_decoder.parameters())
    assert MediRoundTraining(absent_root, phantom_tokenizer, cfg.mllm.image_tokens).box_prompted(
        model, encodings, batch, chosen) == []


def test_jittered_boxes_hold_the_mask_and_stay_inside_the_image():
    from model.training.stages import jittered_boxes

    mask = torch.zeros(1, 40, 50, dtype=torch.bool)
    mask[0, 10:20, 30:50] = True  # touches the right edge
    tight = jittered_boxes(mask, 0.0)
    assert tight.tolist() == [[30.0, 10.0, 50.0, 20.0]]
    for _ in range(20):
        x0, y0, x1, y1 = jittered_boxes(mask, 0.1)[0].tolist()
        assert 28 <= x0 <= 32 and 9 <= y0 <= 11 and 48 <= x1 <= 50 and 19 <= y1 <= 21
