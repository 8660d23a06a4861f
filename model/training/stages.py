"""Training stages: for each, which parameters learn, what data it reads and what its loss is.

- ``SamPretraining``   box-prompted SAM, as MedSAM was trained: the whole small SAM of ``tiny-scratch``, or
                       LiteMedSAM's mask decoder on its frozen encoder's cached embeddings (``tiny``);
- ``Alignment``        image -> grounded caption, LLaVA-style (tiny model only: no pretrained LLaVA);
- ``AnswerText``       stage 1's dialogues for their answers alone (CE, no mask decoded), before stage 1;
- ``MediRoundTraining`` stage 1 of the paper: teacher forcing, 1.0 CE + 2.0 BCE + 0.5 Dice (§6);
- ``JCMTraining``      stage 2: only the judge and the corrector learn (§5).

A round about a structure the image does not show ("not in this image", ``Round.has_mask`` False) answers in
words without ``[SEG]``: the dialogue stages train its text (CE) and give it no mask loss; mask and judge terms
average over the rounds that have a mask.

Each reads a :class:`~model.training.mixture.TrainingData` (or just the phantom root): the
phantoms and, in a fixed share, the real brain through its training views. ``loop.fit`` runs any
of them with one loop; ``registry.py`` names them for the recipes.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model.build import is_lora_parameter
from model.data.dataset import collate
from model.data.template import IGNORE_INDEX, IMAGE_TOKEN
from model.mediround import ImageEncoding, MediRound
from model.training.embeddings import SamEmbeddings
from model.training.losses import mask_loss, soft_iou, text_ce
from model.training.mixture import TrainingData


class Stage:
    """One training stage. Subclasses set ``name`` and implement the four methods."""

    name = "stage"

    def trainable(self, name: str) -> bool:
        """Whether the parameter called ``name`` learns in this stage."""
        raise NotImplementedError

    def dataset(self) -> Dataset:
        raise NotImplementedError

    def collate(self, items: list[dict]):
        return items

    def loss(self, model: MediRound, batch) -> dict[str, torch.Tensor]:
        """Named loss terms; ``"loss"`` is the one minimised."""
        raise NotImplementedError


def _weighted(terms: list[tuple[dict, int]]) -> dict[str, torch.Tensor]:
    """Average per-image loss dicts weighted by how many masks each covered."""
    n = sum(k for _, k in terms)
    return {key: sum(d[key] * k for d, k in terms) / n for key in terms[0][0]}


def jittered_boxes(masks: torch.Tensor, jitter: float) -> torch.Tensor:
    """Boxes (N, 4) xyxy of non-empty masks (N, H, W): each mask's tight box with each side moved by up to
    ``jitter`` of the box size, as MedSAM perturbs its training boxes, kept inside the image."""
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        size = (box[2:] - box[:2]).repeat(2)
        box = box + (torch.rand(4) * 2 - 1) * jitter * size
        h, w = m.shape
        boxes.append(box.clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32)))
    return torch.stack(boxes)


class SamPretraining(Stage):
    """Box-prompted segmentation of every labelled instance; the SAM learns (a pretrained encoder excepted,
    whose embeddings are then computed once per view, ``SamEmbeddings``).

    Boxes are the tight mask box with each side moved by up to ``jitter`` of the box size, as
    MedSAM perturbs its training boxes.
    """

    name = "sam"

    def __init__(self, data, *, masks_per_image: int = 6, jitter: float = 0.1):
        self.data, self.masks_per_image, self.jitter = TrainingData.of(data), masks_per_image, jitter
        self.embeddings = SamEmbeddings(self.data.embeddings)

    def trainable(self, name: str) -> bool:
        return name.startswith("sam.")

    def dataset(self) -> Dataset:
        return self.data.images()

    def loss(self, model, batch):
        images = [item["image"] for item in batch]
        if model.pretrained_sam_encoder:
            emb, sizes = self.embeddings.batch(model, [item["image_file"] for item in batch], images)
        else:  # the encoder learns here: nothing to keep
            emb, sizes = model.sam_embed(images)
        terms = []
        for k, item in enumerate(batch):
            keep = [i for i in range(len(item["masks"])) if item["masks"][i].any()]
            chosen = random.sample(keep, min(self.masks_per_image, len(keep)))
            target = item["masks"][chosen]
            logits = model.box_masks(emb[k:k + 1], jittered_boxes(target, self.jitter), sizes[k],
                                     tuple(item["image"].shape[-2:]))
            terms.append((mask_loss(logits, target, bce_weight=1.0, dice_weight=1.0), len(chosen)))
        out = _weighted(terms)
        return {"loss": out["mask"], "bce": out["bce"], "dice": out["dice"]}


CAPTION_ENTITIES = 12
"""Most entities a grounded caption names. Seed-0 phantom images have at most 12; a brain slice carries up to
~30 structures and groups, which made alignment's mixed batches ~1.5 times as long."""


