"""The frozen SAM image embeddings of training views, computed once and kept on disk.

A pretrained SAM encoder (LiteMedSAM) never learns here and is the dominant cost of a training step (about
0.8 s an image on 2 cores against a few ms for the rest of a SAM step), so each training view is encoded
once: the first stage that meets a view writes its embedding (fp16, 2 MiB for 256 x 64 x 64) under
``root/<the encoder's name>.v<VERSION>/``, and every later step and stage, and a rerun of the recipe, reads it
back. Views are named by the dataset's ``image_file`` (``<file>#aug<n>`` for an augmented view, a pure function
of its seed), so a file always holds the embedding of the same pixels. An encoder trained here is frozen only
within a stage: its embeddings stay in memory, for that stage.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from model.mediround import MediRound

VERSION = 2
"""The version of how views are encoded; a file of another version is never read. 2: the encoder in eval mode,
BatchNorm on its pretrained statistics as at inference; 1: in training mode."""


class SamEmbeddings:
    """``batch(model, keys, images)`` -> (embeddings (N, P, g, g), input sizes), each view encoded once."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else None
        self.memory: dict[str, tuple[torch.Tensor, tuple[int, int]]] = {}
        self.computed = 0

    def batch(self, model: MediRound, keys: list[str], images: list[torch.Tensor]
              ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        pairs = [self.get(model, key, image) for key, image in zip(keys, images, strict=True)]
        return torch.cat([e for e, _ in pairs]), [size for _, size in pairs]

    @torch.no_grad()
    def get(self, model: MediRound, key: str, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.root is None or not model.pretrained_sam_encoder:
            if key not in self.memory:
                self.memory[key] = self._compute(model, image)
            return self.memory[key]
        digest = hashlib.sha1(key.encode()).hexdigest()
        file = self.root / f"{model.pretrained_sam_encoder}.v{VERSION}" / digest[:2] / f"{digest}.pt"
        if file.exists():
            saved = torch.load(file, weights_only=True)
            return saved["embedding"].to(model.device, model.dtype), tuple(saved["input_size"])
        embedding, size = self._compute(model, image)
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_suffix(f".{os.getpid()}.tmp")  # a killed run leaves no half-written embedding
        torch.save({"embedding": embedding.half().cpu(), "input_size": list(size), "key": key}, partial)
        partial.replace(file)
        return embedding, size

    def _compute(self, model: MediRound, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        self.computed += 1
        embedding, sizes = model.sam_embed([image])
        return embedding, sizes[0]
