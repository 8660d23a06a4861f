"""``mediround bench`` on tiny inputs.

- the model-only parts (the floor one dialogue at a time, the batched floor, the naive server) on
  four 8-round dialogues with the shipped model, in this process;
- the comparisons and the Markdown on a hand-made report whose ratios are checked by hand;
- the whole benchmark once through the ``mediround bench`` command (one real service start) on two
  dialogues at concurrency 1 and 2:
  the report's shape, its files, and sane values (the figures depend on the machine, so nothing tighter).

Torch runs on one thread here, as in the Serve replicas: on a shared CPU two threads' barriers can
stall a batched step for seconds when another process holds a core, which would make the
batched-against-one-at-a-time check a lottery.
"""

import json

import pytest

from model.checkpoint import load_checkpoint
from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.predictor import MultiRoundPredictor
from serving.bench import NaiveServer, batched_floor, bench_dialogues, floor, hold_all, markdown, summary
from serving.cli import main

DIALOGUES, ROUNDS, LEVELS = 2, 8, (1, 2)  # the whole bench
MODEL_ONLY_DIALOGUES = 4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Phantom test_hard dialogues enough for both parts (the bench generates them on first use)."""
    root = tmp_path_factory.mktemp("bench-data")
    bench_dialogues(root, MODEL_ONLY_DIALOGUES)
    return root


@pytest.fixture(scope="module")
def model_parts(data):
    """The floor, the batched floor and the naive server on the same four dialogues."""
    dialogues = bench_dialogues(data, MODEL_ONLY_DIALOGUES)
    model, tokenizer, cfg = load_checkpoint(SHIPPED_TINY)

    def new_predictor():
        return MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length)

    naive = NaiveServer(new_predictor)
    alone, held = floor(new_predictor(), dialogues)
    return {"floor": alone, "held": held, "batched_floor": batched_floor(new_predictor, held),
            "naive": [hold_all(held, c, naive.hold) for c in LEVELS]}


def test_the_model_only_parts_answer_every_round_of_every_dialogue(model_parts):
    assert [len(d.questions) for d in model_parts["held"]] == [ROUNDS] * MODEL_ONLY_DIALOGUES  # every round found
    for part in [model_parts["floor"], model_parts["batched_floor"], *model_parts["naive"]]:
        assert part["rounds"] == MODEL_ONLY_DIALOGUES * ROUNDS and part["rounds_per_s"] > 0 and part["seconds"] > 0
    for part in [model_parts["floor"], *model_parts["naive"]]:
        assert len(part["p50_ms_by_round"]) == ROUNDS and all(ms > 0 for ms in part["p50_ms_by_round"])
    batched = model_parts["batched_floor"]
    assert batched["dialogues"] == MODEL_ONLY_DIALOGUES and len(batched["ms_by_round"]) == ROUNDS
    assert all(ms > 0 for ms in batched["ms_by_round"]) and len(batched["passes_rounds_per_s"]) == 3


def test_every_dialogue_stops_before_its_first_reference_to_a_round_that_found_nothing(data):
    """With the mask decoder made to find nothing, no round has a mask: each dialogue is held up to its first
    question that refers to an earlier round (the dataset's own reference), as the service would refuse it."""
    dialogues = bench_dialogues(data, MODEL_ONLY_DIALOGUES)
    model, tokenizer, cfg = load_checkpoint(SHIPPED_TINY)
    hook = model.sam.mask_decoder.register_forward_hook(lambda module, args, out: (out[0] - 1e4, *out[1:]))
    try:
        alone, held = floor(MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length), dialogues)
    finally:
        hook.remove()
    conversations = [c for c in load(data / "test_hard.json") if len(c.rounds) == ROUNDS][:MODEL_ONLY_DIALOGUES]
    first_reference = [next(k for k, r in enumerate(c.rounds) if r.reference is not None) for c in conversations]
    assert [len(d.questions) for d in held] == first_reference and all(k < ROUNDS for k in first_reference)
    assert [d.questions for d in held] == [d.questions[:k] for d, k in zip(dialogues, first_reference, strict=True)]
    assert alone["rounds"] == sum(first_reference)


