"""The shipped Serve configs are valid Ray Serve deploy configs and wire the three applications."""

import pytest
from ray.serve.schema import ServeDeploySchema

from serving.app import APPS, CONFIGS, load_serve_config


@pytest.mark.parametrize("name", ["cpu-tiny.yaml", "gpu-full.yaml"])
def test_serve_configs_validate_and_fill_in_the_model(name):
    config = load_serve_config(CONFIGS / name, checkpoint="/models/ckpt", redis_url="redis://r:6379/0",
                               replicas={"Reasoner": 3})
    schema = ServeDeploySchema.model_validate(config)
    assert [a.name for a in schema.applications] == list(APPS)
    assert all(a.args["checkpoint"] == "/models/ckpt" for a in schema.applications)
    assert schema.applications[0].args["redis_url"] == "redis://r:6379/0"
    reasoner = schema.applications[1].deployments[0]
    assert reasoner.name == "Reasoner" and reasoner.num_replicas == 3
    if name == "gpu-full.yaml":  # the LLM alone on a GPU, the SAM stages sharing one
        gpus = {a.deployments[0].name: a.deployments[0].ray_actor_options.num_gpus for a in schema.applications}
        assert gpus == {"ImageEncoder": 0.5, "Reasoner": 1, "MaskDecoder": 0.5}
