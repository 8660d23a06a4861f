"""``mediround bench``: the served pipeline beside a naive server, same machine, model and dialogues.

- naive: what a LISA/SegLLM-style demo server does. Every round starts from scratch: decode the
  image, run both image encoders, prefill the whole dialogue so far in one pass (earlier answers and
  the reference tokens of earlier masks, kept client-side as a demo's state), generate, decode the
  mask. One request at a time (a lock), in this process, so it pays no gRPC, Redis or Ray costs.
- served: ``mediround serve``'s service over gRPC on loopback (encodings cached, key/value caches
  kept between rounds, rounds of different sessions decoded together).
- floor: the served model's own calls in this process with nothing around them (encoders once per
  image, the key/value cache kept), one dialogue at a time: what a round costs at the least.
- batched floor: the same model calls for the same dialogues, every dialogue's round k reasoned in
  one batch (``reason_together``) and then each mask decoded, in this process with nothing served:
  the most rounds per second this model gives on this machine (the best of three passes).

At each concurrency (dialogues held at once) it reports rounds per second and latency by round
index, and the image-encoder runs per distinct image; beside them served against naive, against the
batched floor, against the floor per round, and round 8 against round 2. Writes bench.json, bench.md
and bench.png.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint
from model.config import SHIPPED_TINY
from model.data.mrmedseg import Conversation, load
from model.predictor import MultiRoundPredictor, RoundResult, reason_together

CONCURRENCY = (1, 8, 32)


@dataclass
class ScriptedDialogue:
    """One benchmark dialogue: an image and the questions of its rounds, asked in order."""

    image: bytes
    questions: list[str]


def bench_dialogues(data: Path | None, count: int, rounds: int = 8) -> list[ScriptedDialogue]:
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
    return [ScriptedDialogue((data / c.image).read_bytes(), [r.question for r in c.rounds])
            for c in conversations[:count]]


def hold_all(dialogues: list[ScriptedDialogue], concurrency: int, hold) -> dict:
    """Run ``hold(dialogue) -> per-round seconds`` over all dialogues, ``concurrency`` at a time (the rounds
    answered: a dialogue that failed is shorter)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        per_dialogue = list(pool.map(hold, dialogues))
    wall = time.perf_counter() - start
    answered = [x for d in per_dialogue for x in d]
    by_round = [[d[k] for d in per_dialogue if k < len(d)] for k in range(max(map(len, per_dialogue), default=0))]
    return {"concurrency": concurrency, "rounds": len(answered), "seconds": wall,
            "rounds_per_s": len(answered) / wall,
            "p50_ms_by_round": [1e3 * statistics.median(s) for s in by_round],
            "p95_ms": 1e3 * statistics.quantiles(answered, n=20)[18] if len(answered) > 1
            else 1e3 * max(answered, default=float("nan"))}


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

    def hold(self, dialogue: ScriptedDialogue) -> list[float]:
        history: list[RoundResult] = []
        seconds: list[float] = []
        for question in dialogue.questions:
            t = time.perf_counter()
            history.append(self.round(dialogue.image, history, question))
            seconds.append(time.perf_counter() - t)
        return seconds


def floor(predictor: MultiRoundPredictor, dialogues: list[ScriptedDialogue]) -> tuple[dict, list[ScriptedDialogue]]:
    """Per-round latency of the bare model calls; round 1 includes encoding the image. Also the dialogues as
    held here, for the other parts to hold: each stops before its first question that refers to a round that
    found nothing, as the service refuses that question (the model is deterministic, so they stop there too)."""
    held: list[ScriptedDialogue] = []

    def hold(dialogue: ScriptedDialogue) -> list[float]:
        seconds: list[float] = []
        found: list[bool] = []  # whether each round held has a mask
        t = time.perf_counter()
        predictor.set_image(dialogue.image)
        for question in dialogue.questions:
            reference = predictor.resolve(question).reference_index
            if reference is not None and not found[reference]:
                break
            found.append(predictor.ask(question).has_mask)
            seconds.append(time.perf_counter() - t)
            t = time.perf_counter()
        held.append(replace(dialogue, questions=dialogue.questions[:len(found)]))
        return seconds

    return hold_all(dialogues, 1, hold), held


