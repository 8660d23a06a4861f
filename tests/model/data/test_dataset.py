import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from model.data.dataset import MRMedSegDataset, collate
from model.data.real import REAL_SLICES
from model.data.template import IGNORE_INDEX, SPECIAL_TOKENS


def tiny_tokenizer(texts):
    words = sorted({w for t in texts for w in t.replace("\n", " ").split()})
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", *SPECIAL_TOKENS, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", extra_special_tokens=list(SPECIAL_TOKENS))


def test_items_carry_masks_teacher_forced_references_and_boxes(phantom_root):
    ds = MRMedSegDataset(phantom_root, "test_hard")
    item = ds[0]
    conv = ds.conversations[0]
    r = len(conv.rounds)
    h, w = item["image"].shape[1:]
    assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 3
    assert item["masks"].shape == (r, h, w) and item["masks"].flatten(1).any(1).all()
    for k, rnd in enumerate(conv.rounds):
        if rnd.reference is None:
            assert item["references"][k] == -1 and not item["reference_masks"][k].any()
            assert item["reference_boxes"][k].tolist() == [0.0, 0.0, 1.0, 1.0]
        else:
            ref = item["masks"][rnd.reference]
            assert torch.equal(item["reference_masks"][k], ref)
            ys, xs = torch.nonzero(ref, as_tuple=True)
            assert item["reference_boxes"][k].tolist() == [xs.min() / w, ys.min() / h, xs.max() / w, ys.max() / h]
    assert item["text"].count("[SEG]") == r and item["text"].startswith("[INST] <image>\n ")


def test_tokens_expand_the_image_and_label_only_the_answers(phantom_root):
    ds = MRMedSegDataset(phantom_root, "val")
    tok = tiny_tokenizer([ds[i]["text"] for i in range(len(ds))])
    ds = MRMedSegDataset(phantom_root, "val", tokenizer=tok, image_tokens=16)
    batch = collate([ds[0], ds[1]], pad_token_id=tok.pad_token_id)
    ids, labels = batch["input_ids"], batch["labels"]
    image_id, seg_id = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("[SEG]")
    assert ((ids == image_id).sum(1) == 16).all()
    n_rounds = [len(ds.conversations[i].rounds) for i in (0, 1)]
    assert (labels == seg_id).sum(1).tolist() == n_rounds  # every [SEG] is a target
    assert not ((labels != IGNORE_INDEX) & (ids == image_id)).any()  # prompts carry no loss
    assert (labels == tok.eos_token_id).sum(1).tolist() == n_rounds
    assert batch["attention_mask"].sum(1).tolist() == [len(ds[0]["input_ids"]), len(ds[1]["input_ids"])]


def test_real_slices_load_through_the_same_dataset():
    ds = MRMedSegDataset(REAL_SLICES, "dialogues")
    item = ds[0]
    assert item["image"].shape[0] == 3 and item["masks"].shape[1:] == item["image"].shape[1:]


def _dataset_with_a_round_not_in_the_image(root):
    """A 8x6 image, two 2x2 masks; round 2 asks for a kidney the image does not show, round 3 refers to round 1."""
    import json

    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(root / "images" / "a.png")
    for name, (y, x) in (("liver", (1, 1)), ("lesion", (3, 5))):
        m = np.zeros((6, 8), np.uint8)
        m[y:y + 2, x:x + 2] = 255
        Image.fromarray(m).save(root / "masks" / f"{name}.png")
    record = {"task": "segmentation", "base": "[null]", "conversations": [
        {"from": "human", "value": "[IMAGE256:images/a.png] Segment the liver."},
        {"from": "gpt", "value": "Sure, the liver is [MASK-DECODE:masks/liver.png]."},
        {"from": "human", "value": "Segment the left kidney."},
        {"from": "gpt", "value": "There is no left kidney in this image."},
        {"from": "human", "value": "[MASK-ENCODE:masks/liver.png][BOX-ENCODE:masks/liver.png] Segment its lesion.",
         "ind": 0},
        {"from": "gpt",
         "value": "Inside round 1: the liver lesion [REF-DECODE:masks/liver.png][MASK-DECODE:masks/lesion.png]."}]}
    (root / "train.json").write_text(json.dumps([record]))
    return root


def test_a_round_not_in_the_image_has_no_mask_no_seg_and_a_labelled_answer(tmp_path):
    root = _dataset_with_a_round_not_in_the_image(tmp_path)
    item = MRMedSegDataset(root, "train")[0]
    assert item["has_mask"].tolist() == [True, False, True]
    assert item["masks"].flatten(1).sum(1).tolist() == [4, 0, 4]  # the 2x2 masks, nothing for the kidney
    assert torch.equal(item["reference_masks"][2], item["masks"][0]) and item["references"].tolist() == [-1, -1, 0]
    assert item["text"] == ("[INST] <image>\n Segment the liver. [/INST] Sure, the liver is [SEG]. </s>"
                            "[INST] Segment the left kidney. [/INST] There is no left kidney in this image. </s>"
                            "[INST] [CROPPEDIMAGE][BBOXINPUT] Segment its lesion. [/INST] Inside round 1: the liver "
                            "lesion [SEG]. </s>")
    tok = tiny_tokenizer([item["text"]])
    item = MRMedSegDataset(root, "train", tokenizer=tok, image_tokens=4)[0]
    labelled = tok.decode([t for t in item["labels"].tolist() if t != IGNORE_INDEX])
    assert "There is no left kidney in this image. </s>" in labelled  # its words are trained, as any answer
    assert "Segment" not in labelled  # the questions are not
    assert (item["labels"] == tok.convert_tokens_to_ids("[SEG]")).sum() == 2  # one [SEG] per round with a mask


def test_answer_text_puts_seg_after_a_named_answer_and_none_in_one_without_a_mask():
    import pytest

    from model.data.template import answer_text

    assert answer_text("Sure, the right putamen is") == "Sure, the right putamen is [SEG]."
    assert answer_text("") == "[SEG]."  # the official bare answer
    assert answer_text("The hippocampus is not in this slice.", has_mask=False) == \
        "The hippocampus is not in this slice."
    for bad in ("[SEG].", " . "):
        with pytest.raises(ValueError, match="without \\[SEG\\]"):
            answer_text(bad, has_mask=False)
