"""MediRound: the LLaVA MLLM, the [SEG] projection, the reference encoders, SAM and the JCM, composed.

The module exposes the model's steps one by one, so that training (teacher forcing), the
multi-round predictor (generation with a key/value cache) and the serving deployments (which run
the steps on different replicas) share one code path:

    encode_image      -> SAM image embedding + the language model's image tokens (once per image): LLaVA patch
                         features, or the SAM embedding pooled and projected (``sam_projector``)
    reference_tokens  -> the [CROPPEDIMAGE] and [BBOXINPUT] embeddings of a referenced mask (§4)
    embed             -> input embeddings with image / crop / box positions filled in
    language          -> last hidden states and logits of the language model (with a cache)
    seg_prompts       -> text_hidden_fcs: [SEG] hidden state (N, d) -> SAM prompt (N, P)   (§3)
    decode_masks      -> SAM mask decoder -> mask logits at the original resolution, refined by a
                         guided filter on the image where the config asks for it (at a bounded size)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import guided_blur
from torch import nn

from model.jcm import JCM
from model.preprocess import clip_input, sam_input, shrink, working_size
from model.reference import reference_box, reference_crop


@dataclass
class ImageEncoding:
    """What both encoders make of one image: computed once, reused by every round."""

    sam_embedding: torch.Tensor  # (1, P, g, g)
    image_features: torch.Tensor  # (T, d) projected LLaVA patch features
    input_size: tuple[int, int]  # (h, w) inside the padded SAM input
    original_size: tuple[int, int]  # (H, W)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a CPU that computes bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 on a CPU
    is emulated and slower than fp32. (torch exposes the check only as ``torch.cpu``'s private helpers.)"""
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def masked_mean(embedding: torch.Tensor, mask: np.ndarray | None, input_size: tuple[int, int]) -> torch.Tensor:
    """The (P,) mean of a (P, g, g) SAM embedding over the cells a (H, W) mask covers (weighted by how much), on
    the image's part of the padded grid; the whole image for a mask of <= 9 pixels."""
    grid = embedding.shape[-1]
    h, w = (min(grid, math.ceil(n * grid / max(input_size))) for n in input_size)  # the cells the image covers
    if mask is None or int(np.count_nonzero(mask)) <= 9:
        weights = torch.ones(h, w)
    else:
        m = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
        weights = F.adaptive_avg_pool2d(m, (h, w))[0, 0]  # share of each cell inside the mask
    weights = weights.to(embedding.device, embedding.dtype)
    region = embedding[:, :h, :w]
    return (region * weights).sum((-2, -1)) / weights.sum().clamp(min=1e-6)


