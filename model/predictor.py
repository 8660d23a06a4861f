"""MultiRoundPredictor: one image, then round after round of questions, a mask every round.

    predictor = MultiRoundPredictor.from_checkpoint("model/checkpoints/tiny")
    predictor.set_image(image)                    # both encoders run once
    r1 = predictor.ask("Segment the left kidney.")
    r2 = predictor.ask("Segment the lesion inside the output of round 1.")

Each round extends one append-only token sequence whose key/value cache is kept, so a round only
prefills its own tokens. The answer is generated greedily; h_c is the last hidden state at the
step where ``[SEG]`` is produced (§3). The referenced round's *predicted* mask gives the
``[CROPPEDIMAGE]`` / ``[BBOXINPUT]`` tokens (§4); the JCM may swap in the corrected vector (§5).

A round is two halves, ``reason`` (language: answer + [SEG] vector) and ``segment`` (JCM + mask),
so a service can run them on different workers; ``restore`` rebuilds a dialogue from its stored
rounds, bit-identically, on a worker that has not seen it (``prefill`` does it in one pass, up to
float rounding). ``reason_together`` runs the rounds of several dialogues as one batch.

A question is normalised and its reference resolved once, into a ``Question`` (``resolve``; a service
that has done it already builds the ``Question`` itself); ``reason`` and ``reason_together`` take it as
it is. Round indexes here are 0-based (``index``, ``reference_index``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import torch
from transformers import DynamicCache

from model.data.images import ImageSource, load_image, mask_box
from model.data.template import BOX_TOKEN, CROP_TOKEN, NOTHING_FOUND, answer_text, human_text
from model.mediround import ImageEncoding, MediRound
from model.questions import Question, QuestionError, resolve_question

REFERENCE_MODES = ("crop+box", "crop", "none")


@dataclass
class RoundResult:
    """What one round produced."""

    index: int  # 0-based round index
    question: str  # normalised
    answer: str  # the generated (or given) answer text, ``[SEG]`` included; NOTHING_FOUND when [SEG] decoded empty
    mask: np.ndarray | None  # (H, W) bool at the image's original resolution; all False without a mask
    # (None only in a round a service holds for its tokens: its mask comes with a round that refers to it)
    box: tuple[int, int, int, int] | None  # mask box (x0, y0, x1, y1) in pixels, inclusive; None if empty
    quality: float | None  # the judge's q of the [SEG] (also when it decoded empty); None without [SEG]
    corrected: bool  # the JCM replaced h_c by its correction
    reference_index: int | None  # 0-based round whose mask fed the reference tokens
    has_mask: bool  # the answer said [SEG] and it decoded to a non-empty mask
    seg_vector: np.ndarray | None = field(default=None, repr=False)  # (P,) the uncorrected SAM prompt
    answer_ids: list[int] = field(default_factory=list, repr=False)  # the answer's tokens, EOS included


@dataclass
class DialogueState:
    """One dialogue's language state, owned by its predictor: every token in the key/value cache, the
    cache, the tokens waiting to go in with the next prefill, and the logits after the last token.

    ``extend`` is the one way it changes; ``batched`` / ``adopt`` let several dialogues run one
    forward pass together and each keep its own row afterwards.
    """

    cache: DynamicCache = field(default_factory=DynamicCache)
    tokens: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # e.g. BOS, fed with the first human turn
    logits: torch.Tensor | None = None  # (V,) after the last token in the cache

    def extend(self, ids: list[int], cache: DynamicCache, logits: torch.Tensor | None) -> None:
        """``ids`` went into ``cache``, the pending tokens first; ``logits`` (V,) follow them."""
        if ids[:len(self.pending)] != self.pending:
            raise RuntimeError("the pending tokens must go into the cache first")
        self.pending = []
        self.tokens += ids
        self.cache = cache
        if logits is not None:
            self.logits = logits

    @staticmethod
    def batched(states: list[DialogueState], empty: torch.Tensor) -> tuple[DynamicCache, list[int]]:
        """The states' caches as one batch, row b left-padded with zeros to the longest; their lengths.

        ``empty`` is a (1, heads, 0, head_dim) tensor standing in for a cache that holds nothing yet.
        """
        lengths = [s.cache.get_seq_length() for s in states]
        longest = max(lengths)
        n_layers = max(len(s.cache.layers) for s in states)

        def kv(state, i, which):
            return getattr(state.cache.layers[i], which) if state.cache.get_seq_length() else empty

        def padded(tensors):  # (1, H, L_b, D) each -> (B, H, longest, D)
            return torch.cat([torch.nn.functional.pad(t, (0, 0, longest - n, 0))
                              for t, n in zip(tensors, lengths, strict=True)])

        return DynamicCache(ddp_cache_data=[(padded([kv(s, i, "keys") for s in states]),
                                             padded([kv(s, i, "values") for s in states]))
                                            for i in range(n_layers)]), lengths

    def next_logits(self) -> torch.Tensor:
        """(V,) the logits after the last token in the cache."""
        if self.logits is None:
            raise RuntimeError("no token has gone into the dialogue's cache yet")
        return self.logits

    def adopt(self, cache: DynamicCache, row: int, keep: torch.Tensor, ids: list[int], logits: torch.Tensor) -> None:
        """Take row ``row`` of a batched cache, only the positions ``keep`` (bool over the batch's length)."""
        layers: list[Any] = list(cache.layers)  # transformers' typing allows layers without keys; ours have them
        own = DynamicCache(ddp_cache_data=[(layer.keys[row:row + 1, :, keep], layer.values[row:row + 1, :, keep])
                                           for layer in layers])
        self.extend(ids, own, logits)


@dataclass
class PreparedRound:
    """A round checked and ready to prefill: its index, its question and the human turn built from it."""

    index: int
    question: Question
    prompt: list[int]  # the human turn's tokens (the dialogue's pending tokens go in before them)


@dataclass
class Turn:
    """The language side of a round, before its mask: what ``reason`` hands to ``segment``."""

    index: int
    question: str  # normalised
    reference_index: int | None
    answer_ids: list[int]
    answer: str
    seg_vector: torch.Tensor | None  # (P,) SAM prompt from h_c; None when no [SEG] was produced


class MultiRoundPredictor:
    """Multi-round inference with one model; not thread-safe (one dialogue at a time).

    ``use_jcm`` toggles the JCM; ``refine`` the model's mask refinement on the image (where its config
    has one); ``reference_mode`` ablates the reference tokens ("crop+box", "crop", "none");
    ``max_question_tokens`` bounds a question (long queries degrade the model).
    """

    def __init__(self, model: MediRound, tokenizer, *, use_jcm: bool = True, refine: bool = True,
                 reference_mode: str = "crop+box", max_new_tokens: int = 32, max_question_tokens: int = 96,
                 max_length: int | None = None):
        if reference_mode not in REFERENCE_MODES:
            raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got '{reference_mode}'")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.use_jcm, self.refine, self.reference_mode = use_jcm, refine, reference_mode
        self.max_new_tokens, self.max_question_tokens = max_new_tokens, max_question_tokens
        self.max_length: int = max_length or _text_config(model).max_position_embeddings
        self.image_tokens = model.image_tokens
        # what follows [SEG] in an answer (the full stop, the end of the turn): fed as it is, never generated
        template = self._tokens(f" {answer_text('')} {tokenizer.eos_token}")  # " [SEG]. </s>"
        self.closing = template[template.index(model.token_ids["seg"]) + 1:]
        self._image: torch.Tensor | None = None
        self.encoding: ImageEncoding | None = None
        self.rounds: list[RoundResult] = []
        self.state = DialogueState()

    @classmethod
    def from_checkpoint(cls, path, *, device: str = "cpu", **kwargs) -> MultiRoundPredictor:
        from model.checkpoint import load_checkpoint

        model, tokenizer, cfg = load_checkpoint(path, device=device)
        return cls(model, tokenizer, max_length=cfg.mllm.max_length, **kwargs)

    # -- state ---------------------------------------------------------------------------------
    def set_image(self, image: ImageSource | torch.Tensor, encoding: ImageEncoding | None = None) -> None:
        """Start a dialogue on ``image`` (path, bytes, PIL, array of any dtype/channels, or uint8 (3, H, W)).

        ``encoding`` reuses an earlier ``model.encode_image`` of the same image (a cache hit).
        """
        if isinstance(image, torch.Tensor):
            picture = image.to(torch.uint8)
        else:
            picture = torch.from_numpy(load_image(image)).permute(2, 0, 1)
        self._image = picture.contiguous()
        with torch.inference_mode():
            self.encoding = encoding or self.model.encode_image(self._image)
        self.rounds = []
        bos = self.tokenizer.bos_token_id
        self.state = DialogueState(pending=[bos] if bos is not None else [])

    @property
    def image_encoding(self) -> ImageEncoding:
        if self.encoding is None:
            raise RuntimeError("call set_image() before ask()")
        return self.encoding

    @property
    def image(self) -> torch.Tensor:
        if self._image is None:
            raise RuntimeError("call set_image() before ask()")
        return self._image

    # -- one round -----------------------------------------------------------------------------
    def ask(self, question: str, reference_index: int | None = None, *, answer: str | None = None,
            answer_has_mask: bool = True) -> RoundResult:
        """Run one round. ``reference_index`` (0-based) overrides what the question says; ``answer`` forces
        the answer phrase (teacher forcing, the paper's evaluation protocol) instead of generating it, followed
        by ``[SEG]`` unless ``answer_has_mask`` is False (a structure the image does not show).
        """
        return self.segment(self.reason(self.resolve(question, reference_index), answer=answer,
                                        answer_has_mask=answer_has_mask))

    def resolve(self, question: str, reference_index: int | None = None) -> Question:
        """The next round's question normalised and its reference resolved (``reference_index`` when given,
        checked; else what the question says). A reference to a round without a mask is allowed here, its crop
        and box then the whole image's: evaluation carries a dialogue on past a round that found nothing, so
        that later rounds keep their numbers; the service refuses it (``serving.front.dialogue``)."""
        if self._image is None:
            raise RuntimeError("call set_image() before ask()")
        return resolve_question(question, len(self.rounds), reference_index)

    @torch.inference_mode()
    def reason(self, question: Question, *, answer: str | None = None, answer_has_mask: bool = True) -> Turn:
        """The language side of a round: prefill, generate (or force) the answer, take h_c."""
        prepared = self.prepare(question)
        hidden = self._open_round(prepared.prompt, question.reference_index)
        if answer is None:
            answer_ids, h_c = self._generate(hidden)
        else:
            forced = answer_text(answer, has_mask=answer_has_mask)
            answer_ids, h_c = self._force(self._tokens(f" {forced} {self.tokenizer.eos_token}"), hidden)
        return self.finish(prepared, answer_ids, h_c)

    def prepare(self, question: Question) -> PreparedRound:
        """Check that the next round's resolved question fits the model and build its human turn; nothing
        changes until the round is prefilled."""
        if self._image is None:
            raise RuntimeError("call set_image() before ask()")
        n_tokens = len(self.tokenizer(question.text, add_special_tokens=False)["input_ids"])
        if n_tokens > self.max_question_tokens:
            raise QuestionError(f"the question is {n_tokens} tokens long; at most {self.max_question_tokens} are "
                                "accepted (long queries degrade the model): shorten it")
        index = len(self.rounds)
        prompt = self._prompt(question.text, index, question.reference_index)
        if len(self.state.tokens) + len(self.state.pending) + len(prompt) + self.max_new_tokens > self.max_length:
            raise QuestionError(f"the dialogue would exceed the model's {self.max_length}-token context; "
                                "start a new session on this image")
        return PreparedRound(index=index, question=question, prompt=prompt)

    def finish(self, prepared: PreparedRound, answer_ids: list[int], h_c: torch.Tensor | None) -> Turn:
        """The ``Turn`` of a prepared round once its answer is in the cache (``h_c``: the [SEG] state or None)."""
        special = {self.tokenizer.eos_token_id}
        text = self.tokenizer.decode([t for t in answer_ids if t not in special]).strip()
        seg_vector = None if h_c is None else self.model.seg_prompts(h_c[None])[0]
        return Turn(index=prepared.index, question=prepared.question.text,
                    reference_index=prepared.question.reference_index, answer_ids=answer_ids, answer=text,
                    seg_vector=seg_vector)

    @torch.inference_mode()
    def segment(self, turn: Turn) -> RoundResult:
        """The mask side: JCM and SAM decoding of the turn's [SEG] vector; appends the round."""
        if turn.index != len(self.rounds):
            raise RuntimeError(f"turn {turn.index} does not follow the dialogue's {len(self.rounds)} rounds")
        h, w = self.image.shape[-2:]
        result = RoundResult(index=turn.index, question=turn.question, answer=turn.answer,
                             mask=np.zeros((h, w), bool), box=None, quality=None, corrected=False,
                             reference_index=turn.reference_index, has_mask=False, answer_ids=turn.answer_ids)
        if turn.seg_vector is not None:
            mask, q, corrected = judge_and_decode(self.model, self.image_encoding, turn.seg_vector[None], self.use_jcm,
                                                  self.image if self.refine else None)
            box = mask_box(mask[0])
            if box is None:  # an empty mask: the round found nothing (the judge's q kept: evaluation scores it)
                result = replace(result, answer=NOTHING_FOUND, quality=float(q[0]), corrected=bool(corrected[0]),
                                 seg_vector=turn.seg_vector.float().cpu().numpy())
            else:
                result = replace(result, mask=mask[0], box=box, quality=float(q[0]), corrected=bool(corrected[0]),
                                 has_mask=True, seg_vector=turn.seg_vector.float().cpu().numpy())
        self.rounds.append(result)
        return result

    @torch.inference_mode()
    def restore(self, rounds: list[RoundResult]) -> None:
        """Rebuild the dialogue state (cache included) from earlier rounds on this image, as they ran.

        Replays each round exactly as ``ask`` ran it when generating (prompt prefill, then the answer
        one token at a time), so the state is bit-identical to the one that produced them.
        """
        if self._image is None:
            raise RuntimeError("call set_image() before restore()")
        if self.rounds:
            raise RuntimeError("restore() needs a fresh dialogue: call set_image() first")
        for r in rounds:
            self._open_round(self._prompt(r.question, r.index, r.reference_index), r.reference_index)
            for token in r.answer_ids:
                self._step(token)
            self.rounds.append(r)

    @torch.inference_mode()
    def prefill(self, rounds: list[RoundResult]) -> None:
        """Rebuild the dialogue from earlier rounds in one forward pass, as a stateless server would
        recompute it every round; equal to ``restore`` up to float rounding, not bit for bit."""
        if self._image is None or self.rounds:
            raise RuntimeError("prefill() needs a fresh dialogue: call set_image() first")
        ids, masks = [], []
        for r in rounds:
            ids += self._prompt(r.question, r.index, r.reference_index) + r.answer_ids
            masks += [] if r.reference_index is None else [rounds[r.reference_index].mask]
        if ids:
            self._prefill(ids, masks)
        self.rounds = list(rounds)

    def _prompt(self, question: str, index: int, reference_index: int | None) -> list[int]:
        text = human_text(question, index, reference_index is not None)
        if self.reference_mode != "crop+box":
            text = text.replace(BOX_TOKEN, "")
        if self.reference_mode == "none":
            text = text.replace(CROP_TOKEN, "")
        return self._tokens(f"[INST] {text} [/INST]")

    def _open_round(self, prompt: list[int], reference_index: int | None) -> torch.Tensor:
        """Prefill the round's human turn (with the referenced round's mask); the last hidden state."""
        return self._prefill(prompt, [] if reference_index is None else [self.rounds[reference_index].mask])

    def _tokens(self, text: str) -> list[int]:
        """Tokenize a template piece as training does, expanding ``<image>`` to the patch-token count."""
        image_id = self.model.token_ids["image"]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [t for i in ids for t in ([image_id] * self.image_tokens if i == image_id else [i])]

    def _prefill(self, ids: list[int], ref_masks: list[np.ndarray | None]) -> torch.Tensor:
        """Feed the pending tokens and ``ids`` (with one referenced mask per reference) through the cache;
        the last hidden state (d,)."""
        ids = self.state.pending + ids
        m, t = self.model, torch.tensor([ids], device=self.model.device)
        crop, box = reference_embeddings(m, t, self.image, ref_masks, [self.image_encoding] * len(ref_masks))
        features = self.image_encoding.image_features if (t == m.token_ids["image"]).any() else None
        x = m.embed(t, image_features=features, crop_tokens=crop, box_tokens=box)
        hidden, logits, cache = m.language(x, cache=self.state.cache)
        self.state.extend(ids, cache, logits[0, -1])
        return hidden[0, -1]

    def _step(self, token: int) -> torch.Tensor:
        return self._prefill([token], [])

    def _generate(self, hidden: torch.Tensor) -> tuple[list[int], torch.Tensor | None]:
        """Greedy decoding up to EOS, one token per step through the cache; h_c is the state that produced
        the first [SEG]."""
        def step(tokens: list[int], done: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
            return self._step(tokens[0])[None], self.state.next_logits()[None]

        outs, h_cs = greedy_decode(self.state.next_logits()[None], hidden[None], step, eos=self.tokenizer.eos_token_id,
                                   seg=self.model.token_ids["seg"], limit=self.max_new_tokens, closing=self.closing)
        return outs[0], h_cs[0]

    def _force(self, ids: list[int], hidden: torch.Tensor) -> tuple[list[int], torch.Tensor | None]:
        """Feed a given answer; h_c is the state at the position before its [SEG]."""
        seg = self.model.token_ids["seg"]
        before = torch.cat([hidden[None], self._states(ids[:-1])])  # state before each answer token
        where = [k for k, t in enumerate(ids) if t == seg]
        return ids, (before[where[0]] if where else None)

    def _states(self, ids: list[int]) -> torch.Tensor:
        """Feed ``ids`` one prefill; hidden states (n, d) of every position."""
        m, t = self.model, torch.tensor([ids], device=self.model.device)
        hidden, logits, cache = m.language(m.embed(t), cache=self.state.cache)
        self.state.extend(ids, cache, logits[0, -1])
        return hidden[0]


@torch.inference_mode()
def reason_together(predictors: list[MultiRoundPredictor], questions: list[Question]) -> list[Turn | Exception]:
    """One generated round for each of several dialogues (predictors sharing one model), as one batch.

    The dialogues' key/value caches are merged into one batch, each row left-padded and masked;
    the new human turns are prefilled together (each left-padded to the longest), then every greedy
    step runs all dialogues at once; afterwards each dialogue's state keeps its own tokens. Each
    dialogue gets the tokens it gets alone (equal up to float rounding). One dialogue alone takes
    ``reason`` itself. Each question is resolved already (``MultiRoundPredictor.resolve``, or by the
    caller); one that does not fit the model comes back as its ``QuestionError``, in its place.
    """
    if len(predictors) == 1:
        try:
            return [predictors[0].reason(questions[0])]
        except QuestionError as e:
            return [e]
    results: list[Turn | Exception | None] = [None] * len(predictors)
    opened: list[tuple[int, MultiRoundPredictor, PreparedRound]] = []
    for k, (p, question) in enumerate(zip(predictors, questions, strict=True)):
        try:
            opened.append((k, p, p.prepare(question)))
        except QuestionError as e:
            results[k] = e
    if opened:
        answers = _round_together([p for _, p, _ in opened], [prepared for *_, prepared in opened])
        for (k, p, prepared), (answer_ids, h_c) in zip(opened, answers, strict=True):
            results[k] = p.finish(prepared, answer_ids, h_c)
    return cast(list[Turn | Exception], results)  # every dialogue got its turn or its error


def _round_together(predictors: list[MultiRoundPredictor], rounds: list[PreparedRound],
                    ) -> list[tuple[list[int], torch.Tensor | None]]:
    """Prefill the prepared rounds' human turns and decode them greedily, all in one batch, as
    ``MultiRoundPredictor._open_round`` and ``_generate`` do for one: (answer ids, h_c) per dialogue."""
    first = predictors[0]
    model, tokenizer, limit = first.model, first.tokenizer, first.max_new_tokens
    eos, seg, n = tokenizer.eos_token_id, model.token_ids["seg"], len(predictors)
    text = _text_config(model)
    empty = torch.zeros(1, text.num_key_value_heads, 0, text.head_dim or text.hidden_size // text.num_attention_heads,
                        device=model.device, dtype=model.dtype)
    states = [p.state for p in predictors]
    cache, lengths = DialogueState.batched(states, empty)  # row b: [padding][its cache]
    cache_pad = [max(lengths) - length for length in lengths]

    # the new human turns, each left-padded to the longest, with their image / reference embeddings
    ids = [state.pending + r.prompt for state, r in zip(states, rounds, strict=True)]
    width = max(map(len, ids))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    new = torch.tensor([[pad_id] * (width - len(row)) + row for row in ids], device=model.device)
    valid = torch.tensor([[0] * w + [1] * (max(lengths) - w) + [0] * (width - len(row)) + [1] * len(row)
                          for w, row in zip(cache_pad, ids, strict=True)], device=model.device)
    positions = torch.tensor([[0] * (width - len(row)) + list(range(n0, n0 + len(row)))
                              for n0, row in zip(lengths, ids, strict=True)])
    referenced = [(p, p.rounds[r.question.reference_index].mask) for p, r in zip(predictors, rounds, strict=True)
                  if r.question.reference_index is not None]
    crop, box = reference_embeddings(model, new, [p.image for p, _ in referenced], [m for _, m in referenced],
                                     [p.image_encoding for p, _ in referenced])
    with_image = [(new[b] == model.token_ids["image"]).any() for b in range(n)]
    seen = [p.image_encoding.image_features for p, has in zip(predictors, with_image, strict=True) if has]
    features = torch.stack(seen) if seen else None
    x = model.embed(new, image_features=features, crop_tokens=crop, box_tokens=box)
    out, logits, cache = model.language(x, attention_mask=valid, cache=cache, position_ids=positions.to(model.device))
    hidden, logits = out[:, -1], logits[:, -1]
    ends = torch.tensor([n0 + len(row) for n0, row in zip(lengths, ids, strict=True)])

    # greedy decoding in lockstep: a dialogue that is done is fed along, masked out, and keeps its last logits
    last_logits = list(logits)
    steps = 0

    def step(tokens: list[int], done: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal valid, cache, steps
        valid = torch.cat([valid, torch.tensor([[0 if d else 1] for d in done], device=model.device)], dim=1)
        x = model.embed(torch.tensor(tokens, device=model.device)[:, None])
        out, step_logits, cache = model.language(x, attention_mask=valid, cache=cache,
                                                 position_ids=(ends + steps)[:, None].to(model.device))
        steps += 1
        for b in range(n):
            if not done[b]:
                last_logits[b] = step_logits[b, -1]
        return out[:, -1], step_logits[:, -1]

    outs, h_cs = greedy_decode(logits, hidden, step, eos=eos, seg=seg, limit=limit, closing=first.closing)

    # each dialogue keeps exactly its own tokens: no padding, nothing fed after its EOS
    for b, state in enumerate(states):
        state.adopt(cache, b, valid[b].bool(), ids[b] + outs[b], last_logits[b])
    return list(zip(outs, h_cs, strict=True))


def _text_config(model: MediRound) -> Any:
    """The language model's transformers config (torch types a module's attributes too loosely to check)."""
    mllm: Any = model.mllm
    return mllm.config.text_config


def reference_embeddings(model: MediRound, ids: torch.Tensor, images: torch.Tensor | list[torch.Tensor],
                         masks: list[np.ndarray | None], encodings: list[ImageEncoding]
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The ``[CROPPEDIMAGE]`` and ``[BBOXINPUT]`` embeddings (N, d) of the referenced ``masks`` (on one image, or
    one image per mask, with its ``encodings``), each only when ``ids`` holds its token (the reference mode may
    drop one or both)."""
    has_crop, has_box = bool((ids == model.token_ids["crop"]).any()), bool((ids == model.token_ids["box"]).any())
    if not masks or not (has_crop or has_box):
        return None, None
    crop, box = model.reference_tokens(images, masks, encodings)
    return (crop if has_crop else None), (box if has_box else None)


def greedy_decode(logits: torch.Tensor, hidden: torch.Tensor,
                  step: Callable[[list[int], list[bool]], tuple[torch.Tensor, torch.Tensor]], *, eos: int, seg: int,
                  limit: int, closing: Sequence[int] = ()) -> tuple[list[list[int]], list[torch.Tensor | None]]:
    """Greedy decoding of B dialogues in lockstep: (answer tokens, h_c) of each.

    ``logits`` (B, V) and ``hidden`` (B, d) follow each dialogue's last token; ``step(tokens, done)`` feeds one
    token per dialogue (``done``: it had already ended) and returns the next hidden states (B, d) and logits
    (B, V). A dialogue ends at EOS; past ``limit`` tokens EOS is fed anyway, closing the turn so that the next
    round's template stays intact. h_c is the hidden state that produced the dialogue's first [SEG] (None
    without one). ``closing``: the template's tokens after ``[SEG]`` (the full stop and the end of the turn), fed
    as they are once a dialogue has said ``[SEG]``, so an answer holds one ``[SEG]`` and ends there.
    """
    n = logits.shape[0]
    outs: list[list[int]] = [[] for _ in range(n)]
    h_cs: list[torch.Tensor | None] = [None] * n
    forced: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for k in range(limit + 1):
        chosen = logits.argmax(-1).tolist() if k < limit else [eos] * n
        tokens = [f.pop(0) if f and k < limit else c for f, c in zip(forced, chosen, strict=True)]
        for b, token in enumerate(tokens):
            if not done[b]:
                if token == seg and h_cs[b] is None:
                    h_cs[b], forced[b] = hidden[b], list(closing)
                outs[b].append(token)
        hidden, logits = step(tokens, done)
        done = [d or token == eos for d, token in zip(done, tokens, strict=True)]
        if all(done):
            break
    return outs, h_cs


def judge_and_decode(model: MediRound, encoding: ImageEncoding, prompts: torch.Tensor, use_jcm: bool = True,
                     image: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[SEG] vectors (N, P) of one image -> masks (N, H, W) bool, quality q (N,), corrected (N,) bool.

    The JCM judges every vector; with ``use_jcm`` the weak ones are decoded from their correction.
    ``image`` (uint8 (3, H, W)) lets the model refine the masks on it.
    """
    decoded, q, corrected = model.jcm(prompts)
    if not use_jcm:
        decoded, corrected = prompts, torch.zeros_like(corrected)
    logits = model.decode_masks(encoding.sam_embedding, decoded, encoding.input_size, encoding.original_size, image)
    return (logits > 0).cpu().numpy(), q.float().cpu().numpy(), corrected.cpu().numpy()
