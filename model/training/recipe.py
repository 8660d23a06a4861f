"""Training recipes: data, tokenizer and the stages in order, resumable, in-process or on Ray Train.

``run_recipe(TINY, out)`` makes the shipped tiny checkpoint from nothing: phantom data and the
real-brain data (Colin27 + AAL, ``model.data.brain``) if absent, a BPE tokenizer trained on both
sets' dialogues, then box-prompted SAM pretraining, image-text alignment, MediRound stage 1 and
JCM stage 2, every stage on phantoms with the brain mixed in at a fixed share of its items (brain
items through augmented training views, the dialogue stages' questions reworded). Each finished
stage leaves ``out/<stage>/checkpoint``, and a pretrained SAM encoder's embedding of each training view is
kept in ``out/embeddings`` (computed once); a rerun skips finished stages and resumes the interrupted
one from its ``state.pt``. Each stage records its training time summed over the runs that made it
(``seconds.json``; the data and tokenizer likewise), so the manifest's total is the from-scratch
time even across reruns. Last, the JCM's quality is calibrated on the validation splits
(``model.training.calibration``) and the final checkpoint written in half precision.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from model.build import apply_lora, build_model, has_lora
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data.brain.augment import BrainAugment
from model.data.rewording import TextAugment
from model.tokenizer import load_tokenizer, train_tokenizer
from model.training.distributed import fit_on_ray
from model.training.loop import StageSettings, fit
from model.training.mixture import TrainingData
from model.training.registry import check_stage_name, make_stage
from model.training.stages import seed_everything

POSITION_WORDS = "upper middle lower left center right"


@dataclass(frozen=True)
class BrainData:
    """The real-brain dialogues a recipe mixes into every stage, and how they are generated and shown."""

    seed: int = 0
    scale: float = 1.0
    """Dialogues per slice, times the generator's defaults (``model.data.brain.generate.default_splits``)."""
    stride: int = 1
    """Every n-th slice of each slab (1: all of them; more for quick runs)."""
    share: float = 0.25
    """Share of every stage's training items (and so of every batch, on average) drawn from the brain."""
    augment: BrainAugment = field(default_factory=BrainAugment)
    dialogue_views: int = 4
    """Views per slice in stage 1 and JCM (SAM and alignment get ``augment.variants``): those stages cache
    each view's encodings and crops, ~50 ms and ~6 ms per reference mask on 2 cores, once per view."""


@dataclass
class Recipe:
    """How to make a checkpoint: the model size, the data and the stages with their settings."""

    name: str
    model: str = "tiny"
    data_seed: int = 0
    data_scale: float = 1.0
    """Phantom dataset scale (1.0 = the default split sizes)."""
    brain: BrainData | None = None
    """The real brain mixed into every stage; None trains on phantoms alone."""
    text: TextAugment | None = None
    """Rewording of the training questions (stage 1 and JCM); None keeps the generators' wording."""
    vocab_size: int = 1024
    lora: bool = False
    """The text stage and stage 1 train LoRA adapters on the language model's q/v instead of all its weights."""
    stages: list[tuple[str, StageSettings]] = field(default_factory=list)
    """(stage name in ``registry.STAGES``, its settings), in the order they run."""

    def __post_init__(self):
        for name, _ in self.stages:
            check_stage_name(name)  # here, not in a Ray worker halfway through the run


