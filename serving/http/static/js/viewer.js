// The canvas: the picture (brightness and contrast applied here; window/level comes rendered from the server),
// then each visible layer (a round's mask, or a revealed ground truth) filled or outlined in its colour at one
// opacity, each with a text label, and a readout of the layers under the cursor.

import { outline } from "./masks.js";
import { css } from "./palette.js";

const LABEL_HEIGHT = 14;

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
    this.layers = []; // drawn in order: {key, label, name, colour, bits, box, visible, outlineOnly, fill, edge}
    this.opacity = 0.5;
    this.mode = "fill";
    this.brightness = 1;
    this.contrast = 1;
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

  // bits: Uint8Array(width * height); box: {x_min, y_min, x_max, y_max} or null
  // outlineOnly: drawn as an outline in either mode (a revealed ground truth, so the prediction stays visible)
  addLayer({ key, label, name, colour, bits, box, visible = true, outlineOnly = false }) {
    const layer = { key, label, name, colour, bits, box, visible, outlineOnly };
    layer.fill = paint(bits, this.width, this.height, colour.rgb);
    layer.edge = paint(outline(bits, this.width, this.height), this.width, this.height, colour.rgb);
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
    for (const layer of shown) {
      ctx.drawImage(this.mode === "fill" && !layer.outlineOnly ? layer.fill : layer.edge, 0, 0);
    }
    ctx.globalAlpha = 1;
    for (const layer of shown) this.drawLabel(layer);
  }

  // The layer's text label beside its box (above it, or below when there is no room), never on the mask itself.
  drawLabel(layer) {
    if (!layer.box) return;
    const { ctx } = this;
    ctx.font = `bold ${LABEL_HEIGHT - 3}px sans-serif`;
    const w = ctx.measureText(layer.label).width + 6;
    const x = Math.min(layer.box.x_min, this.width - w);
    const y = layer.box.y_min >= LABEL_HEIGHT ? layer.box.y_min - LABEL_HEIGHT : layer.box.y_max + 1;
    ctx.fillStyle = css(layer.colour);
    ctx.fillRect(x, y, w, LABEL_HEIGHT);
    ctx.fillStyle = layer.colour.ink;
    ctx.textBaseline = "top";
    ctx.fillText(layer.label, x + 3, y + 2);
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
