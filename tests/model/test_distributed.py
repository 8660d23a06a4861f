"""Ray Train: the same stage on two CPU workers (gloo), gradients averaged, worker 0 writes the stage."""

import csv

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.train import StageSettings


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_two_ray_train_workers_run_a_stage_and_write_the_checkpoint(ray_cluster, tmp_path, tiny_model, phantom_root,
                                                                     phantom_tokenizer):
    from model.distributed import fit_on_ray

    model, cfg = tiny_model
    start = save_checkpoint(model, phantom_tokenizer, cfg, tmp_path / "start")
    result = fit_on_ray(start, "mediround", StageSettings(steps=3, batch_size=2, warmup=1), tmp_path / "stage",
                        data=phantom_root, workers=2)
    assert result.error is None
    with open(tmp_path / "stage" / "losses.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    trained, _, _ = load_checkpoint(tmp_path / "stage" / "checkpoint")
    assert not torch.equal(trained.text_hidden_fcs[0].weight, model.text_hidden_fcs[0].weight)
    assert torch.equal(trained.sam.image_encoder.pos_embed, model.sam.image_encoder.pos_embed)  # frozen