def batched_floor(new_predictor: Callable[[], MultiRoundPredictor], dialogues: list[ScriptedDialogue],
                  repeats: int = 3) -> dict:
    """Rounds per second with every dialogue's next round in one batch, nothing served; encoding included.

    One predictor per dialogue (all on one model); round k of all dialogues that have one is reasoned
    together, then each dialogue's mask is decoded, as the served Reasoner and Segmenter do. The
    best of ``repeats`` passes is the floor: on a shared machine noise only ever adds time, and a
    batched step on several threads stalls whole when another process takes a core.
    """
    passes = [_batched_pass(new_predictor, dialogues) for _ in range(repeats)]
    best = max(passes, key=lambda p: p["rounds_per_s"])
    return {**best, "passes_rounds_per_s": [p["rounds_per_s"] for p in passes]}


def _batched_pass(new_predictor: Callable[[], MultiRoundPredictor], dialogues: list[ScriptedDialogue]) -> dict:
    predictors = [new_predictor() for _ in dialogues]
    batch_seconds, rounds = [], 0
    start = time.perf_counter()
    for p, dialogue in zip(predictors, dialogues, strict=True):
        p.set_image(dialogue.image)
    for k in range(max(len(d.questions) for d in dialogues)):
        t = time.perf_counter()
        now = [(p, d) for p, d in zip(predictors, dialogues, strict=True) if k < len(d.questions)]
        turns = reason_together([p for p, _ in now], [p.resolve(d.questions[k]) for p, d in now])
        for (p, _), turn in zip(now, turns, strict=True):
            if isinstance(turn, Exception):
                raise turn  # the bench's questions are the dataset's: a refusal is a bug
            p.segment(turn)
            rounds += 1
        batch_seconds.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {"dialogues": len(dialogues), "rounds": rounds, "seconds": wall, "rounds_per_s": rounds / wall,
            "ms_by_round": [1e3 * s for s in batch_seconds]}


def cpu_seconds_by_process() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each part of the served setup on this machine: this
    process (the gRPC front and the benchmark's clients), each Serve deployment's replicas, Redis,
    and Ray's own processes (controller, raylet, GCS, agents)."""
    import psutil

    groups: dict[str, float] = {}
    me = os.getpid()
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if process.info["pid"] == me:
            group = "front + clients"
        elif cmdline.startswith("ray::ServeReplica:"):
            group = cmdline.split()[0].rsplit(":", 1)[-1]  # the deployment's name
        elif "redis-server" in cmdline:
            group = "Redis"
        elif "ray" in cmdline and ("ray::" in cmdline or "/ray/" in cmdline):
            group = "Ray (controller, raylet, GCS, agents)"
        else:
            continue
        groups[group] = groups.get(group, 0.0) + times.user + times.system
    return groups


def served(dialogues: list[ScriptedDialogue], levels: tuple[int, ...],
           checkpoint: str | Path = SHIPPED_TINY) -> tuple[list[dict], dict]:
    """Hold the dialogues over gRPC against a freshly started service at each concurrency; each level
    also reports the CPU milliseconds per round each process spent (``cpu_ms_per_round``) and how many times the
    image encoder ran (``encoder_runs``)."""
    import grpc
    from ray import serve

    from serving.client import MediRoundClient
    from serving.front.server import ServerOptions
    from serving.runtime.service import BackgroundService, ServiceOptions

    options = ServiceOptions(checkpoint=str(checkpoint), server=ServerOptions(address="127.0.0.1:0"))
    failed: Counter[str] = Counter()  # this level's failed calls by status code
    counting = threading.Lock()

    with BackgroundService(options) as service:
        def hold(dialogue: ScriptedDialogue) -> list[float]:
            """The seconds of each round answered; a failed call (after the client's own retries) is counted
            and ends the dialogue, whose later questions may refer to the round it failed to make."""
            seconds: list[float] = []
            with MediRoundClient(service.address) as client:
                try:
                    session = client.create_session(dialogue.image)
                    for question in dialogue.questions:
                        t = time.perf_counter()
                        client.ask(session.id, question)
                        seconds.append(time.perf_counter() - t)
                    client.delete(session.id)
                except grpc.RpcError as e:
                    with counting:
                        failed[e.code().name] += 1
            return seconds

        def encoder_runs() -> int:
            return serve.get_app_handle("encoder").stats.remote().result().computed

        results = []
        for concurrency in levels:
            before, encoded = cpu_seconds_by_process(), encoder_runs()
            failed.clear()
            result = hold_all(dialogues, concurrency, hold)
            result["failed_calls"] = dict(failed)
            after = cpu_seconds_by_process()
            result["cpu_ms_per_round"] = {group: 1e3 * (after[group] - before.get(group, 0.0)) / result["rounds"]
                                          for group in sorted(after)}
            # each level's sessions are deleted as they end, and their images leave the caches within a sweep, so
            # a later level may encode an image again
            result["encoder_runs"] = encoder_runs() - encoded
            results.append(result)
        reasoner = asdict(serve.get_app_handle("reasoner").stats.remote().result())
    return results, {"encoder_runs": sum(r["encoder_runs"] for r in results),
                     "distinct_images": len({d.image for d in dialogues}), "reasoner": reasoner}


def run_bench(out: str | Path, *, data: str | Path | None = None, dialogues: int = 32,
              levels: tuple[int, ...] = CONCURRENCY, checkpoint: str | Path = SHIPPED_TINY) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = bench_dialogues(Path(data) if data else None, dialogues)
    model, tokenizer, cfg = load_checkpoint(checkpoint)

    def new_predictor() -> MultiRoundPredictor:
        return MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length)

    naive = NaiveServer(new_predictor)
    alone, todo = floor(new_predictor(), todo)
    report = {"dialogues": len(todo), "rounds_per_dialogue": max(len(d.questions) for d in todo),
              "rounds": sum(len(d.questions) for d in todo), "torch_threads": torch.get_num_threads(),
              "floor": alone, "batched_floor": batched_floor(new_predictor, todo),
              "naive": [hold_all(todo, c, naive.hold) for c in levels]}
    report["served"], report["counters"] = served(todo, levels, checkpoint)  # the same model as the floors
    report["summary"] = summary(report)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(report))
    plot(report, out / "bench.png")
    return report


