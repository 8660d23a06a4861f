"""The full architecture (LLaVA-Med 7B layout + MedSAM ViT-B) with random weights in bf16 on a GPU:
the benchmark's model-only floor and naive server per round, and GPU memory per stage.

    python loadtest/gpu_full.py [--dialogues 8] [--out out/gpu_full]

Random weights answer nonsense: a round generates its full ``--new-tokens`` and seldom a [SEG], so
its time is the reasoning step's; the JCM and mask decoder are measured on a random [SEG] vector.
This is the work of a round, not its quality. Exits 0 with a note where
there is no CUDA device (it never runs in CI). ``--size tiny --device cpu`` runs the same code on
the tiny architecture, to check the script itself on any machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from model.build import build_model
from model.config import SHIPPED_TINY, ModelConfig
from model.predictor import MultiRoundPredictor, judge_and_decode
from model.tokenizer import load_tokenizer
from serving.bench import NaiveServer, bench_dialogues, floor, hold_all


def stage_memory(predictor: MultiRoundPredictor, dialogue, device: str) -> dict[str, float]:
    """Peak GPU memory (GiB) of each stage of one dialogue: encoders, reasoning, mask decoding."""
    if not device.startswith("cuda"):
        return {}
    peaks: dict[str, float] = {}

    def measure(name, fn):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
        return out

    model = predictor.model
    measure("image encoders", lambda: predictor.set_image(dialogue.image))
    for question in dialogue.questions:
        asked = predictor.resolve(question)
        predictor.segment(measure("reasoning (prefill + generation)", lambda q=asked: predictor.reason(q)))
    seg = torch.randn(1, model.sam.prompt_encoder.embed_dim, device=model.device, dtype=model.dtype)
    measure("JCM + mask decoder", lambda: judge_and_decode(model, predictor.encoding, seg))
    return peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dialogues", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24, help="tokens generated per round")
    parser.add_argument("--data", help="phantom dataset root (default: a small generated set)")
    parser.add_argument("--out", default="out/gpu_full")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: skipped (run it on a GPU machine)")
        return 0

    tokenizer = load_tokenizer(str(SHIPPED_TINY / "tokenizer"))  # any tokenizer with the model's added tokens
    cfg = ModelConfig.named(args.size)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.device(args.device):
        torch.set_default_dtype(dtype)
        model = build_model(cfg, tokenizer, load_pretrained=False).eval()
        torch.set_default_dtype(torch.float32)
    built = time.perf_counter() - t
    params = sum(p.numel() for p in model.parameters())
    print(f"built the {args.size} architecture ({params / 1e6:,.0f} M parameters, {dtype}) on {args.device} "
          f"in {built:.0f} s")

    def new_predictor() -> MultiRoundPredictor:
        return MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length, max_new_tokens=args.new_tokens)

    dialogues = bench_dialogues(Path(args.data) if args.data else None, args.dialogues)
    report = {"size": args.size, "device": args.device, "dtype": str(dtype), "parameters": params,
              "memory_gib": stage_memory(new_predictor(), dialogues[0], args.device),
              "floor": floor(new_predictor(), dialogues),
              "naive": hold_all(dialogues, 1, NaiveServer(new_predictor).hold)}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_full.json").write_text(json.dumps(report, indent=2) + "\n")
    rounds = range(1, len(report["floor"]["p50_ms_by_round"]) + 1)
    print("| round | " + " | ".join(map(str, rounds)) + " |\n|---|" + "---|" * len(rounds))
    for name in ("floor", "naive"):
        print(f"| {name} (ms) | " + " | ".join(f"{x:.0f}" for x in report[name]["p50_ms_by_round"]) + " |")
    print(f"rounds/s: floor {report['floor']['rounds_per_s']:.1f}, naive {report['naive']['rounds_per_s']:.1f}")
    for stage, gib in report["memory_gib"].items():
        print(f"peak GPU memory, {stage}: {gib:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
