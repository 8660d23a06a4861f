"""The one place that imports segment-anything's modelling classes.

``import segment_anything`` runs the package ``__init__``, which imports the predictor and through
it torchvision; torchvision cannot be installed beside the CPU torch wheel. The modelling
submodules are pure torch, so when the package is not imported yet we register it as a bare
namespace (its ``__path__`` only, ``__init__`` skipped) and import the submodules from there.
Everything else in the project imports SAM parts from this module.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _bare_package(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the '{name}' package is not installed: pip install segment-anything==1.0")
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules[name] = package


_bare_package("segment_anything")

from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.common import LayerNorm2d  # noqa: E402

__all__ = ["ImageEncoderViT", "LayerNorm2d", "MaskDecoder", "PromptEncoder", "Sam", "TwoWayTransformer"]
