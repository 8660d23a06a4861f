// The transcript: one entry per round, in order. Its chip carries the round's colour and name (click: the next
// question refers to it), "refers to round k" comes from the server's reference_round, the quality is said in plain
// words (the estimated overlap with the true structure), warned about at or below the JCM threshold and marked when
// the JCM redrew the mask; errors show inline.

import { colourOf, css } from "./palette.js";

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text != null) el.textContent = text;
  return el;
}

export function percent(fraction) {
  return `${Math.round(100 * fraction)}%`;
}

// What the quality is, for the people reading it: the JCM's own estimate of the mask's IoU, and what the threshold does.
export function qualityExplained(beta) {
  const threshold = beta == null ? "" : ` At or below ${percent(beta)} the JCM distrusts the mask and redraws it.`;
  return "The model's own estimate (by its judge, the JCM) of how much this mask overlaps the true structure: " +
    "the shared area over the area of both outlines together (IoU)." + threshold +
    " An estimate, not a measurement: check the outline.";
}

export class Transcript {
  // actions: {chip(number), download(number), reveal(number)}; reveal is offered while canReveal(number) says so
  constructor(list, actions) {
    this.list = list;
    this.actions = actions;
    this.beta = null;
    this.canReveal = () => false;
  }

  clear() {
    this.list.replaceChildren();
  }

  // A round asked and not yet answered: the entry fills in as events come.
  pending(question) {
    const li = element("li", "round pending");
    li.append(element("p", "question", question), element("p", "answer", "…"));
    li.setAttribute("aria-busy", "true");
    this.list.append(li);
    li.scrollIntoView({ block: "nearest" });
    return li;
  }

  answer(li, text) {
    showAnswer(li.querySelector(".answer"), text);
  }

  // The finished round (GetRound's JSON) in entry li (a pending one, or a new one when rebuilding).
  done(li, round) {
    li = li || this.pending(round.question);
    const colour = colourOf(round.number);
    li.className = "round";
    li.removeAttribute("aria-busy");
    li.id = `round-${round.number}`;
    li.dataset.number = round.number;
    li.dataset.reference = round.reference_round;

    const head = element("div", "head");
    const chip = element("button", "chip", `Round ${round.number} · ${colour.name}`);
    chip.type = "button";
    chip.style.setProperty("--chip", css(colour));
    chip.style.setProperty("--ink", colour.ink);
    chip.setAttribute("aria-pressed", "false");
    chip.title = round.has_mask ? `Make the next question refer to round ${round.number}` :
      `Round ${round.number} has no mask: a later question cannot refer to it`;
    chip.disabled = !round.has_mask;
    chip.addEventListener("click", () => this.actions.chip(round.number));
    head.append(chip);
    if (round.reference_round > 0) {
      head.append(element("span", "refers", `refers to round ${round.reference_round}`));
    }
    li.querySelector(".question").before(head);
    showAnswer(li.querySelector(".answer"), round.answer, round.has_mask ? colour : null);

    const facts = element("p", "quality");
    if (round.has_mask) {
      facts.title = qualityExplained(this.beta);
      facts.append(element("span", "score", `Estimated overlap with the true structure: ${percent(round.quality)}`));
      if (this.beta != null && round.quality <= this.beta) {
        facts.append(element("span", "warn", `⚠ at or below the ${percent(this.beta)} threshold: check this mask`));
      }
      if (round.corrected) facts.append(element("span", "corrected", "✎ redrawn by the JCM (the estimate was for its first draft)"));
    } else {
      facts.append(element("span", "score", "No mask in this answer"));
    }
    li.append(facts);

    const actions = element("div", "actions");
    if (round.has_mask) {
      const download = element("button", "download", `Download mask ${round.number} (PNG)`);
      download.type = "button";
      download.addEventListener("click", () => this.actions.download(round.number));
      actions.append(download);
    }
    if (this.canReveal(round.number)) { // with or without a mask: found nothing is scored too (Dice 0)
      const reveal = element("button", "reveal", `Reveal the ground truth of round ${round.number}`);
      reveal.type = "button";
      reveal.addEventListener("click", () => this.actions.reveal(round.number));
      actions.append(reveal, element("span", "dice"));
    }
    li.append(actions);
    return li;
  }

  // A failure, inline: in the round's entry when it began (an error after the answer), else an entry of its own.
  fail(li, error) {
    li = li || this.pending("");
    li.className = "round failed";
    li.removeAttribute("aria-busy");
    li.setAttribute("role", "alert");
    const message = element("p", "error", `${error.message} (${error.code})`);
    if (li.querySelector(".answer").textContent === "…") li.querySelector(".answer").remove();
    li.append(message);
    return li;
  }

  revealed(number, dice) {
    const li = this.list.querySelector(`#round-${number}`);
    li.querySelector(".dice").textContent = `Dice against the ground truth: ${dice.toFixed(2)}`;
    li.querySelector(".reveal").disabled = true;
  }

  referTo(number) {
    for (const chip of this.list.querySelectorAll(".chip")) {
      chip.setAttribute("aria-pressed", String(chip.closest("li").dataset.number === String(number)));
    }
  }
}

// The answer's words with a mask chip where the model said [SEG] (the token itself is never shown); in the
// round's colour once the mask is there.
function showAnswer(p, text, colour = null) {
  const parts = text.split("[SEG]");
  p.replaceChildren(parts[0]);
  for (const part of parts.slice(1)) {
    const mask = element("span", "mask-chip", "mask");
    if (colour) {
      mask.style.setProperty("--chip", css(colour));
      mask.style.setProperty("--ink", colour.ink);
    }
    p.append(mask, part);
  }
}
