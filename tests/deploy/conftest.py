"""Fixtures of the deploy tests: the Helm chart loaded once (Helm 4, offline), its values files, and a
renderer that returns the chart's Kubernetes objects."""

from pathlib import Path

import helm_python as helm
import pytest
import yaml

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
    """render(values) -> the objects of every manifest, as `helm template mr --namespace med` makes them."""

    def objects(values: dict | None = None) -> list[dict]:
        manifests = chart.render(values or {}, name="mr", namespace="med")
        return [obj for path, text in sorted(manifests.items()) if path.endswith(".yaml")
                for obj in yaml.safe_load_all(text) if obj]

    return objects
