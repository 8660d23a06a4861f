"""One training stage on a Ray cluster: Ray Train's TorchTrainer runs ``loop.fit`` on N workers.

Every worker loads the start checkpoint, builds the stage by name from ``registry.STAGES``, trains
on its shard (gradients all-reduced over gloo on CPU, NCCL on GPU, the process group set up by Ray
Train), and worker 0 writes the stage directory exactly as the in-process run does: ``losses.csv``,
``curves.png``, ``state.pt``, ``checkpoint/``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from model.training.loop import StageSettings
from model.training.mixture import TrainingData


def _resolved(data: TrainingData) -> TrainingData:
    """``data`` with absolute roots: Ray workers run in other directories."""
    return replace(data, phantoms=data.phantoms.resolve(), brain=data.brain.resolve() if data.brain else None,
                   embeddings=data.embeddings.resolve() if data.embeddings else None)


def _worker(config: dict) -> None:
    import ray.train
    import torch

    from model.build import apply_lora, has_lora
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.training.loop import fit
    from model.training.mixture import TrainingData
    from model.training.registry import make_stage

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device() if config["use_gpu"] else "cpu"
    model, tokenizer, cfg = load_checkpoint(config["start"], device=device)
    if config["lora"] and not has_lora(model):
        apply_lora(model)
    settings = StageSettings(**config["settings"])
    stage = make_stage(config["stage"], TrainingData.from_dict(config["data"]), tokenizer, cfg.mllm.image_tokens,
                       lora=config["lora"], settings=settings)
    last = fit(model, stage, settings, config["out"], rank=rank, world=world,
               progress=False)
    if rank == 0:
        save_checkpoint(model, tokenizer, cfg, Path(config["out"]) / "checkpoint")
    ray.train.report(last)


def fit_on_ray(start: str | Path, stage: str, settings: StageSettings, out: str | Path, *,
               data: TrainingData | str | Path, workers: int = 2, use_gpu: bool = False, lora: bool = False,
               threads_per_worker: int = 1):
    """Train ``stage`` from the checkpoint ``start`` on ``workers`` Ray Train workers; returns the Ray result.

    ``data``: the stage's training data (or a phantom dataset root).

    Uses the running Ray cluster if there is one (``RAY_ADDRESS``), else starts a local one.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    out = Path(out).resolve()
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"start": str(Path(start).resolve()), "stage": stage, "settings": asdict(settings),
                           "out": str(out), "data": _resolved(TrainingData.of(data)).to_dict(), "use_gpu": use_gpu,
                           "lora": lora, "threads": threads_per_worker},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": threads_per_worker}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=f"mediround-{stage}", storage_path=str(out / "ray")),
    )
    return trainer.fit()
