"""``mediround bench``: the served pipeline beside a naive server, same machine, model and dialogues.

- naive: what a LISA/SegLLM-style demo server does. Every round starts from scratch: decode the
  image, run both image encoders, prefill the whole dialogue so far in one pass (earlier answers and
  the reference tokens of earlier masks, kept client-side as a demo's state), generate, decode the
  mask. One request at a time (a lock), in this process, so it pays no gRPC, Redis or Ray costs.
- served: ``mediround serve``'s service over gRPC on loopback (encodings cached, key/value caches
  kept between rounds, rounds of different sessions decoded together).
- floor: the served model's own calls in this process with nothing around them (encoders once per
  image, the key/value cache kept), one dialogue at a time: what a round costs at the least.

At each concurrency (dialogues held at once) it reports rounds per second and latency by round
index, and the image-encoder runs per distinct image; writes bench.json, bench.md and bench.png.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint
from model.config import SHIPPED_TINY
from model.data.mrmedseg import Conversation, load
from model.predictor import MultiRoundPredictor, RoundResult

CONCURRENCY = (1, 8, 32)


@dataclass
class Dialogue:
    image: bytes
    questions: list[str]


def bench_dialogues(data: Path | None, count: int, rounds: int = 8) -> list[Dialogue]:
    """``count`` phantom test_hard dialogues of ``rounds`` rounds; generates a small set when ``data`` has none."""
    if data is None or not (data / "test_hard.json").exists():
        from model.data.phantoms.generate import SplitSpec, generate_dataset

        data = Path(data or "data/bench")
        if not (data / "test_hard.json").exists():
            generate_dataset(data, seed=0, splits={"test_hard": SplitSpec(6 * count, 1, 1.0)}, progress=False)
    conversations: list[Conversation] = [c for c in load(data / "test_hard.json") if len(c.rounds) == rounds]
    if len(conversations) < count:
        raise ValueError(f"{data / 'test_hard.json'} has {len(conversations)} dialogues of {rounds} rounds; "
                         f"the benchmark needs {count}")
    return [Dialogue((data / c.image).read_bytes(), [r.question for r in c.rounds]) for c in conversations[:count]]


def hold_all(dialogues: list[Dialogue], concurrency: int, hold) -> dict:
    """Run ``hold(dialogue) -> per-round seconds`` over all dialogues, ``concurrency`` at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        per_dialogue = list(pool.map(hold, dialogues))
    wall = time.perf_counter() - start
    by_round = [[d[k] for d in per_dialogue if k < len(d)] for k in range(max(map(len, per_dialogue)))]
    return {"concurrency": concurrency, "rounds": sum(map(len, per_dialogue)), "seconds": wall,
            "rounds_per_s": sum(map(len, per_dialogue)) / wall,
            "p50_ms_by_round": [1e3 * statistics.median(s) for s in by_round],
            "p95_ms": 1e3 * statistics.quantiles([x for d in per_dialogue for x in d], n=20)[18]}


class NaiveServer:
    """Stateless rounds, one at a time: everything recomputed per round."""

    def __init__(self, new_predictor: Callable[[], MultiRoundPredictor]):
        self.new_predictor = new_predictor
        self.lock = threading.Lock()

    def round(self, image: bytes, history: list[RoundResult], question: str) -> RoundResult:
        with self.lock:
            p = self.new_predictor()
            p.set_image(image)  # decode + both encoders, every round
            p.prefill(history)  # the whole dialogue so far, one pass
            return p.ask(question)

    def hold(self, dialogue: Dialogue) -> list[float]:
        history, seconds = [], []
        for question in dialogue.questions:
            t = time.perf_counter()
            history.append(self.round(dialogue.image, history, question))
            seconds.append(time.perf_counter() - t)
        return seconds


def floor(predictor: MultiRoundPredictor, dialogues: list[Dialogue]) -> dict:
    """Per-round latency of the bare model calls; round 1 includes encoding the image."""

    def hold(dialogue: Dialogue) -> list[float]:
        seconds = []
        t = time.perf_counter()
        predictor.set_image(dialogue.image)
        for question in dialogue.questions:
            predictor.ask(question)
            seconds.append(time.perf_counter() - t)
            t = time.perf_counter()
        return seconds

    return hold_all(dialogues, 1, hold)