# The tiny model stands on LiteMedSAM: its encoder is frozen, so every training view is encoded once (0.43 s in bf16,
# 0.88-1.1 s in fp32 on 2 cores) and cached in out/embeddings; 4 views per brain slice in every stage (1,500 phantom
# images + 301 x 4 brain views, ~20 min of encoding once in bf16). Its mask decoder costs ~0.3 s per mask forward and
# backward here (SAM's two-way transformer over 64 x 64 x 256 and the upscaling to 256 x 256), so the stages decode a
# few masks per item a step (``masks_per_item``) while the text loss covers every round; and the ``text`` stage first
# teaches the language model the answers alone (no mask decoded, ~0.3 s a step against ~1.8 s for stage 1: a first run
# without it ended stage 1 with garbled answers, 44% of names right on 12 phantom test dialogues). The SAM stage
# fine-tunes the pretrained decoder box-prompted at a low lr (it starts from MedSAM's weights). The earlier recipe
# over a SAM trained from nothing (model "tiny-scratch": sam 1500 steps at lr 1e-3, 8 views per slice, every round's
# mask decoded) measured 8692 s from nothing on 2 cores (data 124, sam 1735, align 819, stage 1 4845, JCM 1169). Stage
# 1 also decodes a quarter of its dialogues' masks from a jittered box (``box_share``): without it the shipped run's
# decoder forgot box prompts (Table 3 box-prompted, after the sam stage -> after stage 1 and JCM: real CT 76.6 ->
# 68.5, brain test 75.4 -> 57.7). Stage 1 reads the brain in half its items (the shipped run: a quarter): the shipped
# checkpoint continued 1,000 steps at three quarters moved held-out brain Dice (test_shipped's regression slices) 25.6
# -> 31.7 and phantoms 88.9 -> 90.2. Every stage runs its forward passes in bf16 where the CPU has it natively
# (``StageSettings.bf16``; measured per step, fp32 -> bf16: sam 2.7 -> 1.9 s, text 0.38 -> 0.34, stage 1 3.0 -> 1.7,
# JCM 1.8 -> 1.4) and LiteMedSAM encodes in bf16 (0.43 s an image against 0.88): a run must fit in one session, whose
# machine keeps no runs/ for the next.
TINY = Recipe(
    name="tiny",
    brain=BrainData(augment=BrainAugment(variants=4)),
    text=TextAugment(),
    stages=[
        ("sam", StageSettings(steps=300, batch_size=8, lr=1e-4, warmup=30, weight_decay=0.01, masks_per_item=2,
                              bf16=True)),
        ("align", StageSettings(steps=1000, batch_size=16, lr=1e-3, warmup=50, weight_decay=0.01, bf16=True)),
        ("text", StageSettings(steps=4000, batch_size=8, lr=3e-4, warmup=100, bf16=True)),
        ("mediround", StageSettings(steps=1800, batch_size=8, lr=3e-4, warmup=100, masks_per_item=1, box_share=0.25,
                                    brain_share=0.5, bf16=True)),
        ("jcm", StageSettings(steps=600, batch_size=8, lr=1e-3, warmup=50, masks_per_item=1, bf16=True)),
    ],
)
# The same run with the generators' wording only: the ablation that measures what rewording does. Run it in a
# copy of a tiny run's tokenizer/, sam/ and align/ (the rerun skips them), so only stage 1 and JCM differ.
TINY_PLAIN_TEXT = replace(TINY, name="tiny-plain-text", text=None)
# Every part of the tiny recipe in a few minutes (small data, 10 steps a stage): proves the wiring, trains nothing.
TINY_SMOKE = replace(TINY, name="tiny-smoke", data_scale=0.02, brain=replace(TINY.brain, scale=0.34, stride=6),
                     stages=[(name, replace(s, steps=10, warmup=2, save_every=5)) for name, s in TINY.stages])
RECIPES = {r.name: r for r in (TINY, TINY_PLAIN_TEXT, TINY_SMOKE)}


def prepare_data(recipe: Recipe, data: Path) -> None:
    """Generate the phantom dataset unless ``data`` already holds one."""
    if (data / "dataset.json").exists():
        return
    from model.data.phantoms.generate import default_splits, generate_dataset

    generate_dataset(data, seed=recipe.data_seed, splits=default_splits(recipe.data_scale))


def prepare_brain(recipe: Recipe, brain: Path) -> None:
    """Generate the real-brain dataset unless ``brain`` already holds one (or the recipe uses none)."""
    if recipe.brain is None or (brain / "dataset.json").exists():
        return
    from model.data.brain.generate import default_splits, generate_dataset

    b = recipe.brain
    generate_dataset(brain, seed=b.seed, splits=default_splits(b.scale), stride=b.stride)


