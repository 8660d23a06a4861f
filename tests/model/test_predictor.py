"""MultiRoundPredictor on a tiny model: state, references, errors, image forms, and cache exactness."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import DynamicCache

from model.data.images import load_image
from model.data.mrmedseg import load
from model.data.template import NOTHING_FOUND
from model.predictor import DialogueState, MultiRoundPredictor
from model.questions import QuestionError, ReferenceRoundError


@pytest.fixture
def predictor(tiny_model, phantom_tokenizer):
    model, cfg = tiny_model
    return MultiRoundPredictor(model, phantom_tokenizer, max_length=cfg.mllm.max_length, max_new_tokens=6)


def test_ask_before_set_image_is_refused(predictor):
    with pytest.raises(RuntimeError, match=r"call set_image\(\) before ask\(\)"):
        predictor.ask("Segment the liver.")


def test_rounds_keep_references_and_report_results_at_original_size(predictor, phantom_root):
    conv = load(phantom_root / "test.json")[0]
    predictor.set_image(phantom_root / conv.image)
    h, w = load_image(phantom_root / conv.image).shape[:2]
    results = [predictor.ask(r.question, answer=r.answer) for r in conv.rounds]
    assert [r.reference_index for r in results] == [r.reference for r in conv.rounds]
    for r in results:
        assert r.has_mask and r.mask.shape == (h, w) and r.mask.dtype == bool and 0.0 <= r.quality <= 1.0
        assert r.seg_vector.shape == (64,)
    assert [r.index for r in predictor.rounds] == list(range(len(conv.rounds)))


def test_bad_questions_and_references_are_clear_errors_and_leave_the_dialogue_intact(predictor, phantom_root):
    predictor.set_image(phantom_root / load(phantom_root / "test.json")[0].image)
    with pytest.raises(QuestionError, match="empty"):
        predictor.ask("   ")
    with pytest.raises(QuestionError, match="at most 96 are accepted"):
        predictor.ask("Segment the liver " * 60)
    with pytest.raises(ReferenceRoundError, match="refers to round 2, but the dialogue has no earlier rounds"):
        predictor.ask("Segment the lesion inside round 2.")
    predictor.ask("Segment the liver.", answer="It is")
    with pytest.raises(ReferenceRoundError, match="round 5 does not exist; the dialogue has rounds 1..1"):
        predictor.ask("Segment the lesion.", reference_index=4)
    second = predictor.ask("Segment its lesion.", answer="Sure,")
    assert second.reference_index == 0 and len(predictor.rounds) == 2


def test_an_answer_without_seg_is_reported_not_a_crash(predictor, phantom_root):
    predictor.set_image(phantom_root / load(phantom_root / "test.json")[0].image)
    result = predictor.ask("Segment the liver.", answer="")  # forced "[SEG]." -> has SEG
    assert result.has_mask
    seg = predictor.model.token_ids["seg"]
    with torch.no_grad():
        predictor.model.mllm.lm_head.weight[seg] = -1e4  # this model can never say [SEG]
    result = predictor.ask("Segment the spleen.")
    assert not result.has_mask and result.quality is None and not result.mask.any() and result.box is None


def test_an_answer_holds_one_seg_and_ends_there_however_much_the_model_wants_more(predictor, phantom_root):
    """The degenerate '...[SEG][SEG][SEG]...' cannot be generated: after [SEG] the template's closing is fed."""
    predictor.set_image(phantom_root / load(phantom_root / "test.json")[0].image)
    seg, eos = predictor.model.token_ids["seg"], predictor.tokenizer.eos_token_id
    bonus = torch.zeros(predictor.model.mllm.lm_head.out_features)
    bonus[seg] = 1e4  # [SEG] is always the likeliest next token
    hook = predictor.model.mllm.lm_head.register_forward_hook(lambda module, args, out: out + bonus)
    try:
        first, second = predictor.ask("Segment the liver."), predictor.ask("Segment the spleen.")
    finally:
        hook.remove()
    closing = predictor.tokenizer(" [SEG]. </s>", add_special_tokens=False)["input_ids"]
    assert predictor.closing == closing[closing.index(seg) + 1:] and predictor.closing[-1] == eos
    for result in (first, second):
        assert result.answer_ids == [seg, *predictor.closing] and result.answer == "[SEG]." and result.has_mask


