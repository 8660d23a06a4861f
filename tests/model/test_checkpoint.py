import pytest
import torch

from model.build import apply_lora
from model.checkpoint import load_checkpoint, read_manifest, save_checkpoint


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trips_bit_exactly(tmp_path, tiny_model, phantom_tokenizer):
    model, cfg = tiny_model
    save_checkpoint(model, phantom_tokenizer, cfg, tmp_path / "ckpt", manifest={"recipe": "test"})
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors", "tokenizer",
                                                               "manifest.json"}
    loaded, tokenizer, loaded_cfg = load_checkpoint(tmp_path / "ckpt")
    assert loaded_cfg == cfg and _same_state(model, loaded)
    assert tokenizer("[SEG] the liver")["input_ids"] == phantom_tokenizer("[SEG] the liver")["input_ids"]
    assert read_manifest(tmp_path / "ckpt") == {"recipe": "test"}


def test_fp16_checkpoint_loads_the_rounded_weights(tmp_path, tiny_model, phantom_tokenizer):
    model, cfg = tiny_model
    save_checkpoint(model, phantom_tokenizer, cfg, tmp_path / "half", dtype=torch.float16)
    loaded, _, _ = load_checkpoint(tmp_path / "half")
    w = model.bbox_encoder.weight
    assert torch.equal(loaded.bbox_encoder.weight, w.half().float()) and not torch.equal(w.half().float(), w)


def test_lora_checkpoint_keeps_its_adapter(tmp_path, tiny_model, phantom_tokenizer):
    model, cfg = tiny_model
    apply_lora(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained-looking adapter (peft starts B at zero)
    save_checkpoint(model, phantom_tokenizer, cfg, tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").exists()
    loaded, _, _ = load_checkpoint(tmp_path / "lora")
    assert _same_state(model, loaded)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_model, phantom_tokenizer):
    model, cfg = tiny_model
    save_checkpoint(model, phantom_tokenizer, cfg, tmp_path / "ckpt")
    cfg.jcm.hidden = 64
    cfg.save(tmp_path / "ckpt" / "config.json")
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="not a MediRound checkpoint"):
        load_checkpoint(tmp_path)


def test_the_shipped_mask_decoder_upscales_channels_last_and_decodes_as_the_plain_layout_does():
    """The layout ``build_sam`` gives the transposed convolutions survives loading, and changes the masks by
    float rounding only."""
    from torch import nn

    from model.config import SHIPPED_TINY

    model, _, _ = load_checkpoint(SHIPPED_TINY)
    upscaling = [m for m in model.sam.mask_decoder.output_upscaling if isinstance(m, nn.ConvTranspose2d)]
    assert upscaling and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in upscaling)
    torch.manual_seed(0)
    embedding, prompts = torch.randn(1, 256, 64, 64), torch.randn(3, 256)
    with torch.inference_mode():
        fast = model.decode_masks(embedding, prompts, (256, 256), (300, 300))
        for m in upscaling:
            m.weight.data = m.weight.data.contiguous()
        plain = model.decode_masks(embedding, prompts, (256, 256), (300, 300))
    assert torch.allclose(fast, plain, atol=1e-4) and ((fast > 0) == (plain > 0)).float().mean() > 0.999


def test_the_shipped_model_encodes_in_bf16_only_where_the_cpu_computes_it_natively():
    """Where it does, the embedding moves by bf16 rounding alone and the masks little; elsewhere (and with
    ``bf16_inference`` off) it is fp32 exactly."""
    from model.config import SHIPPED_TINY
    from model.data.images import load_image
    from model.data.real import REAL_SLICES
    from model.mediround import native_bf16

    model, _, _ = load_checkpoint(SHIPPED_TINY)
    image = torch.from_numpy(load_image(REAL_SLICES / "images" / "amos_0006_90.png")).permute(2, 0, 1)
    size = tuple(image.shape[-2:])
    torch.manual_seed(0)
    prompts = torch.randn(3, 256)
    with torch.inference_mode():
        fast, sizes = model.sam_embed([image])
        fast_masks = model.decode_masks(fast, prompts, sizes[0], size) > 0
        model.bf16_inference = False
        exact, _ = model.sam_embed([image])
        exact_masks = model.decode_masks(exact, prompts, sizes[0], size) > 0
    assert fast.dtype == exact.dtype == model.dtype
    error = ((fast - exact).norm() / exact.norm()).item()  # measured: 0.094 (the first convolutions' rounding)
    if native_bf16(model.device):
        assert 0 < error < 0.15
        assert exact_masks.any(dim=(1, 2)).all()
        dice = (2 * (fast_masks & exact_masks).sum() / (fast_masks.sum() + exact_masks.sum())).item()
        assert dice > 0.85, dice  # random prompts' ragged masks (1-5% of the image)
    else:
        assert error == 0 and torch.equal(fast_masks, exact_masks)
