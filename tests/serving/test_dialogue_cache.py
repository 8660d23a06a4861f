"""Key/value reuse across rounds: a dialogue's cache stays on the worker that ran its last round; a
round that lands elsewhere rebuilds the dialogue from the stored history and answers identically.
Real Redis, two in-process pipelines (two workers) sharing it, the shipped model."""

import asyncio
import io

import numpy as np
from PIL import Image

from model.config import SHIPPED_TINY
from model.data.mrmedseg import load
from model.predictor import MultiRoundPredictor
from serving.deployments import LocalPipeline
from serving.dialogue import Dialogue
from serving.store import RedisSessionStore


def test_rounds_reuse_the_cache_and_a_moved_round_rebuilds_it_identically(redis_url, phantom_root):
    conv = max(load(phantom_root / "test_hard.json"), key=lambda c: len(c.rounds))
    image = (phantom_root / conv.image).read_bytes()
    questions = [r.question for r in conv.rounds]
    assert len(questions) >= 6
    worker = {"a": LocalPipeline(str(SHIPPED_TINY)), "b": LocalPipeline(str(SHIPPED_TINY))}
    plan = ["a", "a", "b", "a", "a", "a"]  # round 3 on the other worker; round 4 back on a stale cache

    async def served():
        store = RedisSessionStore(redis_url)
        try:
            dialogues = {name: Dialogue(store, pipeline) for name, pipeline in worker.items()}
            session = await dialogues["a"].create_session(image)
            return [await dialogues[w].run_round(session.id, q) for w, q in zip(plan, questions, strict=False)]
        finally:
            await store.close()

    records = asyncio.run(served())
    local = MultiRoundPredictor.from_checkpoint(SHIPPED_TINY)
    local.set_image(image)
    for record, question in zip(records, questions, strict=False):
        expected = local.ask(question)
        assert record.answer_ids == expected.answer_ids and record.reference == expected.reference
        if expected.has_seg:
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(record.mask_png))) > 0, expected.mask)
    a, b = worker["a"].reasoner, worker["b"].reasoner
    assert (a.reused, a.rebuilt) == (3, 2)  # new dialogue, then 2 reused; rebuilt after b's round; 2 reused
    assert (b.reused, b.rebuilt) == (0, 1)


def test_the_dialogue_cache_is_a_bounded_lru(phantom_root):
    from serving.deployments import ImageEncoderCore, ReasonerCore

    conv = load(phantom_root / "test.json")[0]
    encoded = ImageEncoderCore(str(SHIPPED_TINY)).compute([("sha", (phantom_root / conv.image).read_bytes())])[0]
    core = ReasonerCore(str(SHIPPED_TINY), cache_size=2)
    for dialogue in ("s1", "s2", "s1", "s3"):
        core.reason(encoded, [], conv.rounds[0].question, None, dialogue)
    assert list(core.dialogues) == ["s1", "s3"]
    core.reason(encoded, [], conv.rounds[0].question, None)  # a stateless round keeps nothing
    assert list(core.dialogues) == ["s1", "s3"]