def served(dialogues: list[Dialogue], levels: tuple[int, ...], options=None) -> tuple[list[dict], dict]:
    """Hold the dialogues over gRPC against a freshly started service at each concurrency."""
    from ray import serve

    from serving.client import MediRoundClient
    from serving.server import ServerOptions
    from serving.service import BackgroundService, ServiceOptions

    options = options or ServiceOptions(server=ServerOptions(address="127.0.0.1:0"))
    with BackgroundService(options) as service:
        def hold(dialogue: Dialogue) -> list[float]:
            with MediRoundClient(service.address) as client:
                session = client.create_session(dialogue.image)
                seconds = []
                for question in dialogue.questions:
                    t = time.perf_counter()
                    client.ask(session.id, question)
                    seconds.append(time.perf_counter() - t)
                client.delete(session.id)
                return seconds

        results = [hold_all(dialogues, c, hold) for c in levels]
        encoder = serve.get_app_handle("encoder").stats.remote().result()
        reasoner = serve.get_app_handle("reasoner").stats.remote().result()
    return results, {"encoder_runs": encoder["computed"], "distinct_images": len({d.image for d in dialogues}),
                     "reasoner": reasoner}


def run_bench(out: str | Path, *, data: str | Path | None = None, dialogues: int = 32,
              levels: tuple[int, ...] = CONCURRENCY, checkpoint: str | Path = SHIPPED_TINY) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = bench_dialogues(Path(data) if data else None, dialogues)
    model, tokenizer, cfg = load_checkpoint(checkpoint)

    def new_predictor() -> MultiRoundPredictor:
        return MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length)

    naive = NaiveServer(new_predictor)
    report = {"dialogues": len(todo), "rounds_per_dialogue": len(todo[0].questions),
              "torch_threads": torch.get_num_threads(), "floor": floor(new_predictor(), todo),
              "naive": [hold_all(todo, c, naive.hold) for c in levels]}
    report["served"], report["counters"] = served(todo, levels)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(report))
    plot(report, out / "bench.png")
    return report


def markdown(report: dict) -> str:
    naive, ours, fl = report["naive"], report["served"], report["floor"]
    lines = [f"{report['dialogues']} dialogues of {report['rounds_per_dialogue']} rounds (phantom test_hard), "
             "tiny model, this machine.", "",
             "| concurrency | naive rounds/s | served rounds/s | served / naive | served p95 |",
             "|---|---|---|---|---|"]
    for n, s in zip(naive, ours, strict=True):
        lines.append(f"| {s['concurrency']} | {n['rounds_per_s']:.1f} | {s['rounds_per_s']:.1f} | "
                     f"{s['rounds_per_s'] / n['rounds_per_s']:.1f}x | {s['p95_ms']:.0f} ms |")
    lines += ["", "Median latency by round index (ms):", "",
              "| round | " + " | ".join(str(k + 1) for k in range(len(fl["p50_ms_by_round"]))) + " |",
              "|---|" + "---|" * len(fl["p50_ms_by_round"])]
    rows = [("model-only floor", fl)] + [(f"naive, concurrency {n['concurrency']}", n) for n in naive]
    rows += [(f"served, concurrency {s['concurrency']}", s) for s in ours]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(f"{x:.0f}" for x in r["p50_ms_by_round"]) + " |")
    c = report["counters"]
    first = ours[0]["p50_ms_by_round"]
    lines += ["", f"- served at concurrency 1 / model-only floor, per round (median over rounds): "
              f"{statistics.median(s / f for s, f in zip(first, fl['p50_ms_by_round'], strict=True)):.2f}x",
              *[f"- served round {len(s['p50_ms_by_round'])} / round 2 latency at concurrency {s['concurrency']}: "
                f"{s['p50_ms_by_round'][-1] / s['p50_ms_by_round'][1]:.2f}x" for s in ours],
              f"- image-encoder runs: {c['encoder_runs']} for {c['distinct_images']} distinct images "
              f"({c['encoder_runs'] / c['distinct_images']:.2f} per image)",
              f"- Reasoner key/value caches: {c['reasoner']['reused']} rounds reused one, "
              f"{c['reasoner']['rebuilt']} built one (first rounds and rebuilds)", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    levels = [r["concurrency"] for r in report["served"]]
    x = range(len(levels))
    left.bar([i - 0.2 for i in x], [r["rounds_per_s"] for r in report["naive"]], 0.4, label="naive")
    left.bar([i + 0.2 for i in x], [r["rounds_per_s"] for r in report["served"]], 0.4, label="served")
    left.set(xticks=list(x), xticklabels=[str(c) for c in levels], xlabel="dialogues at once",
             ylabel="rounds / s", title="Throughput")
    left.legend()
    rounds = range(1, len(report["floor"]["p50_ms_by_round"]) + 1)
    right.plot(rounds, report["floor"]["p50_ms_by_round"], "k--", label="model-only floor")
    for name in ("naive", "served"):
        for r in (report[name][0], report[name][-1]):
            right.plot(rounds, r["p50_ms_by_round"], marker="o", label=f"{name}, {r['concurrency']} at once")
    right.set(xlabel="round", ylabel="median latency (ms)", yscale="log", title="Latency by round")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
