// Round colours: the Okabe-Ito palette (safe for the common colour-vision deficiencies), black left out since it
// vanishes on dark scans. Every colour has a name, shown next to it wherever it is used, and an ink for text on it.

export const PALETTE = [
  { name: "orange", rgb: [230, 159, 0], ink: "#000" },
  { name: "sky blue", rgb: [86, 180, 233], ink: "#000" },
  { name: "bluish green", rgb: [0, 158, 115], ink: "#000" },
  { name: "yellow", rgb: [240, 228, 66], ink: "#000" },
  { name: "blue", rgb: [0, 114, 178], ink: "#fff" },
  { name: "vermillion", rgb: [213, 94, 0], ink: "#000" },
  { name: "reddish purple", rgb: [204, 121, 167], ink: "#000" },
];

export const TRUTH = { name: "white", rgb: [255, 255, 255], ink: "#000" };

export function colourOf(number) {
  return PALETTE[(number - 1) % PALETTE.length];
}

export function css(colour) {
  return `rgb(${colour.rgb.join(" ")})`;
}
