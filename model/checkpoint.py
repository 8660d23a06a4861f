"""MediRound checkpoints: directories in the transformers/peft way, round-tripping bit-exactly.

    <dir>/config.json        ModelConfig
    <dir>/model.safetensors  the MediRound state dict (any dtype; fp16 for the shipped tiny model), less a
                             LiteMedSAM's frozen image encoder, which is always loaded from its installed weights
    <dir>/tokenizer/         the tokenizer (transformers ``save_pretrained``)
    <dir>/adapter/           peft LoRA adapter (adapter_config.json + adapter_model.safetensors), if any
    <dir>/manifest.json      optional: how the checkpoint was made and what it scored
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.build import WeightsMismatch, build_model, has_lora
from model.config import ModelConfig
from model.mediround import MediRound
from model.tokenizer import load_tokenizer


def external_weights(cfg: ModelConfig) -> str:
    """The prefix of the weights a checkpoint leaves out because the builder loads them itself ("" for none)."""
    return "sam.image_encoder." if cfg.seg.encoder == "litemedsam" else ""


def save_checkpoint(model: MediRound, tokenizer, cfg: ModelConfig, out: str | Path, *,
                    dtype: torch.dtype | None = None, manifest: dict | None = None) -> Path:
    """Write ``model`` (cast to ``dtype`` if given) with its config and tokenizer to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    tokenizer.save_pretrained(out / "tokenizer")
    external = external_weights(cfg)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items() if not (external and k.startswith(external))}
    save_file(state, out / "model.safetensors", metadata={"format": "pt", "model": cfg.name})
    if has_lora(model):
        from peft import get_peft_model_state_dict

        adapter = out / "adapter"
        adapter.mkdir(exist_ok=True)
        mllm: Any = model.mllm  # a peft-injected module: torch types its attributes too loosely to check
        mllm.peft_config["default"].save_pretrained(adapter)
        save_file({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model.mllm).items()},
                  adapter / "adapter_model.safetensors")
    if manifest is not None:
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def load_checkpoint(path: str | Path, *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> tuple[MediRound, object, ModelConfig]:
    """(model in eval mode, tokenizer, config) from a checkpoint directory; keys must match exactly."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a MediRound checkpoint: expected config.json, model.safetensors "
                                "and tokenizer/ inside it")
    cfg = ModelConfig.load(path / "config.json")
    tokenizer = load_tokenizer(str(path / "tokenizer"))
    model = build_model(cfg, tokenizer, load_pretrained=False)
    if (path / "adapter").exists():
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig.from_pretrained(str(path / "adapter")), model.mllm)
    state = load_file(path / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    external = external_weights(cfg)
    missing = [k for k in missing if not (external and k.startswith(external))]
    if missing or unexpected:
        raise WeightsMismatch(f"checkpoint {path}", sorted(missing), sorted(unexpected))
    return model.to(device=device, dtype=dtype).eval(), tokenizer, cfg


def read_manifest(path: str | Path) -> dict:
    """The checkpoint's manifest (empty if it has none)."""
    file = Path(path) / "manifest.json"
    return json.loads(file.read_text()) if file.exists() else {}