def prepare_tokenizer(recipe: Recipe, data: Path, out: Path, brain: Path | None = None):
    """The recipe's tokenizer: trained on the training dialogues (plus caption and rewording words) once, then
    reused. ``brain``: the real-brain root whose dialogues it also learns (when the recipe mixes it in)."""
    path = out / "tokenizer"
    if (path / "tokenizer.json").exists():
        return load_tokenizer(str(path))
    from model.data.brain.scene import MODALITY as BRAIN_MODALITY
    from model.data.mrmedseg import load
    from model.data.phantoms.generate import MODALITIES
    from model.data.rewording import vocabulary
    from model.data.template import dialogue_text

    roots = [data] + ([brain] if recipe.brain is not None and brain is not None else [])
    texts = [dialogue_text(c.rounds) for root in roots for c in load(root / "train.json")]
    modalities = [*MODALITIES, BRAIN_MODALITY] if len(roots) > 1 else list(MODALITIES)
    texts += [POSITION_WORDS, " ".join(m.replace("_", " ") for m in modalities), "Describe the image."]
    if recipe.text is not None:
        texts.append(" ".join(sorted(vocabulary())))  # the rewording's own words, once each, in the BPE corpus
    tokenizer = train_tokenizer(texts, recipe.vocab_size)
    tokenizer.save_pretrained(path)
    return tokenizer


def training_data(recipe: Recipe, data: Path, brain: Path | None, embeddings: Path | None = None) -> TrainingData:
    """What every stage of ``recipe`` reads; a pretrained SAM encoder's embeddings of its views kept in
    ``embeddings``."""
    if recipe.brain is None:
        return TrainingData(data, text=recipe.text, embeddings=embeddings)
    b = recipe.brain
    return TrainingData(data, brain, b.share, b.augment, b.dialogue_views, recipe.text, embeddings=embeddings)


def stage_training_data(train: TrainingData, settings: StageSettings) -> TrainingData:
    """What one stage reads: ``train`` with the stage's own brain share where it sets one and the brain is mixed in."""
    if settings.brain_share is None or train.brain is None:
        return train
    return replace(train, brain_share=settings.brain_share)


