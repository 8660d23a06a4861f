"""Rewording training questions: what a question asks for survives, the wording varies, held-out words stay unseen."""

import re
from collections import Counter

import numpy as np
import pytest

from model.data.brain import knowledge as brain_knowledge
from model.data.dataset import MRMedSegDataset
from model.data.mrmedseg import load
from model.data.phantoms import knowledge as phantom_knowledge
from model.data.rewording import TextAugment, pseudo_word, reword, vocabulary
from model.questions import ReferenceRoundError, resolve_reference

ALWAYS = TextAugment(p=1.0)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _words(texts) -> set[str]:
    return {w.lower() for t in texts for w in _WORD.findall(t)}


def _resolved(question: str, rounds_so_far: int):
    try:
        return resolve_reference(question, rounds_so_far)
    except ReferenceRoundError:
        return "error"


def _sides(question: str) -> Counter:
    return Counter(w for w in _WORD.findall(question.lower()) if w in ("left", "right"))


@pytest.fixture(scope="module")
def dialogues(phantom_root, small_brain_root):
    return load(phantom_root / "train.json") + load(small_brain_root / "train.json")


def test_a_reworded_question_keeps_its_target_names_sides_and_reference(dialogues):
    rng = np.random.default_rng(0)
    changed = total = 0
    for conv in dialogues:
        names = sorted({m["category"] for m in conv.extra["rounds_meta"]})
        for k, r in enumerate(conv.rounds):
            for _ in range(3):
                new = reword(r.question, rng, ALWAYS, names=names, first=k == 0)
                total += 1
                changed += new != r.question
                assert _resolved(new, k) == _resolved(r.question, k), (r.question, new)
                assert _sides(new) == _sides(r.question), (r.question, new)
                for name in names:
                    assert (name in r.question.lower()) <= (name in new.lower()), (name, r.question, new)
                for ref in re.findall(r"\b(?:round|instance) \d+\b", r.question):
                    assert ref in new, (r.question, new)
                if k == 0:
                    assert not new.startswith(("Now", "Next", "Then", "Also")), new
                assert new[0].isupper() and new[-1] in ".?", new
    assert changed > 0.7 * total  # p=1: nearly every question changes (a draw may leave one as it was)


def test_the_rewording_brings_no_word_of_the_held_out_phrasings_that_training_lacks():
    """test_unseen stays unseen: its frames and relation phrases are only built from words training had anyway."""
    trained, held_out = set(), set()
    for relations in (phantom_knowledge.RELATIONS, brain_knowledge.RELATIONS):
        for rel in relations:
            for style in ("round", "instance", "its"):
                trained |= _words(phantom_knowledge.question_variants(rel, style, 2, held_out=False))
                held_out |= _words(phantom_knowledge.question_variants(rel, style, 2, held_out=True))
    trained |= _words(phantom_knowledge.absolute_questions("x", held_out=False))
    held_out |= _words(phantom_knowledge.absolute_questions("x", held_out=True))
    novel = held_out - trained
    assert {"pick", "produce", "boundary", "opposite", "harbours"} <= novel  # the check can fail
    assert not vocabulary() & novel, sorted(vocabulary() & novel)
    rng = np.random.default_rng(1)
    fakes = {pseudo_word(rng) for _ in range(3000)}
    assert not fakes & (novel | trained) and all(set(w) & set("qxzjkvwy") and 5 <= len(w) <= 7 for w in fakes)


def test_rewording_varies_the_frames_and_is_a_pure_function_of_the_generator(dialogues):
    questions = [r.question for conv in dialogues for r in conv.rounds]
    a = [reword(q, np.random.default_rng([7, i]), TextAugment()) for i, q in enumerate(questions)]
    b = [reword(q, np.random.default_rng([7, i]), TextAugment()) for i, q in enumerate(questions)]
    assert a == b
    share = np.mean([x != q for x, q in zip(a, questions, strict=True)])
    assert 0.3 < share < 0.6  # p=0.5, most reworded questions change
    openings = {" ".join(q.split()[:2]) for q in questions}
    assert len({" ".join(x.split()[:2]) for x in a}) > 1.5 * len(openings)
    plain = TextAugment(p=0.0)
    assert [reword(q, np.random.default_rng(0), plain) for q in questions] == questions
    with pytest.raises(ValueError, match="dropout must be a probability"):
        TextAugment(dropout=1.5)


def test_the_dataset_rewords_training_questions_and_keeps_one_seg_per_round(phantom_root, phantom_tokenizer):
    plain = MRMedSegDataset(phantom_root, "train", tokenizer=phantom_tokenizer, image_tokens=4)
    seen = [MRMedSegDataset(phantom_root, "train", tokenizer=phantom_tokenizer, image_tokens=4,
                            text_augment=TextAugment(seed=3)) for _ in range(2)]
    items = [[ds[i] for i in range(len(ds))] for ds in seen]
    assert [x["text"] for x in items[0]] == [x["text"] for x in items[1]]  # the same seed reads the same words
    assert sum(x["text"] != plain[i]["text"] for i, x in enumerate(items[0])) > len(plain) // 2
    seg = phantom_tokenizer.convert_tokens_to_ids("[SEG]")

    def answers(text):
        return [piece.split("</s>")[0] for piece in text.split("[/INST]")[1:]]

    for i, x in enumerate(items[0]):
        assert int((x["labels"] == seg).sum()) == len(plain.conversations[i].rounds)
        assert answers(x["text"]) == answers(plain[i]["text"])  # only questions change
