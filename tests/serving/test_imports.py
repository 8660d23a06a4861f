"""Processes import only what they run: the gRPC front (servicer, dialogue, store, the Serve handles)
needs no torch, transformers, kornia or segment-anything."""

import subprocess
import sys

MODEL_STACK = ("torch", "transformers", "kornia", "segment_anything", "peft")


def test_the_grpc_front_imports_no_model_stack():
    code = ("import sys\n"
            "import serving.cli, serving.service, serving.server, serving.servicer, serving.dialogue, "
            "serving.pipeline, serving.store, serving.errors, serving.client\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {MODEL_STACK!r}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_check_sees_a_module_that_does_import_torch():
    code = f"import sys, serving.steps; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({MODEL_STACK!r})))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" in loaded