def git_commit() -> str:
    """The commit the code runs from, with ``+dirty`` when tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    try:
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_recipe(recipe: Recipe, out: str | Path, *, data: str | Path | None = None, brain: str | Path | None = None,
               workers: int = 1, use_gpu: bool = False, progress: bool = True) -> Path:
    """Run every stage of ``recipe`` into ``out``; returns the final checkpoint directory.

    ``data`` / ``brain``: the phantom and real-brain dataset roots (default ``out/data``, ``out/brain``),
    generated when missing and needed. ``workers > 1`` runs each stage on Ray Train with that many
    data-parallel workers.
    """
    out = Path(out)
    data = Path(data) if data else out / "data"
    brain = (Path(brain) if brain else out / "brain") if recipe.brain is not None else None
    commit = git_commit()  # the code that runs, taken before anything can change it
    t = time.perf_counter()
    unfinished = any(not (out / name / "checkpoint" / "config.json").exists() for name, _ in recipe.stages)
    calibrated = (out / "calibration.json").exists()
    if unfinished or not calibrated or not (out / "tokenizer" / "tokenizer.json").exists():  # else: no data needed
        prepare_data(recipe, data)
        if brain is not None:
            prepare_brain(recipe, brain)
    tokenizer = prepare_tokenizer(recipe, data, out, brain)
    timings = {"data+tokenizer": _add_seconds(out / "data+tokenizer.seconds.json", time.perf_counter() - t)}
    train = training_data(recipe, data, brain, out / "embeddings")
    cfg = ModelConfig.named(recipe.model)
    cfg.mllm.text["vocab_size"] = len(tokenizer)
    seed_everything(recipe.data_seed)
    model, previous = build_model(cfg, tokenizer), None
    for name, settings in recipe.stages:
        stage_dir = out / name
        if (stage_dir / "checkpoint" / "config.json").exists():
            previous = stage_dir / "checkpoint"
            timings[name] = json.loads((stage_dir / "seconds.json").read_text())["seconds"]
            continue
        if previous is not None:
            model, tokenizer, cfg = load_checkpoint(previous)
        lora = recipe.lora and name in ("text", "mediround")
        if lora and not has_lora(model):
            apply_lora(model)
        stage_data = stage_training_data(train, settings)
        if workers > 1:
            start = previous or _save_start(model, tokenizer, cfg, out / "init")
            fit_on_ray(start, name, settings, stage_dir, data=stage_data, workers=workers, use_gpu=use_gpu, lora=lora)
        else:
            stage = make_stage(name, stage_data, tokenizer, cfg.mllm.image_tokens, lora=lora, settings=settings)
            fit(model, stage, settings, stage_dir, progress=progress)
            save_checkpoint(model, tokenizer, cfg, stage_dir / "checkpoint")
        timings[name] = json.loads((stage_dir / "seconds.json").read_text())["seconds"]  # written by fit
        previous = stage_dir / "checkpoint"
    model, tokenizer, cfg = load_checkpoint(previous)
    calibration = calibrate_on_validation(model, tokenizer, cfg, data, brain, out / "calibration.json",
                                          fit_on=previous, progress=progress)
    timings["calibration"] = calibration["seconds"]
    manifest = {
        "recipe": recipe.name,
        "command": f"mediround train recipe {recipe.name}",
        "data_seed": recipe.data_seed,
        "data_scale": recipe.data_scale,
        "brain": asdict(recipe.brain) if recipe.brain else None,
        "text_augment": asdict(recipe.text) if recipe.text else None,
        "commit": commit,
        "stages": [{"name": n, **asdict(s)} for n, s in recipe.stages],
        "jcm_calibration": calibration,
        "stage_seconds": timings,
        "total_seconds": round(sum(timings.values()), 1),
        "torch": torch.__version__,
    }
    final = save_checkpoint(model, tokenizer, cfg, out / "checkpoint", dtype=torch.float16, manifest=manifest)
    print(json.dumps({"checkpoint": str(final), "stage_seconds": timings}, indent=2))
    return final


def calibrate_on_validation(model, tokenizer, cfg: ModelConfig, data: Path, brain: Path | None, record: Path, *,
                            fit_on: Path, progress: bool = False) -> dict:
    """The JCM's quality calibrated on the validation splits (phantoms, and the brain when mixed in), set on the
    model (the checkpoint ``fit_on``) and its config; fit once and kept in ``record`` with the digest of the
    weights it was fit on, fit again when they differ (a stage trained anew)."""
    weights = hashlib.sha256((fit_on / "model.safetensors").read_bytes()).hexdigest()
    report = json.loads(record.read_text()) if record.exists() else {}
    if report.get("weights_sha256") != weights:
        from model.data.mrmedseg import load
        from model.training.calibration import calibrate_quality

        t = time.perf_counter()
        held_out = [(root, load(root / "val.json")) for root in (data, brain) if root is not None]
        report = {**calibrate_quality(model, tokenizer, cfg, held_out, progress=progress), "weights_sha256": weights,
                  "seconds": round(time.perf_counter() - t, 1)}
        record.write_text(json.dumps(report, indent=2) + "\n")
    model.jcm.calibration = cfg.jcm.calibration = (report["scale"], report["shift"])
    return report


def _add_seconds(path: Path, seconds: float) -> float:
    """``seconds`` added to those ``path`` holds from earlier runs (the from-scratch total), written back."""
    total = round(seconds + (json.loads(path.read_text())["seconds"] if path.exists() else 0.0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seconds": total}) + "\n")
    return total


def _save_start(model, tokenizer, cfg, path: Path) -> Path:
    if not (path / "config.json").exists():
        save_checkpoint(model, tokenizer, cfg, path)
    return path
