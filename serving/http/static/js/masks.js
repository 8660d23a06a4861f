// Masks as bits: a mask PNG (single channel, foreground 255) decoded to one byte per pixel, 1 inside; the outline
// of a mask, grown to a width; the Dice of two masks (as model/evaluation/metrics.py: 1.0 when both are empty).

export async function decodeBits(blob, width, height) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const bits = new Uint8Array(width * height);
  for (let i = 0; i < bits.length; i++) bits[i] = rgba[4 * i] > 127 ? 1 : 0;
  return bits;
}

// Pixels of the mask with a 4-neighbour outside it (or on the image's edge).
export function outline(bits, width, height) {
  const out = new Uint8Array(bits.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!bits[i]) continue;
      const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1;
      if (edge || !bits[i - 1] || !bits[i + 1] || !bits[i - width] || !bits[i + width]) out[i] = 1;
    }
  }
  return out;
}

// The mask grown by r pixels (a square of side 2r + 1 around each pixel): a running count along rows, then columns.
export function dilate(bits, width, height, r) {
  const pass = (source, length, lines, at) => {
    const out = new Uint8Array(source.length);
    for (let line = 0; line < lines; line++) {
      let count = 0;
      for (let k = 0; k < Math.min(r, length); k++) count += source[at(line, k)];
      for (let k = 0; k < length; k++) {
        if (k + r < length) count += source[at(line, k + r)];
        if (k - r - 1 >= 0) count -= source[at(line, k - r - 1)];
        out[at(line, k)] = count > 0 ? 1 : 0;
      }
    }
    return out;
  };
  const rows = pass(bits, width, height, (y, x) => y * width + x);
  return pass(rows, height, width, (x, y) => y * width + x);
}

export function dice(a, b) {
  let both = 0;
  let sa = 0;
  let sb = 0;
  for (let i = 0; i < a.length; i++) {
    sa += a[i];
    sb += b[i];
    both += a[i] & b[i];
  }
  return sa + sb === 0 ? 1 : (2 * both) / (sa + sb);
}