def _hand_made_report() -> dict:
    """Two concurrency levels of two 3-round dialogues, with round figures that divide evenly."""
    def level(concurrency, rounds_per_s, p50, encoder_runs=None):
        return {"concurrency": concurrency, "rounds": 6, "seconds": 6 / rounds_per_s, "rounds_per_s": rounds_per_s,
                "p50_ms_by_round": p50, "p95_ms": max(p50),
                **({} if encoder_runs is None else {"encoder_runs": encoder_runs})}

    report = {"dialogues": 2, "rounds_per_dialogue": 3, "rounds": 6, "torch_threads": 2,
              "floor": level(1, 25.0, [60.0, 30.0, 30.0]),
              "batched_floor": {"dialogues": 2, "rounds": 6, "seconds": 0.15, "rounds_per_s": 40.0,
                                "ms_by_round": [70.0, 40.0, 40.0], "passes_rounds_per_s": [32.0, 40.0, 38.5]},
              "naive": [level(1, 10.0, [60.0, 80.0, 100.0]), level(2, 8.0, [120.0, 160.0, 200.0])],
              "served": [level(1, 20.0, [90.0, 45.0, 60.0], 2), level(2, 30.0, [100.0, 50.0, 50.0], 1)],
              "counters": {"encoder_runs": 3, "distinct_images": 2, "reasoner": {"reused": 8, "rebuilt": 4}}}
    report["served"][1]["failed_calls"] = {"UNAVAILABLE": 2, "ABORTED": 1}
    report["summary"] = summary(report)
    return report


def test_the_summary_sets_the_served_figures_against_naive_the_batched_floor_and_the_floor():
    s = _hand_made_report()["summary"]
    assert s["batched_floor_over_floor"] == pytest.approx(40 / 25)
    assert s["by_concurrency"] == [
        {"concurrency": 1, "served_over_naive": pytest.approx(2.0), "served_over_batched_floor": pytest.approx(0.5),
         "round_last_over_round_2": pytest.approx(60 / 45)},
        {"concurrency": 2, "served_over_naive": pytest.approx(3.75), "served_over_batched_floor": pytest.approx(0.75),
         "round_last_over_round_2": pytest.approx(1.0)}]
    assert s["served_alone_over_floor_per_round"] == pytest.approx(1.5)  # median of 1.5, 1.5, 2.0


def test_the_markdown_tables_carry_the_comparisons():
    md = markdown(_hand_made_report())
    assert "Model-only floors: 25.0 rounds/s one dialogue at a time; 40.0 rounds/s with all 2 dialogues " \
           "batched (1.6x; the best of passes at 32.0, 40.0, 38.5 rounds/s)" in md
    assert "| 1 | 10.0 | 20.0 | 2.0x | 50% | 1.50x | 1.33x | 90 ms |" in md
    assert "| 2 | 8.0 | 30.0 | 3.8x | 75% | - | 1.00x | 100 ms |" in md  # the floor holds one dialogue at a time
    assert "| batched floor, 2 at once | 70 | 40 | 40 |" in md and "| model-only floor | 60 | 30 | 30 |" in md
    assert "- served at concurrency 1 / model-only floor, per round (median over rounds): 1.50x" in md
    assert "- image-encoder runs for 2 distinct images, by concurrency: 2 at 1, 1 at 2 (each level's" in md
    assert "failed after the client's retries (each ended its dialogue; the rates count the rounds answered): " \
           "3 at 2 (ABORTED 1, UNAVAILABLE 2)" in md


def test_without_concurrency_1_there_is_no_per_round_comparison_with_the_floor():
    report = _hand_made_report()
    report["served"], report["naive"] = report["served"][1:], report["naive"][1:]
    report["summary"] = summary(report)
    assert report["summary"]["served_alone_over_floor_per_round"] is None
    assert "per round (median over rounds)" not in markdown(report)


