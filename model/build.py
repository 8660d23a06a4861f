"""Builders: the only place that turns a ``ModelConfig`` into modules and loads pretrained weights.

``build_model(cfg, tokenizer)`` gives a ``MediRound``; the pretrained LLaVA-Med directory and the
MedSAM state dict named in the config are loaded strictly (every missing or unexpected key is
listed in the error). ``apply_lora`` adds LoRA to the language model's q/v projections only;
``is_lora_parameter`` / ``has_lora`` recognise what it added.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, MistralConfig

from model.config import MLLMConfig, ModelConfig, SegConfig
from model.jcm import JCM
from model.litemedsam import WEIGHTS_SHA256, build_litemedsam, litemedsam_weights_path
from model.mediround import MediRound
from model.preprocess import SAM_MEAN, SAM_STD, litemedsam_input, sam_input
from model.sam_parts import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from model.tokenizer import token_ids
from model.weights import WeightsMismatch, load_strict

LORA_TARGETS = r".*language_model.*\.(q_proj|v_proj)"  # the language model's q/v only, never the CLIP tower's


def llava_config(cfg: MLLMConfig, ids: dict[str, int], vocab_size: int) -> LlavaConfig:
    text = MistralConfig(**{"vocab_size": vocab_size, **cfg.text})
    return LlavaConfig(text_config=text, vision_config=CLIPVisionConfig(**cfg.vision), image_token_index=ids["image"],
                       projector_hidden_act="gelu", vision_feature_layer=cfg.vision_feature_layer,
                       vision_feature_select_strategy="default", tie_word_embeddings=False)


def build_mllm(cfg: MLLMConfig, tokenizer, *, load_pretrained: bool = True) -> LlavaForConditionalGeneration:
    """LLaVA from ``cfg.pretrained`` (strict) or from the config; embeddings grown to fit the tokenizer."""
    if cfg.pretrained and load_pretrained:
        model, info = LlavaForConditionalGeneration.from_pretrained(cfg.pretrained, output_loading_info=True,
                                                                    dtype=torch.float32)
        if info["missing_keys"] or info["unexpected_keys"]:
            raise WeightsMismatch(f"LLaVA checkpoint {cfg.pretrained}", sorted(info["missing_keys"]),
                                  sorted(info["unexpected_keys"]))
    else:
        vocab = max(len(tokenizer), cfg.text.get("vocab_size", 0))
        model = LlavaForConditionalGeneration(llava_config(cfg, token_ids(tokenizer), vocab))
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return model


def build_sam(cfg: SegConfig, *, load_pretrained: bool = True) -> Sam:
    """A segment-anything ``Sam`` of the configured size, as ``build_sam_vit_b`` builds ViT-B; LiteMedSAM always
    with its pretrained weights (its frozen encoder is in no checkpoint of ours)."""
    if cfg.encoder == "litemedsam":
        sam = build_litemedsam(checkpoint=Path(cfg.checkpoint), sha256=None) if cfg.checkpoint \
            else build_litemedsam(checkpoint=litemedsam_weights_path())
        return _channels_last_upscaling(sam)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=cfg.encoder_depth, embed_dim=cfg.encoder_dim, img_size=cfg.img_size, mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=cfg.encoder_heads, patch_size=cfg.patch_size,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=cfg.encoder_global_attn,
            window_size=cfg.window_size, out_chans=cfg.prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=cfg.prompt_dim, image_embedding_size=(cfg.grid, cfg.grid),
                                     input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=cfg.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.prompt_dim,
                                          mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads),
            transformer_dim=cfg.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden),
        pixel_mean=list(SAM_MEAN), pixel_std=list(SAM_STD),
    )
    if cfg.checkpoint and load_pretrained:
        load_sam_weights(sam, cfg.checkpoint)
    return _channels_last_upscaling(sam)


def _channels_last_upscaling(sam: Sam) -> Sam:
    """``sam`` with its mask decoder's transposed convolutions' weights kept channels_last (loading a state dict
    copies into them and keeps that): oneDNN then upscales in that layout, a LiteMedSAM mask in 38 ms instead
    of 53 on 2 cores, equal to float rounding (5e-6 in the logits)."""
    for layer in sam.mask_decoder.output_upscaling:
        if isinstance(layer, nn.ConvTranspose2d):
            layer.weight.data = layer.weight.data.contiguous(memory_format=torch.channels_last)
    return sam


def load_sam_weights(sam: Sam, path: str | Path) -> None:
    """Load a SAM / MedSAM state dict (``medsam_vit_b.pth``) strictly, listing any mismatch."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # training checkpoints wrap the weights
    load_strict(sam, state, f"SAM checkpoint {path}")


def build_model(cfg: ModelConfig, tokenizer, *, load_pretrained: bool = True) -> MediRound:
    """The whole model. ``load_pretrained=False`` skips the base weights (a full checkpoint follows)."""
    mllm = build_mllm(cfg.mllm, tokenizer, load_pretrained=load_pretrained)
    d, p = mllm.config.text_config.hidden_size, cfg.seg.prompt_dim
    sam_projector = None
    if cfg.mllm.image_source == "sam":  # LLaVA's mlp2x_gelu projector, from the SAM embedding's width
        sam_projector = nn.Sequential(nn.LayerNorm(p), nn.Linear(p, d), nn.GELU(), nn.Linear(d, d))
    return MediRound(
        mllm=mllm,
        sam=build_sam(cfg.seg, load_pretrained=load_pretrained),
        text_hidden_fcs=nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, p)),
        bbox_encoder=nn.Linear(4, d),
        jcm=JCM(dim=p, hidden=cfg.jcm.hidden, beta=cfg.jcm.beta, calibration=cfg.jcm.calibration),
        token_ids=token_ids(tokenizer),
        sam_projector=sam_projector,
        sam_pool=cfg.mllm.sam_pool,
        vision_feature_layer=cfg.mllm.vision_feature_layer,
        guided_filter_eps=cfg.seg.guided_filter_eps,
        sam_input=litemedsam_input if cfg.seg.encoder == "litemedsam" else sam_input,
        pretrained_sam_encoder=pretrained_sam_encoder(cfg.seg),
    )


def pretrained_sam_encoder(cfg: SegConfig) -> str:
    """A name for the frozen pretrained SAM encoder ``cfg`` builds ("" for one trained here)."""
    if cfg.encoder != "litemedsam":
        return ""
    return f"litemedsam-{WEIGHTS_SHA256[:12]}" if not cfg.checkpoint else f"litemedsam-{Path(cfg.checkpoint).stem}"


def apply_lora(model: MediRound, *, r: int = 8, alpha: int = 16, dropout: float = 0.05):
    """Inject LoRA into the language model's q_proj / v_proj (in place); returns the peft ``LoraConfig``."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, bias="none")
    inject_adapter_in_model(config, model.mllm)
    return config


def is_lora_parameter(name: str) -> bool:
    """Whether the parameter called ``name`` belongs to a LoRA adapter (peft names them ``...lora_A/B...``)."""
    return "lora_" in name


def has_lora(model: MediRound) -> bool:
    """Whether ``apply_lora`` (or a checkpoint's adapter) has put LoRA into ``model``."""
    return any(is_lora_parameter(name) for name, _ in model.named_parameters())