def grounded_caption(names: list[str], masks: torch.Tensor, modality: str, most: int = CAPTION_ENTITIES,
                     rng: random.Random | None = None) -> str:
    """'us thyroid: thyroid lobe upper left, trachea middle center, ...' in reading order.

    An image with more than ``most`` entities gets ``most`` of them drawn by ``rng`` (default: the seeded
    ``random`` module), a new draw on every visit, so across visits every structure is named, small nuclei too.
    """
    if most < 1:
        raise ValueError(f"most must be >= 1, got {most}")
    if len(names) != len(masks):
        raise ValueError(f"{len(names)} names for {len(masks)} masks")
    rows, cols = ("upper", "middle", "lower"), ("left", "center", "right")
    shown = range(len(names)) if len(names) <= most else (rng or random).sample(range(len(names)), most)
    placed = []
    for i in shown:
        name, m = names[i], masks[i]
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(ys):
            r, c = int(3 * ys.float().mean() / m.shape[0]), int(3 * xs.float().mean() / m.shape[1])
            placed.append((r, c, name))
    words = ", ".join(f"{name} {rows[r]} {cols[c]}" for r, c, name in sorted(placed))
    return f"{modality.replace('_', ' ')}: {words}."


class Alignment(Stage):
    """Image -> grounded caption (which entities, where): the vision tower (or the SAM projector, when the
    language model sees the SAM embedding), the projector and the language model learn."""

    name = "align"
    prompt = "Describe the image."

    def __init__(self, data, tokenizer, image_tokens: int):
        self.data, self.tokenizer, self.image_tokens = TrainingData.of(data), tokenizer, image_tokens
        self.embeddings = SamEmbeddings(self.data.embeddings)

    def trainable(self, name: str) -> bool:
        return name.startswith(("mllm.", "sam_projector."))

    def dataset(self) -> Dataset:
        return self.data.images()

    def collate(self, items):
        tok, rows = self.tokenizer, []
        image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        for item in items:
            prompt = tok(f"[INST] {IMAGE_TOKEN}\n {self.prompt} [/INST]", add_special_tokens=False)["input_ids"]
            prompt = [t for p in prompt for t in ([image_id] * self.image_tokens if p == image_id else [p])]
            caption = grounded_caption(item["names"], item["masks"], item["modality"])
            answer = tok(f" {caption} {tok.eos_token}", add_special_tokens=False)["input_ids"]
            ids = [tok.bos_token_id] + prompt + answer
            labels = [IGNORE_INDEX] * (1 + len(prompt)) + answer
            rows.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "image": item["image"],
                         "image_file": item["image_file"]})
        return collate(rows, tok.pad_token_id)

    def loss(self, model, batch):
        embeddings = None
        if model.sam_projector is not None:  # the frozen SAM encoder's, once per view
            embeddings, _ = self.embeddings.batch(model, batch["image_file"], batch["image"])
        x = model.embed(batch["input_ids"], image_features=model.image_features(batch["image"], embeddings))
        _, logits, _ = model.language(x, attention_mask=batch["attention_mask"])
        ce = text_ce(logits, batch["labels"])
        return {"loss": ce, "ce": ce}


class FrozenEncodings:
    """Per-image encodings and per-mask crop tokens, computed once: valid while those encoders are frozen. A
    pretrained SAM encoder's embeddings go to ``embeddings_root`` on disk (``SamEmbeddings``), to outlive the
    stage; the rest stays in memory."""

    def __init__(self, embeddings_root: Path | None = None):
        self.sam = SamEmbeddings(embeddings_root)
        self.features: dict[str, torch.Tensor] = {}
        self.crops: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def image(self, model: MediRound, item: dict) -> ImageEncoding:
        key = item["image_file"]
        embedding, size = self.sam.get(model, key, item["image"])
        if key not in self.features:
            self.features[key] = model.image_features([item["image"]], embedding)[0]
        return ImageEncoding(embedding, self.features[key], size, tuple(item["image"].shape[-2:]))

    @torch.no_grad()
    def crop_tokens(self, model: MediRound, item: dict, rounds: list[int]) -> torch.Tensor:
        """[CROPPEDIMAGE] embeddings (n, d) of the ground-truth referenced masks of ``rounds``."""
        todo = [k for k in rounds if item["reference_files"][k] not in self.crops]
        if todo:
            encodings = [self.image(model, item)] * len(todo)
            tokens = model.crop_tokens(item["image"], [item["reference_masks"][k].numpy() for k in todo], encodings)
            for k, token in zip(todo, tokens, strict=True):
                self.crops[item["reference_files"][k]] = token
        return torch.stack([self.crops[item["reference_files"][k]] for k in rounds])


