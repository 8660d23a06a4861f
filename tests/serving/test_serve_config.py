"""The shipped Serve configs are valid Ray Serve deploy configs and wire the three applications."""

import pytest
from ray.serve.schema import ServeDeploySchema

from serving.pipeline import APPS, CONFIGS, load_serve_config
from serving.replicas.settings import SETTINGS, ReasonerSettings, SegmenterSettings


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
        assert gpus == {"ImageEncoder": 0.5, "Reasoner": 1, "Segmenter": 0.5}


def test_the_shipped_cpu_config_says_what_the_settings_dataclasses_say():
    """One home for the defaults: the YAML's args, user_config and options equal ``serving.replicas.settings``."""
    config = load_serve_config(CONFIGS / "cpu-tiny.yaml")
    assert [app["name"] for app in config["applications"]] == list(SETTINGS)
    for app in config["applications"]:
        settings = SETTINGS[app["name"]]()
        (deployment,) = app["deployments"]
        assert deployment["name"] == settings.NAME
        assert {k: v for k, v in app["args"].items() if k not in ("checkpoint", "redis_url")} == settings.args()
        assert deployment["user_config"] == settings.user_config()
        assert deployment["max_ongoing_requests"] == settings.max_ongoing_requests
        assert deployment["ray_actor_options"] == {"num_cpus": settings.num_cpus}


@pytest.mark.parametrize("name", ["cpu-tiny.yaml", "gpu-full.yaml"])
def test_every_setting_in_a_shipped_config_is_one_the_deployments_know(name):
    for app in load_serve_config(CONFIGS / name)["applications"]:
        settings = SETTINGS[app["name"]]
        assert set(app["args"]) - {"checkpoint", "redis_url"} <= set(settings.ARGS)
        (deployment,) = app["deployments"]
        assert settings().with_user_config(deployment["user_config"]).user_config() == deployment["user_config"]


def test_an_unknown_user_config_key_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"Reasoner user_config has unknown keys \['max_wait'\]; it takes "
                                         r"\['max_batch_size', 'max_wait_s'\]"):
        ReasonerSettings().with_user_config({"max_wait": 0.2})
    assert ReasonerSettings().with_user_config({"max_wait_s": 0.2}).max_wait_s == 0.2


def test_a_replica_needs_at_least_one_torch_thread():
    with pytest.raises(ValueError, match="Segmenter torch_threads must be at least 1, got 0"):
        SegmenterSettings.from_args({"checkpoint": None, "torch_threads": 0})
    assert SegmenterSettings.from_args({"torch_threads": 1}).torch_threads == 1
