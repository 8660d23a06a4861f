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
