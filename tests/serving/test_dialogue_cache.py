"""Key/value reuse across rounds: a dialogue's cache stays on the worker that ran its last round; a
round that lands elsewhere rebuilds the dialogue from the stored history and answers identically.
Real Redis, two in-process pipelines (two workers) sharing it, the shipped model."""

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.predictor import MultiRoundPredictor
from model.questions import round_number
from serving.front.dialogue import Dialogue
from serving.messages import Encoding, PriorTurn, ReasonRequest
from serving.replicas.settings import ReasonerSettings
from serving.replicas.steps import ImageEncoderStep, LocalPipeline, ReasonerStep
from serving.store import Conflict, RedisSessionStore


def test_rounds_reuse_the_cache_and_a_moved_round_rebuilds_it_identically(redis_url, phantom_root):
    conv = max(load(phantom_root / "test_hard.json"), key=lambda c: len(c.rounds))
    image = (phantom_root / conv.image).read_bytes()
    questions = [r.question for r in conv.rounds]
    assert len(questions) >= 6
    worker = {name: LocalPipeline(str(SHIPPED_TINY), redis_url=redis_url) for name in ("a", "b")}
    plan = ["a", "a", "b", "a", "a", "a"]  # round 3 on the other worker; round 4 back on a stale cache

    async def served():
        store = RedisSessionStore(redis_url)
        try:
            dialogues = {name: Dialogue(store, pipeline) for name, pipeline in worker.items()}
            session = await dialogues["a"].create_session(image)
            return [await dialogues[w].run_round(session.session_id, q) for w, q in zip(plan, questions, strict=False)]
        finally:
            await store.close()

    records = asyncio.run(served())
    local = MultiRoundPredictor.from_checkpoint(SHIPPED_TINY)
    local.set_image(image)
    for record, question in zip(records, questions, strict=False):
        expected = local.ask(question)
        assert record.answer_ids == expected.answer_ids and record.question == " ".join(question.split())
        assert record.reference_round == round_number(expected.reference_index)
        if expected.has_mask:
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(record.mask_png))) > 0, expected.mask)
    a, b = worker["a"].reasoner, worker["b"].reasoner
    assert (a.reused, a.rebuilt) == (3, 2)  # new dialogue, then 2 reused; rebuilt after b's round; 2 reused
    assert (b.reused, b.rebuilt) == (0, 1)


def test_the_dialogue_cache_is_a_bounded_lru(phantom_root):
    conv = load(phantom_root / "test.json")[0]
    encoded = ImageEncoderStep(str(SHIPPED_TINY)).compute([("sha", (phantom_root / conv.image).read_bytes())])[0]
    step = ReasonerStep(str(SHIPPED_TINY), settings=ReasonerSettings(dialogue_cache_size=2))

    def first_round(session_id):
        return ReasonRequest(session_id, Encoding(encoded, True), conv.rounds[0].question, None, [])

    for session_id in ("s1", "s2", "s1", "s3"):
        step.reason(first_round(session_id))
    assert step.dialogues.keys() == ["s1", "s3"]
    step.reason(first_round(None))  # a stateless round keeps nothing
    assert step.dialogues.keys() == ["s1", "s3"]


def test_a_round_reasoned_from_a_history_the_store_does_not_hold_is_a_conflict(redis_url, phantom_root):
    """A replica rebuilding a dialogue checks the stored rounds are the ones the round was computed from."""
    conv = load(phantom_root / "test.json")[0]
    image = (phantom_root / conv.image).read_bytes()

    async def served():
        store = RedisSessionStore(redis_url)
        try:
            session = await store.create_session(image, "sha-conflict", (1, 1))
            return session.session_id
        finally:
            await store.close()

    session_id = asyncio.run(served())
    encoded = ImageEncoderStep(str(SHIPPED_TINY)).compute([("sha-conflict", image)])[0]
    step = ReasonerStep(str(SHIPPED_TINY), redis_url=redis_url)
    claimed = [PriorTurn("Segment the liver.", None, (5, 2))]  # a round the store never got
    with pytest.raises(Conflict, match="changed while its round was being reasoned"):
        step.reason(ReasonRequest(session_id, Encoding(encoded, False), "Segment its lesion.", 1, claimed))
