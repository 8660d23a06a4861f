"""The example cases the page offers: the real CT slices shipped in ``model.data.real`` with their hand-written
MR-MedSeg dialogues, each round's question and its ground-truth mask (for education mode: predict, then reveal).

    GET /api/v1/examples                          the cases, their questions and URLs
    GET /api/v1/examples/{case}/image             the case's image (PNG)
    GET /api/v1/examples/{case}/rounds/{k}/truth  round k's ground-truth mask (PNG, foreground 255)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import grpc
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from model.data.mrmedseg import load
from model.data.real import REAL_DIALOGUES, REAL_SLICES
from model.questions import round_number
from serving.http.errors import GatewayError


@dataclass(frozen=True)
class ExampleRound:
    question: str
    truth: Path | None
    """The ground-truth mask of the round's answer; None when its structure is not in the image."""
    reference: int
    """1-based round the question refers to; 0 when none."""


@dataclass(frozen=True)
class ExampleCase:
    id: str
    image: Path
    modality: str
    scenario: str
    rounds: tuple[ExampleRound, ...]

    def to_json(self) -> dict:
        url = f"/api/v1/examples/{self.id}"
        return {"id": self.id, "title": f"{self.modality}, {self.scenario}: {self.rounds[0].question}",
                "modality": self.modality, "scenario": self.scenario, "note": STORED_AS_PUBLISHED,
                "image_url": f"{url}/image",
                "rounds": [{"number": k, "question": r.question, "reference_round": r.reference,
                            "truth_url": f"{url}/rounds/{k}/truth" if r.truth else None}
                           for k, r in enumerate(self.rounds, 1)]}


STORED_AS_PUBLISHED = ("Shown as published in SA-Med2D, not turned to the radiological convention: some of these "
                       "slices are upside down (the patient's back at the top), and the questions' left, right, "
                       "above and below describe the pixels as shown.")
"""Said beside every example case: the slices are the dataset's pixels, turned as it stores them."""


@functools.cache
def example_cases() -> dict[str, ExampleCase]:
    cases = {}
    for n, conv in enumerate(load(REAL_DIALOGUES)):
        case_id = conv.extra.get("id", f"real_{n}")
        rounds = tuple(ExampleRound(question=r.question, truth=REAL_SLICES / r.mask if r.mask else None,
                                    reference=round_number(r.reference) or 0) for r in conv.rounds)
        cases[case_id] = ExampleCase(case_id, REAL_SLICES / conv.image, conv.extra.get("modality", ""),
                                     conv.extra.get("scenario", ""), rounds)
    return cases


def _case(request: Request) -> ExampleCase:
    case = example_cases().get(request.path_params["case"])
    if case is None:
        raise GatewayError(grpc.StatusCode.NOT_FOUND, f"no example case {request.path_params['case']!r}; the cases "
                           f"are {', '.join(example_cases())}")
    return case


async def list_examples(request: Request) -> JSONResponse:
    return JSONResponse({"examples": [case.to_json() for case in example_cases().values()]})


async def example_image(request: Request) -> FileResponse:
    return FileResponse(_case(request).image, media_type="image/png")


async def example_truth(request: Request) -> FileResponse:
    case, k = _case(request), request.path_params["k"]
    if not 1 <= k <= len(case.rounds):
        raise GatewayError(grpc.StatusCode.NOT_FOUND, f"example {case.id} has rounds 1 to {len(case.rounds)}")
    truth = case.rounds[k - 1].truth
    if truth is None:
        raise GatewayError(grpc.StatusCode.NOT_FOUND, f"round {k} of example {case.id} has no ground-truth mask: "
                           "its structure is not in the image")
    return FileResponse(truth, media_type="image/png")


routes = [
    Route("/api/v1/examples", list_examples, methods=["GET"]),
    Route("/api/v1/examples/{case}/image", example_image, methods=["GET"]),
    Route("/api/v1/examples/{case}/rounds/{k:int}/truth", example_truth, methods=["GET"]),
]