class MediRoundTraining(Stage):
    """Stage 1 (§6): teacher-forced dialogues; text CE on the answers and mask loss on every [SEG].

    Learns the language model (LoRA on q/v when ``lora``, else all of it), embeddings, lm_head, the
    SAM mask decoder, text_hidden_fcs and bbox_encoder; the two vision encoders stay frozen.
    """

    name = "mediround"
    LEARNS: tuple[str, ...] = ("mllm.lm_head.", "mllm.model.language_model.embed_tokens.", "sam.mask_decoder.",
                               "text_hidden_fcs.", "bbox_encoder.")

    def __init__(self, data, tokenizer, image_tokens: int, *, lora: bool = False, ce_weight: float = 1.0,
                 bce_weight: float = 2.0, dice_weight: float = 0.5, masks_per_dialogue: int | None = None,
                 box_share: float = 0.0, box_jitter: float = 0.1):
        self.data, self.tokenizer, self.image_tokens, self.lora = TrainingData.of(data), tokenizer, image_tokens, lora
        self.weights = (ce_weight, bce_weight, dice_weight)
        self.masks_per_dialogue = masks_per_dialogue
        """Most rounds of a dialogue whose mask is decoded and scored a step (a random draw; None: all of them).
        The text loss always covers every round; the mask decoder is most of a step's cost."""
        self.box_share, self.box_jitter = box_share, box_jitter
        """The share of dialogues whose first decoded round is also decoded from a box (``box_prompted``)."""
        self.frozen = FrozenEncodings(self.data.embeddings)

    def trainable(self, name: str) -> bool:
        if name.startswith(self.LEARNS):
            return True
        if self.lora:
            return is_lora_parameter(name)
        return name.startswith("mllm.model.language_model.")

    def dataset(self) -> Dataset:
        return self.data.dialogues(self.tokenizer, self.image_tokens)

    def collate(self, items):
        return collate(items, self.tokenizer.pad_token_id)

    def seg_states(self, model: MediRound, batch) -> tuple[list[ImageEncoding], torch.Tensor, torch.Tensor]:
        """Encodings per conversation, h_c (N, d) of every round with a mask in order, and the logits (B, L, V)."""
        encodings, crops, boxes = [], [], []
        for item in self._items(batch):
            encodings.append(self.frozen.image(model, item))
            refs = [k for k, r in enumerate(item["references"].tolist()) if r >= 0]
            if refs:
                crops.append(self.frozen.crop_tokens(model, item, refs))
                boxes.append(model.bbox_encoder(item["reference_boxes"][refs].to(model.dtype)))
        x = model.embed(batch["input_ids"], image_features=torch.stack([e.image_features for e in encodings]),
                        crop_tokens=torch.cat(crops) if crops else None, box_tokens=torch.cat(boxes) if boxes else None)
        hidden, logits, _ = model.language(x, attention_mask=batch["attention_mask"])
        seg = model.seg_positions(batch["input_ids"]) & batch["attention_mask"].bool()
        expected = sum(int(found.sum()) for found in batch["has_mask"])
        if int(seg.sum()) != expected:
            raise ValueError(f"{int(seg.sum())} [SEG] tokens for {expected} rounds with a mask: each answer with a "
                             "mask must hold one, an answer without (not in this image) none")
        return encodings, hidden[seg], logits  # (N, d): N rounds with a mask, in order

    @staticmethod
    def _items(batch) -> list[dict]:
        keys = ("image", "image_file", "references", "reference_masks", "reference_boxes", "reference_files", "masks",
                "has_mask")
        return [dict(zip(keys, values, strict=True)) for values in zip(*(batch[k] for k in keys), strict=True)]

    def choose(self, batch) -> tuple[list[list[int]], torch.Tensor]:
        """The rounds with a mask decoded this step: per conversation, their places among its rounds with a mask,
        and their places among all the batch's (the rows of ``seg_states``' h_c)."""
        chosen, flat, start = [], [], 0
        for found in batch["has_mask"]:
            n = int(found.sum())
            places = list(range(n))
            if self.masks_per_dialogue is not None and n > self.masks_per_dialogue:
                places = sorted(random.sample(places, self.masks_per_dialogue))
            chosen.append(places)
            flat += [start + k for k in places]
            start += n
        return chosen, torch.tensor(flat, dtype=torch.long)

    def decode_each(self, model, encodings, prompts, batch, chosen: list[list[int]]):
        """Mask logits per conversation with a chosen round, paired with its ground-truth masks (``prompts``:
        one per chosen round, in order; ``chosen``: from ``choose``)."""
        out, start = [], 0
        for enc, masks, found, places in zip(encodings, batch["masks"], batch["has_mask"], chosen, strict=True):
            n = len(places)
            if n:
                out.append((model.decode_masks(enc.sam_embedding, prompts[start:start + n], enc.input_size,
                                               enc.original_size), masks[found][places]))  # (n, H, W)
            start += n
        return out

    def box_prompted(self, model, encodings, batch, chosen: list[list[int]]):
        """For a ``box_share`` of the conversations with a chosen round, its first chosen round's mask decoded
        from a jittered box of that mask, paired with it: the mask decoder keeps answering box prompts (the
        learner's box, Table 3) while it learns ``[SEG]`` prompts."""
        out = []
        for enc, masks, found, places in zip(encodings, batch["masks"], batch["has_mask"], chosen, strict=True):
            if places and random.random() < self.box_share:
                target = masks[found][places[:1]]  # (1, H, W)
                out.append((model.box_masks(enc.sam_embedding, jittered_boxes(target, self.box_jitter),
                                            enc.input_size, enc.original_size), target))
        return out

    @staticmethod
    def mask_terms(decoded, bce_w: float, dice_w: float, anchor: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mask loss averaged over the decoded rounds; zeros (tied to ``anchor``'s graph) when none has a mask."""
        if not decoded:
            zero = anchor.sum() * 0.0
            return {"mask": zero, "bce": zero.detach(), "dice": zero.detach()}
        return _weighted([(mask_loss(logits, t, bce_weight=bce_w, dice_weight=dice_w), len(t))
                          for logits, t in decoded])

    def loss(self, model, batch):
        ce_w, bce_w, dice_w = self.weights
        encodings, h, logits = self.seg_states(model, batch)
        chosen, rows = self.choose(batch)
        decoded = self.decode_each(model, encodings, model.seg_prompts(h[rows]), batch, chosen)
        decoded += self.box_prompted(model, encodings, batch, chosen)
        masks = self.mask_terms(decoded, bce_w, dice_w, h)
        ce = text_ce(logits, batch["labels"])
        return {"loss": ce_w * ce + masks["mask"], "ce": ce, "bce": masks["bce"], "dice": masks["dice"]}


class AnswerText(MediRoundTraining):
    """Stage 1's dialogues for their text alone: CE on the answers, no mask decoded. The language model learns
    what to say (names, relations, "not in this image") and where ``[SEG]`` goes at a sixth of a stage-1 step's
    cost, before stage 1 spends its decoder steps on the masks."""

    name = "text"
    LEARNS = ("mllm.lm_head.", "mllm.model.language_model.embed_tokens.", "bbox_encoder.")

    def loss(self, model, batch):
        _, _, logits = self.seg_states(model, batch)
        ce = text_ce(logits, batch["labels"])
        return {"loss": ce, "ce": ce}


class JCMTraining(MediRoundTraining):
    """Stage 2 (§5): everything frozen but the JCM; mask loss on corrected vectors + BCE(q, IoU)."""

    name = "jcm"

    def trainable(self, name: str) -> bool:
        return name.startswith("jcm.")

    def loss(self, model, batch):
        _, bce_w, dice_w = self.weights
        with torch.no_grad():
            encodings, h, _ = self.seg_states(model, batch)
            chosen, rows = self.choose(batch)
            prompts = model.seg_prompts(h[rows])  # (N, P): the chosen rounds with a mask
            uncorrected = self.decode_each(model, encodings, prompts, batch, chosen)
            quality = torch.cat([soft_iou(logits, t) for logits, t in uncorrected]) if uncorrected \
                else prompts.new_zeros(0)
        corrected = model.jcm.corrector(prompts)
        decoded = self.decode_each(model, encodings, corrected, batch, chosen)
        masks = self.mask_terms(decoded, bce_w, dice_w, corrected)
        scores = model.jcm.judge(prompts)
        judge = torch.nn.functional.binary_cross_entropy_with_logits(scores, quality) if len(quality) \
            else scores.sum() * 0.0
        return {"loss": masks["mask"] + judge, "bce": masks["bce"], "dice": masks["dice"], "judge": judge,
                "q_target": quality.mean() if len(quality) else quality.new_zeros(())}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
