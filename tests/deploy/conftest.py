"""Fixtures of the deploy tests: the Helm chart loaded once (Helm 4, offline), its values files, and a
renderer that returns the chart's Kubernetes objects, having checked their RayService against KubeRay's
CRD, so every value set any deploy test renders is one KubeRay accepts."""

from pathlib import Path

import helm_python as helm
import pytest
import yaml

from .kuberay import rayservice_errors

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "mediround"


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def values_file():
    """The values of one of the chart's files, e.g. values_file("values-gpu.yaml")."""
    return lambda name: yaml.safe_load((CHART / name).read_text())


@pytest.fixture(scope="session")
def render(chart):
    """render(values) -> the objects of every manifest, as `helm template mr --namespace med` makes them;
    an error if KubeRay's CRD refuses the RayService among them (render with `chart` to break it on purpose)."""

    def objects(values: dict | None = None) -> list[dict]:
        manifests = chart.render(values or {}, name="mr", namespace="med")
        found = [obj for path, text in sorted(manifests.items()) if path.endswith(".yaml")
                 for obj in yaml.safe_load_all(text) if obj]
        for rayservice in [o for o in found if o["kind"] == "RayService"]:
            errors = rayservice_errors(rayservice)
            assert not errors, f"KubeRay's RayService CRD refuses the chart's RayService with {values or {}}: {errors}"
        return found

    return objects