class MediRound(nn.Module):
    """Composition of the parts built by ``model.build``; holds no sizes of its own."""

    def __init__(self, *, mllm: nn.Module, sam: nn.Module, text_hidden_fcs: nn.Module, bbox_encoder: nn.Module,
                 jcm: JCM, token_ids: dict[str, int], sam_projector: nn.Module | None = None, sam_pool: int = 8,
                 vision_feature_layer: int = -2,
                 guided_filter_eps: float | None = None,
                 sam_input: Callable[[torch.Tensor, int], tuple[torch.Tensor, tuple[int, int]]] = sam_input,
                 pretrained_sam_encoder: str = ""):
        super().__init__()
        self.mllm, self.sam = mllm, sam  # LlavaForConditionalGeneration, segment-anything Sam
        self.text_hidden_fcs, self.bbox_encoder, self.jcm = text_hidden_fcs, bbox_encoder, jcm
        # with a SAM projector the language model sees the SAM embedding (pooled), not the LLaVA vision tower
        self.sam_projector, self.sam_pool = sam_projector, sam_pool
        self.token_ids = dict(token_ids)
        self.vision_feature_layer = vision_feature_layer
        self.guided_filter_eps = guided_filter_eps
        self.sam_input = sam_input  # the SAM's own preprocessing: SAM's (mean/std) or LiteMedSAM's (min-max)
        # names a pretrained SAM encoder that never learns here (its embeddings may be cached on disk under this
        # name); "" when the encoder is trained here
        self.pretrained_sam_encoder = pretrained_sam_encoder
        # a frozen pretrained encoder runs in bf16 where the CPU computes it natively (``_encoder_precision``); False
        # keeps it fp32
        self.bf16_inference = True

    def train(self, mode: bool = True) -> MediRound:
        """``nn.Module.train``, except that a pretrained SAM encoder always stays in eval mode: it never learns
        here, and LiteMedSAM's TinyViT holds BatchNorm, which in training mode would normalise each image by its
        own statistics instead of the pretrained ones (embeddings unlike those inference computes)."""
        super().train(mode)
        if self.pretrained_sam_encoder:
            self.sam.image_encoder.eval()
        return self

    # -- parts ---------------------------------------------------------------------------------
    @property
    def llava(self) -> nn.Module:
        """The ``LlavaModel`` inside the generation wrapper (vision tower, projector, language model)."""
        return self.mllm.model

    @property
    def clip_size(self) -> int:
        return self.llava.config.vision_config.image_size

    @property
    def image_tokens(self) -> int:
        """How many ``<image>`` positions one image fills: pooled SAM cells, or the vision tower's patches."""
        if self.sam_projector is not None:
            return self.sam_pool**2
        return (self.clip_size // self.llava.config.vision_config.patch_size) ** 2

    @property
    def device(self) -> torch.device:
        return self.bbox_encoder.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.bbox_encoder.weight.dtype

    # -- vision --------------------------------------------------------------------------------
    def sam_embed(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """uint8 (3, H, W) images -> SAM image embeddings (N, P, g, g) and their resized sizes."""
        inputs = [self.sam_input(im.to(self.device), self.sam.image_encoder.img_size) for im in images]
        x = torch.stack([x for x, _ in inputs]).to(self.dtype)
        with self._encoder_precision():
            embedding = self.sam.image_encoder(x)
        return embedding.to(self.dtype), [size for _, size in inputs]

    def _encoder_precision(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for a frozen pretrained encoder where ``bf16_inference`` is on and the device is a CPU with
        native bf16; fp32 otherwise, and always for an encoder that learns here. Measured on 2 cores: LiteMedSAM's
        encoder 0.88 -> 0.43 s an image (its embedding 9% off fp32 in norm, per-cell cosine 0.996; the shipped
        checkpoint's held-out Dice moved by at most 0.3 points), and the same embedding whether an image is encoded
        alone or beside others. The mask decoder stays fp32 when serving: in bf16 (56 -> 47 ms a mask) its masks
        depend on how many are decoded together, so a served round would differ from the same round in-process.
        (A training stage sets its own precision: ``StageSettings.bf16``.)"""
        if self.pretrained_sam_encoder and self.bf16_inference and native_bf16(self.device):
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def vision_layer(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Hidden states of the selected vision layer (N, 1 + T, c), CLS first."""
        x = torch.stack([clip_input(im.to(self.device), self.clip_size) for im in images]).to(self.dtype)
        out = self.llava.vision_tower(x, output_hidden_states=True)
        return out.hidden_states[self.vision_feature_layer]

    def image_features(self, images: list[torch.Tensor], sam_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """The image tokens (N, T, d) that fill the ``<image>`` positions: projected LLaVA patch features, or with
        a SAM projector the SAM embeddings (N, P, g, g) (computed unless given) average-pooled and projected."""
        if self.sam_projector is None:
            return self.llava.multi_modal_projector(self.vision_layer(images)[:, 1:])
        if sam_embeddings is None:
            sam_embeddings, _ = self.sam_embed(images)
        pooled = F.adaptive_avg_pool2d(sam_embeddings, self.sam_pool)  # (N, P, s, s)
        return self.sam_projector(pooled.flatten(2).transpose(1, 2).to(self.dtype))  # (N, s * s, d)

    def encode_image(self, image: torch.Tensor) -> ImageEncoding:
        """Both encodings of one uint8 (3, H, W) image (the SAM encoder runs once)."""
        emb, sizes = self.sam_embed([image])
        return ImageEncoding(emb, self.image_features([image], emb)[0], sizes[0], tuple(image.shape[-2:]))

    def crop_tokens(self, image: torch.Tensor | list[torch.Tensor], masks: list[np.ndarray | None],
                    encodings: list[ImageEncoding] | None = None) -> torch.Tensor:
        """``[CROPPEDIMAGE]`` embeddings (N, d) of each mask on the uint8 (3, H, W) image (one for all masks, or
        one per mask): the masked object cut out, square-padded, vision CLS of the selected layer, projected;
        with a SAM projector, the image's SAM embedding (from ``encodings``, one per mask) averaged inside the
        mask, projected. Masks of <= 9 pixels: the whole image."""
        images = image if isinstance(image, list) else [image] * len(masks)
        if self.sam_projector is not None:
            if encodings is None:
                encodings = [self.encode_image(im) for im in images]
            pooled = [masked_mean(e.sam_embedding[0], m, e.input_size) for e, m in zip(encodings, masks, strict=True)]
            return self.sam_projector(torch.stack(pooled).to(self.dtype))  # (N, d)
        crops = [torch.from_numpy(reference_crop(im.permute(1, 2, 0).cpu().numpy(), m)).permute(2, 0, 1)
                 for im, m in zip(images, masks, strict=True)]
        return self.llava.multi_modal_projector(self.vision_layer(crops)[:, 0])  # (N, d)

    def reference_tokens(self, image: torch.Tensor | list[torch.Tensor], masks: list[np.ndarray | None],
                         encodings: list[ImageEncoding] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``[CROPPEDIMAGE]`` and ``[BBOXINPUT]`` embeddings (N, d) of each referenced mask (H, W) (§4),
        on one image or one image per mask (``encodings``: theirs, one per mask, saves a SAM pass)."""
        images = image if isinstance(image, list) else [image] * len(masks)
        boxes = torch.from_numpy(np.stack([reference_box(m, tuple(im.shape[-2:]))
                                           for im, m in zip(images, masks, strict=True)]))
        return self.crop_tokens(images, masks, encodings), self.bbox_encoder(boxes.to(self.device, self.dtype))

    # -- language ------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, *, image_features: torch.Tensor | None = None,
              crop_tokens: torch.Tensor | None = None, box_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings (B, L, d) with the image, crop and box positions filled, row by row in order."""
        x = self.mllm.get_input_embeddings()(input_ids)
        for name, values in (("image", image_features), ("crop", crop_tokens), ("box", box_tokens)):
            where = input_ids == self.token_ids[name]
            n = int(where.sum())
            if values is None:
                if n:
                    raise ValueError(f"the sequence has {n} {name} tokens but no {name} embeddings were given")
                continue
            values = values.reshape(-1, x.shape[-1])
            if values.shape[0] != n:
                raise ValueError(f"{n} {name} tokens in the sequence but {values.shape[0]} {name} embeddings")
            x = x.masked_scatter(where[..., None], values.to(x.dtype))
        return x

    def language(self, inputs_embeds: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                 cache=None, position_ids: torch.Tensor | None = None):
        """The language model: (last hidden states (B, L, d), logits (B, L, V), cache)."""
        out = self.llava.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache,
                                        position_ids=position_ids, use_cache=cache is not None)
        hidden = out.last_hidden_state
        return hidden, self.mllm.lm_head(hidden), out.cache

    def seg_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool (B, L): positions whose next token is ``[SEG]`` (their hidden state is h_c, §3)."""
        nxt = torch.zeros_like(input_ids, dtype=torch.bool)
        nxt[:, :-1] = input_ids[:, 1:] == self.token_ids["seg"]
        return nxt

    # -- masks ---------------------------------------------------------------------------------
    def seg_prompts(self, hidden: torch.Tensor) -> torch.Tensor:
        """[SEG] hidden states (N, d) -> SAM sparse prompts (N, P)."""
        return self.text_hidden_fcs(hidden)

    def decode_masks(self, sam_embedding: torch.Tensor, prompts: torch.Tensor, input_size: tuple[int, int],
                     original_size: tuple[int, int], image: torch.Tensor | None = None) -> torch.Tensor:
        """Prompts (N, P) on one image embedding (1, P, g, g) -> mask logits (N, H, W); foreground is > 0.

        Given the uint8 (3, H, W) ``image``, the logits are refined on it (``postprocess``)."""
        pe = self.sam.prompt_encoder
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(prompts.shape[0], -1, *sam_embedding.shape[-2:])
        low_res, _ = self.sam.mask_decoder(image_embeddings=sam_embedding, image_pe=pe.get_dense_pe(),
                                           sparse_prompt_embeddings=prompts[:, None, :].to(sam_embedding.dtype),
                                           dense_prompt_embeddings=dense, multimask_output=False)
        return self.postprocess(low_res, input_size, original_size, image)[:, 0]

    def postprocess(self, low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int],
                    image: torch.Tensor | None = None) -> torch.Tensor:
        """Low-res logits (N, 1, h, w) -> SAM input size -> padding cropped -> original (N, 1, H, W).

        With ``image`` and a ``guided_filter_eps``, the foreground probability is then guided-filtered
        on the grey image over a window of one low-res cell each side, and returned as logits. The filter
        works at ``working_size`` (the original up to 512 px a side), so its cost stops growing with the
        image: a larger image's refined logits are upsampled to the original size."""
        side = self.sam.image_encoder.img_size
        x = F.interpolate(low_res.float(), (side, side), mode="bilinear", align_corners=False)
        x = x[..., : input_size[0], : input_size[1]]
        if image is None or self.guided_filter_eps is None:
            return F.interpolate(x, original_size, mode="bilinear", align_corners=False)
        work = working_size(original_size)
        x = F.interpolate(x, work, mode="bilinear", align_corners=False)
        cell = max(work) / max(input_size) * side / low_res.shape[-1]  # working pixels per low-res cell
        radius = max(1, round(cell))
        grey = shrink(image.to(x.device)).to(torch.float32).mean(0)[None, None] / 255
        # the N masks as channels of one input: the guide's window statistics are computed once, not N times
        prob = guided_blur(grey, torch.sigmoid(x).transpose(0, 1), 2 * radius + 1, self.guided_filter_eps)
        x = torch.logit(prob.transpose(0, 1).clamp(1e-6, 1 - 1e-6))
        if work == tuple(original_size):
            return x
        return F.interpolate(x, original_size, mode="bilinear", align_corners=False)

    def box_masks(self, sam_embedding: torch.Tensor, boxes: torch.Tensor, input_size: tuple[int, int],
                  original_size: tuple[int, int], image: torch.Tensor | None = None) -> torch.Tensor:
        """Box-prompted SAM (pixel xyxy boxes (N, 4) in the original image) -> mask logits (N, H, W).

        The MedSAM-style path: used to pretrain the tiny SAM and as the upper-bound baseline.
        """
        scale = boxes.new_tensor([input_size[1] / original_size[1], input_size[0] / original_size[0]] * 2)
        sparse, dense = self.sam.prompt_encoder(points=None, boxes=boxes * scale, masks=None)
        low_res, _ = self.sam.mask_decoder(image_embeddings=sam_embedding,
                                           image_pe=self.sam.prompt_encoder.get_dense_pe(),
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=False)
        return self.postprocess(low_res, input_size, original_size, image)[:, 0]
