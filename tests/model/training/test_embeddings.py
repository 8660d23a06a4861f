"""A pretrained SAM encoder under the tiny model: never trained, its embeddings computed once per training view
and kept on disk, and left out of the checkpoints (the builder loads it from its installed weights)."""

import torch
from safetensors.torch import load_file

from model.build import build_model
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data.dataset import ImageMaskDataset
from model.training.embeddings import SamEmbeddings
from model.training.loop import mark_trainable
from model.training.stages import SamPretraining


def test_litemedsam_embeddings_are_computed_once_per_view_and_read_back(tmp_path, phantom_root, phantom_tokenizer):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    cfg.mllm.text["vocab_size"] = len(phantom_tokenizer)
    model = build_model(cfg, phantom_tokenizer).eval()
    assert model.pretrained_sam_encoder.startswith("litemedsam-")
    item = ImageMaskDataset(phantom_root, "train")[0]

    first = SamEmbeddings(tmp_path, model.pretrained_sam_encoder)
    embedding, size = first.get(model, item["image_file"], item["image"])
    assert embedding.shape == (1, 256, 64, 64) and size == (256, 256) and first.computed == 1
    again = SamEmbeddings(tmp_path, model.pretrained_sam_encoder)  # a later stage, or a rerun
    stored, stored_size = again.get(model, item["image_file"], item["image"])
    assert again.computed == 0 and stored_size == size
    assert torch.allclose(stored, embedding, atol=1e-2, rtol=1e-2)  # kept in fp16

    mark_trainable(model, SamPretraining(phantom_root))  # the stage that trains the whole SAM of tiny-scratch
    learns = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("sam.mask_decoder.") for n in learns)
    assert not any(n.startswith("sam.image_encoder.") for n in learns)

    save_checkpoint(model, phantom_tokenizer, cfg, tmp_path / "ckpt", dtype=torch.float16)
    saved = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert saved and not any(k.startswith("sam.image_encoder.") for k in saved)
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    for name, tensor in loaded.sam.image_encoder.state_dict().items():
        assert torch.equal(tensor, model.sam.image_encoder.state_dict()[name]), name