@pytest.fixture(scope="module")
def bench(data, tmp_path_factory):
    """The whole benchmark through ``mediround bench``, the real service included (started once)."""
    out = tmp_path_factory.mktemp("bench-out")
    assert main(["bench", "--out", str(out), "--data", str(data), "--dialogues", str(DIALOGUES),
                 "--concurrency", *map(str, LEVELS)]) == 0
    return json.loads((out / "bench.json").read_text()), out


def test_the_whole_bench_answers_every_round_and_reports_sane_values(bench):
    report, _ = bench
    assert report["dialogues"] == DIALOGUES and report["rounds_per_dialogue"] == ROUNDS
    parts = [report["floor"], report["batched_floor"], *report["naive"], *report["served"]]
    assert all(part["rounds"] == DIALOGUES * ROUNDS and part["rounds_per_s"] > 0 for part in parts)
    assert all(level["failed_calls"] == {} for level in report["served"])
    assert [r["concurrency"] for r in report["naive"]] == [r["concurrency"] for r in report["served"]] == list(LEVELS)
    assert all(len(r["p50_ms_by_round"]) == ROUNDS for r in report["served"])
    assert len(report["batched_floor"]["passes_rounds_per_s"]) == 3  # which floor is faster: a printed figure
    assert [c["concurrency"] for c in report["summary"]["by_concurrency"]] == list(LEVELS)
    assert report["summary"]["served_alone_over_floor_per_round"] > 0
    for level in report["served"]:  # the CPU of every served part is found and counted
        cpu = level["cpu_ms_per_round"]
        assert {"front + clients", "ImageEncoder", "Reasoner", "Segmenter", "Redis"} <= set(cpu)
        assert cpu["Reasoner"] > 0 and cpu["front + clients"] > 0
    counters = report["counters"]
    assert counters["distinct_images"] == DIALOGUES
    # the first level starts with empty caches and encodes each image once; a later one at most once
    assert report["served"][0]["encoder_runs"] == DIALOGUES
    assert all(r["encoder_runs"] <= DIALOGUES for r in report["served"])
    assert counters["encoder_runs"] == sum(r["encoder_runs"] for r in report["served"])


def test_the_whole_bench_writes_json_markdown_and_a_plot(bench):
    report, out = bench
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(report))
    assert (out / "bench.md").read_text() == markdown(report)
    assert (out / "bench.png").stat().st_size > 0


def test_failed_calls_that_leave_few_rounds_are_reported_not_a_crash(tmp_path):
    """A level whose dialogues failed early: hold_all counts the rounds answered, the summary leaves out what
    two rounds are needed for, and the Markdown and the plot are still written."""
    import math

    from serving.bench import ScriptedDialogue, plot

    dialogues = [ScriptedDialogue(b"", ["Segment the liver."]) for _ in range(2)]
    none = hold_all(dialogues, 2, lambda dialogue: [])
    assert none["rounds"] == 0 and none["p50_ms_by_round"] == [] and math.isnan(none["p95_ms"])
    one = hold_all(dialogues, 2, lambda dialogue: [0.5] if dialogue is dialogues[0] else [])
    assert one["rounds"] == 1 and one["p50_ms_by_round"] == [500.0] and one["p95_ms"] == 500.0
    report = _hand_made_report()
    report["served"][0].update(p50_ms_by_round=[90.0], rounds=2, failed_calls={"UNAVAILABLE": 2})
    report["summary"] = summary(report)
    assert report["summary"]["by_concurrency"][0]["round_last_over_round_2"] is None
    assert report["summary"]["served_alone_over_floor_per_round"] == pytest.approx(1.5)  # round 1 only
    md = markdown(report)
    assert "| 1 | 10.0 | 20.0 | 2.0x | 50% | 1.50x | - | 90 ms |" in md
    assert "served last round / round 2 latency at concurrency 1" not in md
    plot(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 0
