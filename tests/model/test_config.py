import pytest

from model.config import JCMConfig, MLLMConfig, ModelConfig, SegConfig


def test_configs_round_trip_through_json(tmp_path):
    for cfg in (ModelConfig.tiny(), ModelConfig.tiny_scratch(), ModelConfig.full("/llava", "/medsam.pth")):
        cfg.save(tmp_path / "c.json")
        assert ModelConfig.load(tmp_path / "c.json") == cfg


def test_tiny_and_full_share_the_architecture_but_not_the_sizes():
    tiny, full = ModelConfig.tiny(), ModelConfig.full()
    assert tiny.mllm.image_tokens == 64 and full.mllm.image_tokens == 576  # 8 x 8 pooled SAM cells; CLIP patches
    assert tiny.mllm.image_source == "sam" and full.mllm.image_source == "clip"
    assert full.seg.prompt_dim == 256 and full.seg.img_size == 1024 and full.jcm.hidden == 512
    assert tiny.mllm.vision_feature_layer == full.mllm.vision_feature_layer == -2
    assert tiny.seg.guided_filter_eps is None and full.seg.guided_filter_eps is None  # MedSAM's masks as published
    assert tiny.seg.encoder == "litemedsam" and tiny.seg.prompt_dim == 256 and tiny.seg.grid == 64
    scratch = ModelConfig.tiny_scratch()
    assert scratch.seg.encoder == "vit" and scratch.mllm.image_source == "clip" and scratch.mllm.image_tokens == 64


def test_a_litemedsam_sam_keeps_its_published_layout():
    with pytest.raises(ValueError, match=r"LiteMedSAM's fixed layout: build it with SegConfig.litemedsam\(\)"):
        SegConfig(encoder="litemedsam")
    with pytest.raises(ValueError, match=r"encoder must be one of \('vit', 'litemedsam'\), got 'sam3'"):
        SegConfig(encoder="sam3")
    assert SegConfig.litemedsam(guided_filter_eps=1e-3).guided_filter_eps == 1e-3
    with pytest.raises(ValueError, match=r"image_source must be one of \('clip', 'sam'\), got 'pixels'"):
        MLLMConfig(image_source="pixels")


def test_bad_values_are_refused_with_what_is_accepted():
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\), got 1.2"):
        JCMConfig(beta=1.2)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SegConfig(img_size=100, patch_size=16)
    with pytest.raises(ValueError, match="guided_filter_eps must be positive or None, got 0"):
        SegConfig(guided_filter_eps=0)
    with pytest.raises(ValueError, match=r"expected one of \['full', 'tiny', 'tiny-scratch'\]"):
        ModelConfig.named("huge")