def summary(report: dict) -> dict:
    """The served figures against the others: per concurrency, and per round at one dialogue at a time."""
    fl, batched = report["floor"], report["batched_floor"]
    def last_over_second(p50: list[float]) -> float | None:  # None when failed calls left under two rounds
        return p50[-1] / p50[1] if len(p50) > 1 else None

    by_level = [{"concurrency": s["concurrency"], "served_over_naive": s["rounds_per_s"] / n["rounds_per_s"],
                 "served_over_batched_floor": s["rounds_per_s"] / batched["rounds_per_s"],
                 "round_last_over_round_2": last_over_second(s["p50_ms_by_round"])}
                for s, n in zip(report["served"], report["naive"], strict=True)]
    alone = next((s for s in report["served"] if s["concurrency"] == 1), None)
    # over the rounds both have (failed calls shorten the served dialogues); None when concurrency 1 was not run
    per_round = [s / f for s, f in zip(alone["p50_ms_by_round"], fl["p50_ms_by_round"], strict=False)] \
        if alone else []
    return {"by_concurrency": by_level,
            "batched_floor_over_floor": batched["rounds_per_s"] / fl["rounds_per_s"],
            "served_alone_over_floor_per_round": statistics.median(per_round) if per_round else None}


def markdown(report: dict) -> str:
    naive, ours, fl, batched = report["naive"], report["served"], report["floor"], report["batched_floor"]
    summ = report["summary"]
    last = len(fl["p50_ms_by_round"])
    passes = ", ".join(f"{r:.1f}" for r in batched["passes_rounds_per_s"])
    lines = [f"{report['dialogues']} dialogues of up to {report['rounds_per_dialogue']} rounds, {report['rounds']} "
             "rounds in all (phantom test_hard; a dialogue stops before a question that refers to a round that "
             "found nothing), tiny model, this machine.", "",
             f"Model-only floors: {fl['rounds_per_s']:.1f} rounds/s one dialogue at a time; "
             f"{batched['rounds_per_s']:.1f} rounds/s with all {batched['dialogues']} dialogues batched "
             f"({summ['batched_floor_over_floor']:.1f}x; the best of passes at {passes} rounds/s), "
             "the throughput limit of this model on this machine.", "",
             "| concurrency | naive rounds/s | served rounds/s | served / naive | served / batched floor "
             f"| served / floor, per round | served round {last} / round 2 | served p95 |",
             "|---|---|---|---|---|---|---|---|"]
    alone = summ["served_alone_over_floor_per_round"]
    for n, s, c in zip(naive, ours, summ["by_concurrency"], strict=True):
        per_round = f"{alone:.2f}x" if s["concurrency"] == 1 else "-"  # the floor holds one dialogue at a time
        later = "-" if c["round_last_over_round_2"] is None else f"{c['round_last_over_round_2']:.2f}x"
        lines.append(f"| {s['concurrency']} | {n['rounds_per_s']:.1f} | {s['rounds_per_s']:.1f} | "
                     f"{c['served_over_naive']:.1f}x | {100 * c['served_over_batched_floor']:.0f}% | {per_round} | "
                     f"{later} | {s['p95_ms']:.0f} ms |")
    lines += ["", "Median latency by round index (ms):", "",
              "| round | " + " | ".join(str(k + 1) for k in range(last)) + " |",
              "|---|" + "---|" * last]
    rows = [("model-only floor", fl["p50_ms_by_round"]),
            (f"batched floor, {batched['dialogues']} at once", batched["ms_by_round"])]
    rows += [(f"naive, concurrency {n['concurrency']}", n["p50_ms_by_round"]) for n in naive]
    rows += [(f"served, concurrency {s['concurrency']}", s["p50_ms_by_round"]) for s in ours]
    for name, ms in rows:
        lines.append(f"| {name} | " + " | ".join(f"{x:.0f}" for x in ms) + " |")
    groups = sorted({g for s in ours for g in s.get("cpu_ms_per_round", {})})
    if groups:
        lines += ["", f"CPU per served round by process (ms; {os.cpu_count()} cores give {os.cpu_count()},000 ms "
                  "a second):", "",
                  "| concurrency | " + " | ".join(groups) + " | all |", "|---|" + "---|" * (len(groups) + 1)]
        for s in ours:
            cpu = s["cpu_ms_per_round"]
            lines.append(f"| {s['concurrency']} | " + " | ".join(f"{cpu.get(g, 0.0):.1f}" for g in groups)
                         + f" | {sum(cpu.values()):.1f} |")
    c = report["counters"]
    failures = [f"{sum(s['failed_calls'].values())} at {s['concurrency']} ("
                + ", ".join(f"{code} {n}" for code, n in sorted(s["failed_calls"].items())) + ")"
                for s in ours if s.get("failed_calls")]
    lines += ["", "- served calls failed after the client's retries (each ended its dialogue; the rates count "
              "the rounds answered): " + ("; ".join(failures) if failures else "none"),
              *([] if alone is None else [f"- served at concurrency 1 / model-only floor, per round "
                                               f"(median over rounds): {alone:.2f}x"]),
              *[f"- served last round / round 2 latency at concurrency {s['concurrency']}: "
                f"{s['round_last_over_round_2']:.2f}x" for s in summ["by_concurrency"]
                if s["round_last_over_round_2"] is not None],
              f"- image-encoder runs for {c['distinct_images']} distinct images, by concurrency: "
              + ", ".join(f"{s['encoder_runs']} at {s['concurrency']}" for s in ours)
              + " (each level's sessions are deleted as they end: a later level may encode an image again)",
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
    left.axhline(report["batched_floor"]["rounds_per_s"], color="k", linestyle="--", label="batched floor")
    left.set(xticks=list(x), xticklabels=[str(c) for c in levels], xlabel="dialogues at once",
             ylabel="rounds / s", title="Throughput")
    left.legend()
    def by_round(p50: list[float]) -> tuple[range, list[float]]:  # failed calls may leave fewer rounds
        return range(1, len(p50) + 1), p50

    right.plot(*by_round(report["floor"]["p50_ms_by_round"]), "k--", label="model-only floor")
    for name in ("naive", "served"):
        for r in (report[name][0], report[name][-1]):
            right.plot(*by_round(r["p50_ms_by_round"]), marker="o", label=f"{name}, {r['concurrency']} at once")
    right.set(xlabel="round", ylabel="median latency (ms)", yscale="log", title="Latency by round")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