def nothing_decoded(model):
    """Make ``model``'s mask decoder answer every prompt with an empty mask (all logits far below zero)."""
    return model.sam.mask_decoder.register_forward_hook(lambda module, args, out: (out[0] - 1e4, *out[1:]))


def test_a_seg_that_decodes_to_an_empty_mask_is_a_round_without_a_mask_that_says_so(predictor, phantom_root):
    predictor.set_image(phantom_root / load(phantom_root / "test.json")[0].image)
    with nothing_decoded(predictor.model):
        result = predictor.ask("Segment the liver.", answer="Sure, the liver is")
    assert not result.has_mask and result.answer == NOTHING_FOUND
    assert 0 <= result.quality <= 1 and result.box is None and not result.mask.any()  # the judge's q stays
    assert predictor.tokenizer.decode(result.answer_ids).count("[SEG]") == 1  # the history keeps what was said


@pytest.mark.parametrize("form", ["grey16", "rgba", "grey8", "png_bytes"])
def test_images_in_any_common_form_give_masks_at_their_own_size(predictor, form):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 4096, (70, 90)).astype(np.uint16)
    image = {"grey16": grey, "grey8": (grey // 16).astype(np.uint8),
             "rgba": rng.integers(0, 255, (70, 90, 4)).astype(np.uint8)}.get(form)
    if form == "png_bytes":
        buf = io.BytesIO()
        Image.fromarray(grey).save(buf, format="PNG")
        image = buf.getvalue()
    predictor.set_image(image)
    assert predictor.ask("Segment the liver.", answer="It is").mask.shape == (70, 90)


def test_the_key_value_cache_gives_what_a_full_recompute_gives(predictor, phantom_root):
    """h_c of every round from the incremental cache equals one forward over the whole dialogue."""
    conv = load(phantom_root / "test_hard.json")[0]
    predictor.set_image(phantom_root / conv.image)
    results = [predictor.ask(r.question, answer=r.answer) for r in conv.rounds]
    model, ids = predictor.model, torch.tensor([predictor.state.tokens])
    refs = [results[r.reference_index].mask for r in results if r.reference_index is not None]
    crop, box = model.reference_tokens(predictor.image, refs)
    with torch.no_grad():
        x = model.embed(ids, image_features=predictor.encoding.image_features, crop_tokens=crop, box_tokens=box)
        hidden, _, _ = model.language(x)
        prompts = model.seg_prompts(hidden[model.seg_positions(ids)])
    assert prompts.shape[0] == len(results)
    assert np.allclose(prompts.numpy(), np.stack([r.seg_vector for r in results]), atol=1e-4)


def _rebuilt(predictor, phantom_root, rebuild: str):
    """Four rounds asked; a second predictor rebuilt from the first three by ``rebuild``."""
    conv = load(phantom_root / "test_hard.json")[0]
    predictor.set_image(phantom_root / conv.image)
    done = [predictor.ask(r.question) for r in conv.rounds[:4]]
    other = MultiRoundPredictor(predictor.model, predictor.tokenizer, max_new_tokens=6)
    other.set_image(phantom_root / conv.image)
    getattr(other, rebuild)(done[:3])
    return conv, done, other


def test_restore_rebuilds_a_dialogue_bit_identically(predictor, phantom_root):
    conv, done, other = _rebuilt(predictor, phantom_root, "restore")
    assert other.state.tokens == predictor.state.tokens[: len(other.state.tokens)]
    again = other.ask(conv.rounds[3].question)
    assert again.answer_ids == done[3].answer_ids and np.array_equal(again.mask, done[3].mask)
    assert np.array_equal(again.seg_vector, done[3].seg_vector) or again.seg_vector is done[3].seg_vector is None
    with pytest.raises(RuntimeError, match="fresh dialogue"):
        other.restore(done[:1])


def test_dialogues_decoded_together_answer_as_each_alone(phantom_root):
    """Lockstep decoding over padded caches gives each dialogue the tokens and masks it gets alone."""
    from model.checkpoint import load_checkpoint
    from model.config import SHIPPED_TINY
    from model.predictor import reason_together

    model, tokenizer, cfg = load_checkpoint(SHIPPED_TINY)
    convs = load(phantom_root / "test_hard.json")[:4]
    alone, together = ([MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length) for _ in convs]
                       for _ in range(2))
    for a, b, conv in zip(alone, together, convs, strict=True):
        a.set_image(phantom_root / conv.image)
        b.set_image(phantom_root / conv.image)
    for r in range(max(len(c.rounds) for c in convs)):
        live = [k for k, c in enumerate(convs) if r < len(c.rounds)]
        questions = [together[k].resolve(convs[k].rounds[r].question) for k in live]
        turns = reason_together([together[k] for k in live], questions)
        for k, turn in zip(live, turns, strict=True):
            expected, got = alone[k].ask(convs[k].rounds[r].question), together[k].segment(turn)
            assert got.answer_ids == expected.answer_ids and got.reference_index == expected.reference_index
            assert (got.mask != expected.mask).mean() < 1e-3  # the same up to float rounding of the batch
        assert [together[k].state.tokens for k in live] == [alone[k].state.tokens for k in live]


