"""Ray Train: one stage on two CPU workers (gloo); gradients are averaged, worker 0 writes the stage.

The workers read different shards, so only averaged gradients give the weights that one process
gets by averaging both shards' gradients before each step; a worker stepping on its own gradients
(no all-reduce) or on their sum (no division) ends elsewhere or logs another gradient norm.
"""

import csv

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.training.loop import StageSettings, mark_trainable, shard_batches
from model.training.registry import make_stage

WORKERS = 2


@pytest.fixture
def ray_cluster():
    import ray  # a dependency of the project: a missing Ray fails the test, never skips it

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _data_parallel_in_one_process(start, stage_name, settings, data, ranks):
    """The stage as the workers ``ranks`` of ``WORKERS`` train it together, computed here in one process.

    Each step: every rank's gradient on its next batch, their mean, clipping, one AdamW step.
    Returns the model and the gradient norm of every step (what ``losses.csv`` logs).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker runs: the same kernels, the same rounding
    try:
        model, tokenizer, cfg = load_checkpoint(start)
        stage = make_stage(stage_name, data, tokenizer, cfg.mllm.image_tokens)
        params = mark_trainable(model, stage)
        model.train()
        optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas,
                                      weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, settings.lr_at)
        shards = [shard_batches(stage, settings, rank, WORKERS) for rank in ranks]
        norms = []
        for _ in range(settings.steps):
            grads = []
            for shard in shards:
                model.zero_grad(set_to_none=True)
                stage.loss(model, next(shard))["loss"].backward()
                grads.append([torch.zeros_like(p) if p.grad is None else p.grad for p in params])
            for p, *per_rank in zip(params, *grads, strict=True):
                p.grad = sum(per_rank) / len(per_rank)
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, settings.clip)))
            optimizer.step()
            scheduler.step()
        return model.eval(), norms
    finally:
        torch.set_num_threads(threads)


def _trained(model):
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def test_two_ray_train_workers_average_their_gradients_and_write_the_checkpoint(ray_cluster, tmp_path, tiny_model,
                                                                                phantom_root, phantom_tokenizer):
    from model.training.distributed import fit_on_ray

    model, cfg = tiny_model
    start = save_checkpoint(model, phantom_tokenizer, cfg, tmp_path / "start")
    settings = StageSettings(steps=3, batch_size=2, warmup=1)
    result = fit_on_ray(start, "mediround", settings, tmp_path / "stage", data=phantom_root, workers=WORKERS)
    assert result.error is None
    with open(tmp_path / "stage" / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    trained, _, _ = load_checkpoint(tmp_path / "stage" / "checkpoint")
    assert torch.equal(trained.sam.image_encoder.pos_embed, model.sam.image_encoder.pos_embed)  # frozen

    averaged, norms = _data_parallel_in_one_process(start, "mediround", settings, phantom_root, ranks=(0, 1))
    alone, _ = _data_parallel_in_one_process(start, "mediround", settings, phantom_root, ranks=(0,))
    expected, own_shard_only = _trained(averaged), _trained(alone)
    assert any(not torch.allclose(expected[n], own_shard_only[n]) for n in expected)  # the shards differ
    weights = dict(trained.named_parameters())
    for name, value in expected.items():
        assert torch.allclose(weights[name], value, rtol=0, atol=1e-6), f"{name} is not the averaged-gradient step"
    assert [float(r["grad_norm"]) for r in rows] == pytest.approx(norms, rel=1e-4)  # a mean, not a sum
