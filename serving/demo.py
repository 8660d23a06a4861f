"""The demo: start the embedded service, hold scripted dialogues over gRPC, print them, draw them.

A held-out phantom image (generated with its own seed, never trained on), a real CT slice and a slice
of the real brain from a slab training never sees, each a multi-round dialogue whose later rounds refer
to earlier ones; every mask is compared with the ground truth and drawn next to it. Then a dialogue on a
real DICOM CT, its rounds written as a DICOM SEG.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np

from mediround.v1 import mediround_pb2 as pb
from model.data.brain_demo import held_out_brain_dialogue
from model.data.images import load_mask
from model.data.mrmedseg import load
from model.data.phantoms.generate import SplitSpec, generate_dataset
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from model.data.show import render_conversation
from model.evaluation.metrics import dice_scores, intersection_and_union
from serving.client import MediRoundClient, readable_answer
from serving.front.server import ServerOptions
from serving.runtime.service import BackgroundService, ServiceOptions


def run_demo(out: str | Path, *, seed: int = 7, checkpoint: str | None = None) -> int:
    out = Path(out)
    phantoms = out / "phantoms"
    generate_dataset(phantoms, seed=seed, splits={"test_hard": SplitSpec(1, 1, 1.0)}, workers=1, progress=False)
    brain, brain_dialogue = held_out_brain_dialogue(out / "brain")
    dialogues = [("held-out phantom", "phantom", phantoms, load(phantoms / "test_hard.json")[0]),
                 ("real CT slice", "real", Path(REAL_SLICES), load(REAL_DIALOGUES)[0]),
                 ("held-out real brain slice", "brain", brain, brain_dialogue)]
    started = time.perf_counter()
    options = ServiceOptions(checkpoint=checkpoint, server=ServerOptions(address="127.0.0.1:0"))
    with BackgroundService(options) as service:
        print(f"service up at {service.address} in {time.perf_counter() - started:.1f} s "
              "(embedded Redis, local Ray, Serve applications encoder/reasoner/segmenter)")
        with MediRoundClient(service.address) as client:
            for title, name, root, conv in dialogues:
                session = client.create_session(root / conv.image, metadata={"demo": name})
                print(f"\n== {title}: {conv.image} ({session.width}x{session.height}), session {session.id}")
                masks: list[np.ndarray] = []
                answers: list[str] = []
                for r in conv.rounds:
                    # a round about a structure the image does not show has no mask: its truth is empty
                    truth = load_mask(root / r.mask) if r.mask else np.zeros((session.height, session.width), bool)
                    try:
                        result = client.ask(session.id, r.question)
                    except grpc.RpcError as e:  # e.g. a reference to a round that found nothing: said, and the
                        # dialogue ends there (its later questions name rounds by numbers this one would shift)
                        print(f"  {r.question}\n    -> refused: {e.code().name}: {e.details()}\n  (the scripted "
                              "dialogue stops here)")
                        conv = replace(conv, rounds=conv.rounds[:len(masks)])
                        break
                    mask = client.mask(result)
                    shown = mask if mask is not None else truth & False
                    dice = dice_scores(*intersection_and_union(shown[None], truth[None]))[0]
                    ref = f"round {result.reference_round}" if result.reference_round else "none"
                    overlap = f"estimated overlap {round(100 * result.quality)}%"
                    judged = ("no mask" if not result.has_mask else
                              f"{overlap} of its first draft, which the JCM redrew" if result.corrected else overlap)
                    print(f"  round {result.number}: {r.question}\n    -> {readable_answer(result.answer)}   "
                          f"[reference: {ref}; "
                          f"{judged}; Dice against the ground truth {dice:.2f}; {result.timings.total_ms:.0f} ms]")
                    masks.append(shown)
                    answers.append(result.answer.replace("[SEG]", "").strip(" ."))
                if not masks:
                    continue
                served = replace(conv, rounds=[replace(r, answer=a) for r, a in zip(conv.rounds, answers, strict=True)])
                picture = render_conversation(served, root, out / f"{name}.png", masks=masks,
                                              title=f"{title}: served answers and masks")
                print(f"  picture: {picture}")
            dicom_dialogue(client, out / "dicom")
    print("\nservice stopped")
    return 0


DICOM_CT = "CT_small.dcm"
"""A real CT slice (thoracic spine) that ships with pydicom; it has no ground truth, so no Dice is shown."""
DICOM_QUESTIONS = ("Segment the vertebra.", "Now segment the spinal canal inside the output of round 1.")


def dicom_dialogue(client: MediRoundClient, out: Path) -> None:
    """A dialogue on a DICOM instance, as a PACS would hold it: the session reports what it rendered, and the
    rounds come back as one DICOM SEG (written to ``out``), whose segments are the rounds' masks."""
    import highdicom as hd
    from pydicom.data import get_testdata_file

    out.mkdir(parents=True, exist_ok=True)
    session = client.create_session(str(get_testdata_file(DICOM_CT)), metadata={"demo": "dicom"},
                                    dicom_options=pb.DicomOptions(window_preset="ct-bone"))
    d = session.dicom
    print(f"\n== DICOM {d.modality} {DICOM_CT} ({session.width}x{session.height}), session {session.id}: "
          f"window {d.window_center:g}/{d.window_width:g} ({d.window_source}), rescale x{d.rescale_slope:g} "
          f"{d.rescale_intercept:+g}, {d.transfer_syntax_uid}")
    rounds = [client.ask(session.id, q) for q in DICOM_QUESTIONS]
    for r in rounds:
        ref = f"round {r.reference_round}" if r.reference_round else "none"
        print(f"  round {r.number}: {r.question}\n    -> {readable_answer(r.answer)}   [reference: {ref}; "
              f"q {r.quality:.2f}; {r.timings.total_ms:.0f} ms]")
    seg = client.segmentation(session.id)
    path = out / "dialogue-seg.dcm"
    path.write_bytes(seg.dicom)
    read = hd.seg.segread(path)
    pixels = read.get_pixels_by_source_instance([d.sop_instance_uid], combine_segments=False)[0]
    same = all(np.array_equal(pixels[..., k], np.asarray(client.mask(r)))
               for k, r in enumerate(r for r in rounds if r.has_mask))
    print(f"  DICOM SEG {seg.sop_instance_uid}: rounds {list(seg.rounds)} as segments "
          f"{', '.join(s.SegmentLabel for s in read.SegmentSequence)}; frames equal the PNG masks: {same}\n"
          f"  written: {path}")
