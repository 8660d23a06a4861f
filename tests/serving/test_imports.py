"""Processes import only what they run: the folder rule of ``serving/`` as code. Every module of the front
process (``serving/front/``, its DICOM and HTTP edges, the shared contract, the runtime that starts it, the
client and the command) loads without torch, transformers, kornia, peft or segment-anything."""

import subprocess
import sys
from pathlib import Path

import serving

MODEL_STACK = ("torch", "transformers", "kornia", "segment_anything", "peft")
SERVING = Path(serving.__file__).parent
FRONT_PROCESS = ("front", "dicom", "http", "runtime")
SHARED = ("messages", "store", "errors", "pipeline", "client", "cli")


def modules_of_the_front() -> list[str]:
    names = [f"serving.{name}" for name in SHARED]
    for folder in FRONT_PROCESS:
        names += [".".join(p.relative_to(SERVING.parent).with_suffix("").parts).removesuffix(".__init__")
                  for p in sorted((SERVING / folder).rglob("*.py"))]
    return names


def model_stack_loaded_by(modules: list[str]) -> list[str]:
    code = (f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({MODEL_STACK!r})))")
    return eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_every_module_of_the_front_process_imports_no_model_stack():
    modules = modules_of_the_front()
    assert "serving.front.servicer" in modules and "serving.http.app" in modules and len(modules) > 30
    assert model_stack_loaded_by(modules) == []


def test_the_check_sees_a_replica_module_that_does_import_torch():
    assert "torch" in model_stack_loaded_by(["serving.replicas.steps"])
