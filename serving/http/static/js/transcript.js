// The transcript: one entry per round, in order. Its chip carries the round's colour and name (click: the next
// question refers to it), "refers to round k" comes from the server's reference_round, the quality score is warned
// about at or below the JCM threshold and marked when the JCM corrected the mask; errors show inline.

import { colourOf, css } from "./palette.js";

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text != null) el.textContent = text;
  return el;
}

export class Transcript {
  // actions: {chip(index), download(index), reveal(index)}; reveal is offered while canReveal(index) says so
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
    li.querySelector(".answer").textContent = text;
  }

  // The finished round (GetRound's JSON) in entry li (a pending one, or a new one when rebuilding).
  done(li, round) {
    li = li || this.pending(round.question);
    const colour = colourOf(round.index);
    li.className = "round";
    li.removeAttribute("aria-busy");
    li.id = `round-${round.index}`;
    li.dataset.index = round.index;
    li.dataset.reference = round.reference_round;

    const head = element("div", "head");
    const chip = element("button", "chip", `Round ${round.index} · ${colour.name}`);
    chip.type = "button";
    chip.style.setProperty("--chip", css(colour));
    chip.style.setProperty("--ink", colour.ink);
    chip.setAttribute("aria-pressed", "false");
    chip.title = `Make the next question refer to round ${round.index}`;
    chip.addEventListener("click", () => this.actions.chip(round.index));
    head.append(chip);
    if (round.reference_round > 0) {
      head.append(element("span", "refers", `refers to round ${round.reference_round}`));
    }
    li.querySelector(".question").before(head);
    li.querySelector(".answer").textContent = round.answer;

    const facts = element("p", "quality");
    if (round.has_mask) {
      facts.append(element("span", "score", `Mask quality ${round.quality.toFixed(2)}`));
      if (this.beta != null && round.quality <= this.beta) {
        facts.append(element("span", "warn", `⚠ at or below the JCM threshold ${this.beta.toFixed(2)}: check it`));
      }
      if (round.corrected) facts.append(element("span", "corrected", "✎ corrected by the JCM"));
    } else {
      facts.append(element("span", "score", "No mask in this answer"));
    }
    li.append(facts);

    const actions = element("div", "actions");
    if (round.has_mask) {
      const download = element("button", "download", `Download mask ${round.index} (PNG)`);
      download.type = "button";
      download.addEventListener("click", () => this.actions.download(round.index));
      actions.append(download);
    }
    if (round.has_mask && this.canReveal(round.index)) {
      const reveal = element("button", "reveal", `Reveal the ground truth of round ${round.index}`);
      reveal.type = "button";
      reveal.addEventListener("click", () => this.actions.reveal(round.index));
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

  revealed(index, dice) {
    const li = this.list.querySelector(`#round-${index}`);
    li.querySelector(".dice").textContent = `Dice against the ground truth: ${dice.toFixed(2)}`;
    li.querySelector(".reveal").disabled = true;
  }

  referTo(index) {
    for (const chip of this.list.querySelectorAll(".chip")) {
      chip.setAttribute("aria-pressed", String(chip.closest("li").dataset.index === String(index)));
    }
  }
}