def test_a_refused_question_in_a_batch_leaves_the_others_running(phantom_root):
    from model.checkpoint import load_checkpoint
    from model.config import SHIPPED_TINY
    from model.predictor import reason_together

    model, tokenizer, cfg = load_checkpoint(SHIPPED_TINY)
    conv = load(phantom_root / "test.json")[0]
    predictors = [MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length) for _ in range(3)]
    for p in predictors:
        p.set_image(phantom_root / conv.image)
    question = conv.rounds[0].question
    with pytest.raises(ReferenceRoundError):  # resolved before the batch, where the dialogue is known
        predictors[2].resolve(question, 3)
    questions = [question, "organ " * 200, question]
    turns = reason_together(predictors, [p.resolve(q) for p, q in zip(predictors, questions, strict=True)])
    assert isinstance(turns[1], QuestionError) and not isinstance(turns[2], Exception)
    assert predictors[1].state.tokens == []  # nothing was prefilled
    alone = MultiRoundPredictor(model, tokenizer, max_length=cfg.mllm.max_length)
    alone.set_image(phantom_root / conv.image)
    assert turns[0].answer_ids == alone.reason(alone.resolve(question)).answer_ids


def test_prefill_rebuilds_a_dialogue_in_one_pass(predictor, phantom_root):
    conv, done, other = _rebuilt(predictor, phantom_root, "prefill")
    assert other.state.tokens == predictor.state.tokens[: len(other.state.tokens)] and len(other.rounds) == 3
    again = other.ask(conv.rounds[3].question)
    assert again.answer_ids == done[3].answer_ids
    if done[3].has_mask:
        assert np.allclose(again.seg_vector, done[3].seg_vector, atol=1e-4)


def test_a_round_keeps_the_normalised_question_so_a_rebuild_retokenises_what_the_cache_holds(predictor,
                                                                                             phantom_root):
    conv = load(phantom_root / "test.json")[0]
    predictor.set_image(phantom_root / conv.image)
    first = predictor.ask("  Segment   the\tliver. ")
    assert first.question == "Segment the liver."
    other = MultiRoundPredictor(predictor.model, predictor.tokenizer, max_new_tokens=6)
    other.set_image(phantom_root / conv.image)
    other.restore([first])
    assert other.state.tokens == predictor.state.tokens


def test_the_dialogue_state_takes_its_pending_tokens_first():
    state = DialogueState(pending=[1])
    with pytest.raises(RuntimeError, match="pending tokens must go into the cache first"):
        state.extend([7, 8], DynamicCache(), None)
    state.extend([1, 7, 8], DynamicCache(), torch.zeros(3))
    assert (state.tokens, state.pending) == ([1, 7, 8], [])
