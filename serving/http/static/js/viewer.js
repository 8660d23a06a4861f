// The canvas: the picture (brightness and contrast applied here; window/level comes rendered from the server),
// then each visible layer (a round's mask, or a revealed ground truth) filled or outlined in its colour at one
// opacity, each with a text label on the mask at a constant size on screen, and a readout of the layers under the
// cursor. A ground truth's white outline has a dark halo, so it shows on grey pictures too.

import { dilate, outline } from "./masks.js";
import { css } from "./palette.js";

const LABEL_CSS_PX = 16; // a label's height on screen, whatever the image's size and zoom

// The mask pixel nearest the mask's centroid: where its label goes (on the mask, however far stray pixels lie).
export function anchorOf(bits, width) {
  let n = 0;
  let sx = 0;
  let sy = 0;
  for (let i = 0; i < bits.length; i++) {
    if (bits[i]) {
      n += 1;
      sx += i % width;
      sy += Math.floor(i / width);
    }
  }
  if (!n) return null;
  const [cx, cy] = [sx / n, sy / n];
  let best = { x: 0, y: 0, d: Infinity };
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    const [x, y] = [i % width, Math.floor(i / width)];
    const d = (x - cx) ** 2 + (y - cy) ** 2;
    if (d < best.d) best = { x, y, d };
  }
  return { x: best.x, y: best.y };
}

function paint(bits, width, height, rgb) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    image.data.set([...rgb, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

export class Viewer {
  constructor(canvas, readout) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.readout = readout;
    this.picture = null;
    this.width = 0;
    this.height = 0;
    this.layers = []; // drawn in order: {key, label, name, colour, bits, visible, outlineOnly, anchor, fill, edge, halo}
    this.opacity = 0.5;
    this.mode = "fill";
    this.brightness = 1;
    this.contrast = 1;
    new ResizeObserver(() => this.width && this.draw()).observe(canvas); // labels keep their size on screen
    canvas.addEventListener("mousemove", (e) => this.hover(e));
    canvas.addEventListener("mouseleave", () => this.say("Hover over the image to see which rounds cover a pixel."));
  }

  open(width, height, description) {
    this.width = width;
    this.height = height;
    this.canvas.width = width;
    this.canvas.height = height;
    this.canvas.setAttribute("aria-label", description);
    this.layers = [];
    this.picture = null;
  }

  setPicture(bitmap) {
    this.picture = bitmap;
    this.draw();
  }

  // bits: Uint8Array(width * height)
  // outlineOnly: drawn as an outline in either mode (a revealed ground truth, so the prediction stays visible)
  addLayer({ key, label, name, colour, bits, visible = true, outlineOnly = false }) {
    const layer = { key, label, name, colour, bits, visible, outlineOnly, anchor: anchorOf(bits, this.width) };
    const edge = outline(bits, this.width, this.height);
    layer.fill = paint(bits, this.width, this.height, colour.rgb);
    layer.edge = paint(edge, this.width, this.height, colour.rgb);
    if (outlineOnly) { // a ground truth: a line about a CSS pixel wide, in a dark halo as wide again
      const t = this.lineWidth();
      layer.edge = paint(dilate(edge, this.width, this.height, t), this.width, this.height, colour.rgb);
      layer.halo = paint(dilate(edge, this.width, this.height, 2 * t), this.width, this.height, [0, 0, 0]);
    }
    this.layers = this.layers.filter((l) => l.key !== key).concat([layer]);
    this.draw();
    return layer;
  }

  layer(key) {
    return this.layers.find((l) => l.key === key);
  }

  setVisible(key, visible) {
    const layer = this.layer(key);
    if (layer) layer.visible = visible;
    this.draw();
  }

  draw() {
    const { ctx } = this;
    ctx.clearRect(0, 0, this.width, this.height);
    if (this.picture) {
      ctx.filter = `brightness(${this.brightness}) contrast(${this.contrast})`;
      ctx.drawImage(this.picture, 0, 0, this.width, this.height);
      ctx.filter = "none";
    }
    const shown = this.layers.filter((l) => l.visible);
    ctx.globalAlpha = this.opacity;
    for (const layer of shown.filter((l) => !l.outlineOnly)) {
      ctx.drawImage(this.mode === "fill" ? layer.fill : layer.edge, 0, 0);
    }
    ctx.globalAlpha = 1;
    for (const layer of shown.filter((l) => l.outlineOnly)) { // a ground truth: opaque, its line in a dark halo
      ctx.drawImage(layer.halo, 0, 0);
      ctx.drawImage(layer.edge, 0, 0);
    }
    for (const layer of shown) this.drawLabel(layer);
  }

  // A ground truth's line half-width in image pixels, when it is added: about one CSS pixel, however large the picture.
  lineWidth() {
    return Math.max(1, Math.round(this.scale()));
  }

  // Image pixels per CSS pixel of the canvas as shown.
  scale() {
    return this.width / (this.canvas.clientWidth || this.width);
  }

  // Where the layer's label sits, in image pixels: centred on the mask (a ground truth's one line lower, so both
  // labels of a round show), inside the picture, LABEL_CSS_PX high on screen.
  labelBox(layer) {
    if (!layer.anchor) return null;
    const h = Math.max(6, Math.round(LABEL_CSS_PX * this.scale()));
    this.ctx.font = `bold ${Math.round(0.8 * h)}px sans-serif`;
    const w = this.ctx.measureText(layer.label).width + 0.5 * h;
    const x = Math.min(Math.max(0, layer.anchor.x - w / 2), this.width - w);
    const y = Math.min(Math.max(0, layer.anchor.y - h / 2 + (layer.outlineOnly ? h : 0)), this.height - h);
    return { x, y, w, h };
  }

  drawLabel(layer) {
    const box = this.labelBox(layer);
    if (!box) return;
    const { ctx } = this;
    ctx.fillStyle = css(layer.colour);
    ctx.fillRect(box.x, box.y, box.w, box.h);
    ctx.strokeStyle = "#000";
    ctx.lineWidth = Math.max(1, this.scale());
    ctx.strokeRect(box.x, box.y, box.w, box.h);
    ctx.fillStyle = layer.colour.ink;
    ctx.textBaseline = "middle";
    ctx.fillText(layer.label, box.x + 0.25 * box.h, box.y + box.h / 2);
  }

  // The visible layers covering image pixel (x, y).
  at(x, y) {
    const i = y * this.width + x;
    return this.layers.filter((l) => l.visible && l.bits[i]);
  }

  hover(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) * this.width) / rect.width);
    const y = Math.floor(((event.clientY - rect.top) * this.height) / rect.height);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const under = this.at(x, y);
    this.say(`At (${x}, ${y}): ${under.length ? under.map((l) => l.name).join(", ") : "no round"}`);
  }

  say(text) {
    this.readout.textContent = text;
  }
}
