"""The tokenizer: the tiny model's own BPE trained on the phantom corpus, or the full model's with our tokens.

Both end up as a transformers fast tokenizer whose vocabulary holds ``<image>``, ``[SEG]``,
``[CROPPEDIMAGE]`` and ``[BBOXINPUT]`` as special (never split) tokens, BOS ``<s>``, EOS ``</s>``
and a pad token.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import cast

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from model.data.template import BOX_TOKEN, CROP_TOKEN, IMAGE_TOKEN, SEG_TOKEN

BASE_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
MODEL_SPECIALS = [IMAGE_TOKEN, SEG_TOKEN, CROP_TOKEN, BOX_TOKEN]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A sentencepiece-style BPE (``▁`` marks word starts) trained on ``texts``.

    Every printable ASCII character is in the initial alphabet, so unseen words (paraphrases, real
    clinical questions) still tokenize, letter by letter at worst, never to ``<unk>``.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = list(string.ascii_letters + string.digits + string.punctuation) + ["▁", "\n"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BASE_SPECIALS + MODEL_SPECIALS,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens=MODEL_SPECIALS)


def load_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """A saved tokenizer, with the MediRound tokens added if the base vocabulary lacks them (LLaVA-Med)."""
    tokenizer = cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(path))  # saved with tokenizer.json
    missing = [t for t in MODEL_SPECIALS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def token_ids(tokenizer) -> dict[str, int]:
    """Ids of the four model tokens, keyed ``image``, ``seg``, ``crop``, ``box``."""
    ids = {name: tokenizer.convert_tokens_to_ids(tok)
           for name, tok in zip(("image", "seg", "crop", "box"), MODEL_SPECIALS, strict=True)}
    unknown = [name for name, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"tokenizer lacks the model tokens {unknown}; expected {MODEL_SPECIALS} in its vocabulary")
    return ids
