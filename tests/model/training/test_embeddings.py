"""A pretrained SAM encoder under the tiny model: never trained, its embeddings computed once per training view
and kept on disk, and left out of the checkpoints (the builder loads it from its installed weights)."""

import numpy as np
import torch
from safetensors.torch import load_file

from model.build import build_model
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data.dataset import ImageMaskDataset
from model.mediround import masked_mean
from model.training.embeddings import SamEmbeddings
from model.training.loop import StageSettings, fit, mark_trainable
from model.training.mixture import TrainingData
from model.training.stages import Alignment, SamPretraining


def test_litemedsam_embeddings_are_computed_once_per_view_and_read_back(tmp_path, phantom_root, phantom_tokenizer):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    cfg.mllm.text["vocab_size"] = len(phantom_tokenizer)
    model = build_model(cfg, phantom_tokenizer).eval()
    assert model.pretrained_sam_encoder.startswith("litemedsam-")
    item = ImageMaskDataset(phantom_root, "train")[0]

    first = SamEmbeddings(tmp_path)
    embedding, size = first.get(model, item["image_file"], item["image"])
    assert embedding.shape == (1, 256, 64, 64) and size == (256, 256) and first.computed == 1
    again = SamEmbeddings(tmp_path)  # a later stage, or a rerun
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


def test_embeddings_cached_while_training_are_those_inference_computes(tmp_path, phantom_root, phantom_tokenizer):
    """LiteMedSAM's TinyViT holds BatchNorm: a training stage (the model in training mode) must still encode each
    view with the pretrained statistics, or every cached embedding differs from what the served model sees."""
    cfg = ModelConfig.tiny()
    cfg.mllm.text["vocab_size"] = len(phantom_tokenizer)
    model = build_model(cfg, phantom_tokenizer)
    item = ImageMaskDataset(phantom_root, "train")[0]
    inference, _ = model.eval().sam_embed([item["image"]])

    model.train()  # as ``fit`` sets it
    assert model.training and model.sam.mask_decoder.training and not model.sam.image_encoder.training
    cached, _ = SamEmbeddings(tmp_path).get(model, item["image_file"], item["image"])
    assert torch.allclose(cached, inference, atol=1e-5)
    assert build_model(ModelConfig.tiny_scratch(), phantom_tokenizer).train().sam.image_encoder.training  # it learns


def test_a_mask_pools_the_sam_cells_it_covers_on_the_images_part_of_the_grid():
    """A 4 x 4 grid whose image is 16 x 8 px resized into a 4-cell-high, 2-cell-wide corner: a mask over the
    image's top half averages the top 2 x 2 cells; a mask of 9 pixels or fewer, the image's 4 x 2 cells."""
    embedding = torch.arange(16.0).reshape(1, 4, 4)  # one channel: cell (r, c) holds 4r + c
    top = np.zeros((16, 8), bool)
    top[:8] = True
    assert masked_mean(embedding, top, (16, 8)).item() == (0 + 1 + 4 + 5) / 4
    speck = np.zeros((16, 8), bool)
    speck[0, :3] = True
    assert masked_mean(embedding, speck, (16, 8)).item() == (0 + 1 + 4 + 5 + 8 + 9 + 12 + 13) / 8


def test_the_language_model_sees_pooled_litemedsam_cells_and_alignment_trains_their_projector(
        tmp_path, phantom_root, phantom_tokenizer):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    cfg.mllm.text["vocab_size"] = len(phantom_tokenizer)
    model = build_model(cfg, phantom_tokenizer).eval()
    item = ImageMaskDataset(phantom_root, "train")[0]
    encoding = model.encode_image(item["image"])
    assert encoding.image_features.shape == (cfg.mllm.image_tokens, 192)
    mask = item["masks"][0].numpy()
    crop = model.crop_tokens(item["image"], [mask], [encoding])
    expected = model.sam_projector(masked_mean(encoding.sam_embedding[0], mask, encoding.input_size)[None])
    assert torch.allclose(crop, expected)

    stage = Alignment(TrainingData(phantom_root, embeddings=tmp_path), phantom_tokenizer, cfg.mllm.image_tokens)
    last = fit(model, stage, StageSettings(steps=1, batch_size=2, warmup=1), tmp_path / "align", progress=False)
    assert np.isfinite(last["loss"]) and stage.embeddings.computed == 2
    learns = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert learns == {"mllm", "sam_projector"}


def test_a_dialogue_on_the_litemedsam_model_runs_its_encoder_once(phantom_root, phantom_tokenizer):
    """Two rounds, the second referring to the first: the image tokens and the reference token both come from
    the one LiteMedSAM pass of ``set_image`` (weights of the MLLM random; answers forced)."""
    from model.predictor import MultiRoundPredictor

    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    cfg.mllm.text["vocab_size"] = len(phantom_tokenizer)
    model = build_model(cfg, phantom_tokenizer).eval()
    passes = []
    model.sam.image_encoder.register_forward_hook(lambda *_: passes.append(1))
    predictor = MultiRoundPredictor(model, phantom_tokenizer, max_length=cfg.mllm.max_length)
    predictor.set_image(ImageMaskDataset(phantom_root, "train")[0]["image"])
    first = predictor.ask("Segment the liver.", answer="Sure, the liver is")
    second = predictor.ask("Segment the lesion inside it.", answer="The lesion inside the liver of round 1 is")
    assert second.reference_index == 0 and second.mask.shape == first.mask.shape == (160, 160)  # found or not
    assert len(passes) == 1
