"""The dialogue template (official ``mistral_instruct``) and its tokenisation with answer-only labels.

    [INST] <image>\\n Q1 [/INST] [SEG]. </s>[INST] [CROPPEDIMAGE][BBOXINPUT] Q2 [/INST] A2 [SEG]. </s>...

The whole dialogue is one append-only sequence; the loss covers only each round's answer and its
end-of-turn token (reference notes §2). Answers name what they segment ("Sure, the right putamen
is [SEG]."); a round about a structure the image does not show has no mask and answers in words
alone, without ``[SEG]`` ("There is no left kidney in this image.").
"""

from __future__ import annotations

from model.data.mrmedseg import Round

IMAGE_TOKEN = "<image>"
SEG_TOKEN = "[SEG]"
CROP_TOKEN = "[CROPPEDIMAGE]"
BOX_TOKEN = "[BBOXINPUT]"
SPECIAL_TOKENS = (IMAGE_TOKEN, SEG_TOKEN, CROP_TOKEN, BOX_TOKEN)
IGNORE_INDEX = -100
NOTHING_FOUND = "Nothing was found for this in the image."
"""A round's answer when its ``[SEG]`` decoded to an empty mask: the words promised a mask the image did not give,
so the round is one without a mask (the generated tokens stay the dialogue's history)."""


def human_text(question: str, index: int, has_reference: bool) -> str:
    """The human side of round ``index`` with MR-MedSeg tokens rewritten for the model."""
    if index == 0:
        return f"{IMAGE_TOKEN}\n {question}"
    return f"{CROP_TOKEN}{BOX_TOKEN} {question}" if has_reference else question


def answer_text(answer: str, *, has_mask: bool = True) -> str:
    """The gpt side: the answer phrase (possibly empty) followed by ``[SEG].``; without a mask (the structure is
    not in the image), the answer's sentence as it is, with no ``[SEG]``."""
    if not has_mask:
        if SEG_TOKEN in answer or not any(c.isalnum() for c in answer):
            raise ValueError(f"an answer without a mask says in words that the structure is not there, without "
                             f"{SEG_TOKEN}; got {answer!r}")
        return answer
    return f"{answer} {SEG_TOKEN}." if answer else f"{SEG_TOKEN}."


def round_segments(rounds: list[Round], eos: str = "</s>") -> list[tuple[str, bool]]:
    """The dialogue as (text, is_answer) pieces in order; joined they give the full template."""
    pieces = []
    for k, r in enumerate(rounds):
        pieces.append((f"[INST] {human_text(r.question, k, r.reference is not None)} [/INST]", False))
        pieces.append((f" {answer_text(r.answer, has_mask=r.has_mask)} {eos}", True))
    return pieces


def dialogue_text(rounds: list[Round], eos: str = "</s>") -> str:
    """The full template string of a dialogue."""
    return "".join(text for text, _ in round_segments(rounds, eos))


def tokenize_dialogue(tokenizer, rounds: list[Round], *, image_tokens: int) -> tuple[list[int], list[int]]:
    """input_ids and labels (prompt pieces masked with -100) for a dialogue.

    ``tokenizer`` is a transformers tokenizer whose vocabulary holds SPECIAL_TOKENS; ``<image>`` is
    expanded to ``image_tokens`` copies, as LLaVA expects in ``input_ids``.
    """
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    labels = [IGNORE_INDEX] * len(ids)
    for text, is_answer in round_segments(rounds, eos=tokenizer.eos_token):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not is_answer:
            expanded = []
            for t in piece:
                expanded += [image_id] * image_tokens if t == image_id else [t]
            piece = expanded
        ids += piece
        labels += piece if is_answer else [IGNORE_INDEX] * len(piece)
    return ids, labels
