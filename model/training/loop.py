"""The training loop: one stage, one readable loop, in-process or as one worker of a Ray Train job.

``fit(model, stage, settings, out)`` trains the parameters the stage names with AdamW (linear
warm-up, cosine decay to 10%, gradient clipping), writes ``losses.csv`` and ``curves.png`` to
``out``, saves ``state.pt`` every ``save_every`` steps and resumes from it, and marks the stage
``done`` with its training time in ``seconds.json`` (summed over resumed runs). A stage may run its
forward passes in bf16 (``StageSettings.bf16``) where the CPU computes bf16 natively. With ``world > 1``
(Ray Train sets up the process group) every worker reads its own shard and gradients are
averaged with all-reduce before each step.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from model.mediround import MediRound, native_bf16
from model.training.stages import Stage, seed_everything


@dataclass
class StageSettings:
    """Optimisation settings of one stage (defaults: the paper's stage-1 recipe, §6)."""

    steps: int
    """Optimizer steps."""
    batch_size: int = 8
    """Items per step on each worker."""
    lr: float = 3e-4
    warmup: int = 100
    """Linear warm-up steps; then cosine decay to ``min_lr_ratio * lr``."""
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    clip: float = 1.0
    """Gradient-norm clipping."""
    save_every: int = 200
    seed: int = 0
    masks_per_item: int | None = None
    """Most masks decoded per training item (image or dialogue) a step, drawn at random; None: the stage's own
    default. LiteMedSAM's mask decoder costs ~0.3 s per mask forward and backward on 2 cores, most of a step."""
    box_share: float = 0.0
    """Stage 1: the share of dialogues whose first decoded round is decoded again from a jittered box of its
    mask, so the mask decoder keeps answering box prompts while it learns ``[SEG]`` prompts (one more mask
    each: ~0.3 s)."""
    bf16: bool = False
    """Forward passes under bf16 autocast where the device computes bf16 natively (weights, gradients, optimizer
    and the losses' reductions stay fp32): a stage-1 step 3.0 -> 1.7 s on 2 cores; fp32 elsewhere."""
    brain_share: float | None = None
    """This stage's share of real-brain items, instead of the recipe's (``BrainData.share``); None: the recipe's."""

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.masks_per_item is not None and self.masks_per_item < 1:
            raise ValueError(f"masks_per_item must be >= 1 or None, got {self.masks_per_item}")
        if not 0.0 <= self.box_share <= 1.0:
            raise ValueError(f"box_share must be in [0, 1], got {self.box_share}")
        if self.brain_share is not None and not 0.0 < self.brain_share < 1.0:
            raise ValueError(f"brain_share must be within (0, 1) or None, got {self.brain_share}")

    def lr_at(self, step: int) -> float:
        """Learning-rate multiplier at ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def mark_trainable(model: MediRound, stage: Stage) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` by the stage's rule (a pretrained SAM encoder never learns); returns the parameters
    that learn."""
    params = []
    frozen = "sam.image_encoder." if model.pretrained_sam_encoder else None
    for name, p in model.named_parameters():
        p.requires_grad_(stage.trainable(name) and not (frozen and name.startswith(frozen)))
        if p.requires_grad:
            params.append(p)
    if not params:
        raise ValueError(f"stage '{stage.name}' trains no parameter of this model")
    return params


def shard_batches(stage: Stage, settings: StageSettings, rank: int, world: int):
    """Endless shuffled batches of worker ``rank``'s shard, in the order ``fit`` reads them."""
    dataset = stage.dataset()
    shard = Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
    generator = torch.Generator().manual_seed(settings.seed + rank)
    loader = DataLoader(shard, batch_size=settings.batch_size, shuffle=True, drop_last=len(shard) > settings.batch_size,
                        collate_fn=stage.collate, generator=generator)
    while True:
        yield from loader


def training_precision(settings: StageSettings, device: torch.device) -> contextlib.AbstractContextManager:
    """What a stage's forward passes run under: bf16 autocast where it asks for it and ``device`` has it natively."""
    if settings.bf16 and native_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit(model: MediRound, stage: Stage, settings: StageSettings, out: str | Path, *, rank: int = 0, world: int = 1,
        progress: bool = True) -> dict[str, float]:
    """Train ``stage`` for ``settings.steps`` steps (resuming from ``out/state.pt``); returns the last losses."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(settings.seed + rank)
    params = mark_trainable(model, stage)
    model.train()
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, settings.lr_at)
    step, spent = _resume(model, optimizer, scheduler, out / "state.pt")
    started = time.perf_counter()
    log = _LossLog(out / "losses.csv") if rank == 0 else None
    batches = shard_batches(stage, settings, rank, world)
    bar = tqdm(total=settings.steps, initial=step, desc=stage.name, disable=not progress or rank != 0,
               dynamic_ncols=True)
    last: dict[str, float] = {}
    while step < settings.steps:
        start = time.perf_counter()
        with training_precision(settings, model.device):
            losses = stage.loss(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if world > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= world
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.clip)
        optimizer.step()
        scheduler.step()
        step += 1
        last = {k: float(v.detach()) for k, v in losses.items()}
        if log is not None:
            log.write(step, {**last, "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0],
                             "seconds": time.perf_counter() - start})
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in last.items()})
        if rank == 0 and (step % settings.save_every == 0 or step == settings.steps):
            _save_state(model, optimizer, scheduler, step, spent + time.perf_counter() - started, out / "state.pt")
    bar.close()
    model.eval()
    if rank == 0:
        plot_losses(out / "losses.csv", out / "curves.png", title=stage.name)
        seconds = round(spent + time.perf_counter() - started, 1)  # across resumes: the from-scratch time
        (out / "seconds.json").write_text(json.dumps({"seconds": seconds}) + "\n")
        (out / "done").write_text(f"{step}\n")
    return last


def _trainable_state(model: MediRound) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save_state(model, optimizer, scheduler, step: int, seconds: float, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "seconds": seconds, "model": _trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)  # never leave a half-written state behind


def _resume(model, optimizer, scheduler, path: Path) -> tuple[int, float]:
    """Restore the saved state; returns its step and the training seconds spent up to it."""
    if not path.exists():
        return 0, 0.0
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), float(state.get("seconds", 0.0))


class _LossLog:
    """Appends one CSV row per step; the header is fixed by the first row."""

    def __init__(self, path: Path):
        self.path, self.fields = path, None
        if path.exists():
            with path.open() as f:
                self.fields = next(csv.reader(f), None)

    def write(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


def plot_losses(csv_path: Path, png_path: Path, *, title: str = "", smooth: int = 20) -> Path:
    """A PNG of every loss column against step (moving average over ``smooth`` steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c not in ("step", "lr", "seconds", "grad_norm")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in columns:
        logged = [(float(r["step"]), float(r[c])) for r in rows if r[c]]  # a term may be absent on some steps
        if not logged:
            continue
        steps, y = (np.array(v) for v in zip(*logged, strict=True))
        k = max(1, min(smooth, len(y) // 5 or 1))
        ax.plot(steps[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), label=c)
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
