"""The Dockerfile, read statically (no Docker here): what it copies is in the repo and in the build
context, and the paths, pins and user it shares with pyproject and the Helm chart agree."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
INSTRUCTIONS = [line.split(None, 1) for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")]
CHART_VALUES = yaml.safe_load((ROOT / "deploy" / "helm" / "mediround" / "values.yaml").read_text())


def instruction(name: str) -> list[str]:
    return [rest for op, rest in INSTRUCTIONS if op == name]


def test_what_it_copies_exists_and_is_in_the_build_context():
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    sources = [src for rest in instruction("COPY") for src in rest.split()[:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert src.rstrip("/") in allowed, f"{src} is left out of the build context by .dockerignore"


def test_torch_is_the_version_pyproject_pins():
    (torch,) = re.findall(r"^ARG TORCH_VERSION=(\S+)$", DOCKERFILE, re.M)
    assert f"torch=={torch}" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_shipped_checkpoint_is_where_the_chart_looks():
    (link,) = re.findall(r"ln -s (\S+) (\S+)", DOCKERFILE)
    target, path = link
    assert path == CHART_VALUES["model"]["checkpoint"]
    assert target.endswith("/site-packages/model/checkpoints/tiny")  # package data of `model`
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "checkpoints/**/*" in package_data["model"]
    assert (ROOT / "model" / "checkpoints" / "tiny" / "model.safetensors").is_file()


def test_default_command_serves_a_copied_config_on_the_exposed_ports():
    (copied,) = [rest.split()[-1] for rest in instruction("COPY") if rest.startswith("deploy/serve/")]
    (cmd,) = instruction("CMD")
    args = yaml.safe_load(cmd)
    config = args[args.index("--serve-config") + 1]
    assert config.startswith(copied) and (ROOT / "deploy" / "serve" / config[len(copied):]).is_file()
    exposed = {int(p) for rest in instruction("EXPOSE") for p in rest.split()}
    grpc_port = int(args[args.index("--address") + 1].rsplit(":", 1)[1])
    assert exposed == {grpc_port, int(args[args.index("--metrics-port") + 1])}
    assert exposed == {CHART_VALUES["front"]["port"], CHART_VALUES["front"]["metricsPort"]}


def test_runs_as_the_non_root_user_the_chart_expects():
    (user,) = instruction("USER")
    uid, gid = user.strip().split(":")
    security = CHART_VALUES["podSecurityContext"]
    assert (int(uid), int(gid)) == (security["runAsUser"], security["runAsGroup"]) and uid != "0"
    assert f"--uid {uid} --gid {gid}" in DOCKERFILE and f"--gid {gid} mediround" in DOCKERFILE


def test_the_embedded_store_lives_in_a_volume_the_user_can_write():
    assert ["ENV", "MEDIROUND_DATA_DIR=/data"] in INSTRUCTIONS and ["VOLUME", "/data"] in INSTRUCTIONS
    assert "chown 1000:1000 /data" in DOCKERFILE
