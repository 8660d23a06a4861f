"""Training recipes: data, tokenizer and the stages in order, resumable, in-process or on Ray Train.

``run_recipe(TINY, out)`` makes the shipped tiny checkpoint from nothing: phantom data (if absent),
a BPE tokenizer trained on its dialogues, then box-prompted SAM pretraining, image-text alignment,
MediRound stage 1 and JCM stage 2. Each finished stage leaves ``out/<stage>/checkpoint``; a rerun
skips finished stages and resumes the interrupted one from its ``state.pt``. Each stage records its
training time summed over the runs that made it (``seconds.json``), so the manifest's total is the
from-scratch time even across reruns.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from model.build import apply_lora, build_model, has_lora
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.tokenizer import load_tokenizer, train_tokenizer
from model.training.distributed import fit_on_ray
from model.training.loop import StageSettings, fit
from model.training.registry import check_stage_name, make_stage
from model.training.stages import seed_everything

POSITION_WORDS = "upper middle lower left center right"


@dataclass
class Recipe:
    """How to make a checkpoint: the model size, the data and the stages with their settings."""

    name: str
    model: str = "tiny"
    data_seed: int = 0
    data_scale: float = 1.0
    """Phantom dataset scale (1.0 = the default split sizes)."""
    vocab_size: int = 1024
    lora: bool = False
    """Stage 1 trains LoRA adapters on the language model's q/v instead of all its weights."""
    stages: list[tuple[str, StageSettings]] = field(default_factory=list)
    """(stage name in ``registry.STAGES``, its settings), in the order they run."""

    def __post_init__(self):
        for name, _ in self.stages:
            check_stage_name(name)  # here, not in a Ray worker halfway through the run


TINY = Recipe(
    name="tiny",
    stages=[
        ("sam", StageSettings(steps=1300, batch_size=8, lr=1e-3, warmup=50, weight_decay=0.01)),
        ("align", StageSettings(steps=900, batch_size=16, lr=1e-3, warmup=50, weight_decay=0.01)),
        ("mediround", StageSettings(steps=5000, batch_size=8, lr=3e-4, warmup=100)),
        ("jcm", StageSettings(steps=2000, batch_size=8, lr=1e-3, warmup=50)),
    ],
)
RECIPES = {"tiny": TINY}


def prepare_data(recipe: Recipe, data: Path) -> None:
    """Generate the phantom dataset unless ``data`` already holds one."""
    if (data / "dataset.json").exists():
        return
    from model.data.phantoms.generate import default_splits, generate_dataset

    generate_dataset(data, seed=recipe.data_seed, splits=default_splits(recipe.data_scale))


def prepare_tokenizer(recipe: Recipe, data: Path, out: Path):
    """The recipe's tokenizer: trained on the training dialogues (plus caption words) once, then reused."""
    path = out / "tokenizer"
    if (path / "tokenizer.json").exists():
        return load_tokenizer(str(path))
    from model.data.mrmedseg import load
    from model.data.phantoms.generate import MODALITIES
    from model.data.template import dialogue_text

    texts = [dialogue_text(c.rounds) for c in load(data / "train.json")]
    texts += [POSITION_WORDS, " ".join(m.replace("_", " ") for m in MODALITIES), "Describe the image."]
    tokenizer = train_tokenizer(texts, recipe.vocab_size)
    tokenizer.save_pretrained(path)
    return tokenizer


def git_commit() -> str:
    """The commit the code runs from, with ``+dirty`` when tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    try:
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_recipe(recipe: Recipe, out: str | Path, *, data: str | Path | None = None, workers: int = 1,
               use_gpu: bool = False, progress: bool = True) -> Path:
    """Run every stage of ``recipe`` into ``out``; returns the final checkpoint directory.

    ``workers > 1`` runs each stage on Ray Train with that many data-parallel workers.
    """
    out = Path(out)
    data = Path(data) if data else out / "data"
    commit = git_commit()  # the code that runs, taken before anything can change it
    t = time.perf_counter()
    prepare_data(recipe, data)
    tokenizer = prepare_tokenizer(recipe, data, out)
    timings = {"data+tokenizer": round(time.perf_counter() - t, 1)}
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
        lora = recipe.lora and name == "mediround"
        if lora and not has_lora(model):
            apply_lora(model)
        if workers > 1:
            start = previous or _save_start(model, tokenizer, cfg, out / "init")
            fit_on_ray(start, name, settings, stage_dir, data=data, workers=workers, use_gpu=use_gpu, lora=lora)
        else:
            stage = make_stage(name, data, tokenizer, cfg.mllm.image_tokens, lora=lora)
            fit(model, stage, settings, stage_dir, progress=progress)
            save_checkpoint(model, tokenizer, cfg, stage_dir / "checkpoint")
        timings[name] = json.loads((stage_dir / "seconds.json").read_text())["seconds"]  # written by fit
        previous = stage_dir / "checkpoint"
    model, tokenizer, cfg = load_checkpoint(previous)
    manifest = {
        "recipe": recipe.name,
        "command": f"mediround train recipe {recipe.name}",
        "data_seed": recipe.data_seed,
        "data_scale": recipe.data_scale,
        "commit": commit,
        "stages": [{"name": n, **asdict(s)} for n, s in recipe.stages],
        "stage_seconds": timings,
        "total_seconds": round(sum(timings.values()), 1),
        "torch": torch.__version__,
    }
    final = save_checkpoint(model, tokenizer, cfg, out / "checkpoint", dtype=torch.float16, manifest=manifest)
    print(json.dumps({"checkpoint": str(final), "stage_seconds": timings}, indent=2))
    return final


def _save_start(model, tokenizer, cfg, path: Path) -> Path:
    if not (path / "config.json").exists():
        save_checkpoint(model, tokenizer, cfg, path)
    return path
