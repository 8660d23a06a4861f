// The page: open an image or an example case, hold the dialogue, draw the rounds' masks. Wires the parts together;
// the API is api.js, the canvas viewer.js, the transcript transcript.js.

import { Api } from "./api.js";
import { jsonBlob, save } from "./downloads.js";
import { requestId } from "./ids.js";
import { decodeBits, dice } from "./masks.js";
import { colourOf, TRUTH } from "./palette.js";
import { percent, Transcript } from "./transcript.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);

const state = {
  config: null, // GET /api/v1/config: jcm_beta, window_presets
  examples: [],
  session: null,
  example: null, // the example case the session was opened on, or null
  file: null, // the DICOM file opened, kept so that it can be reopened with another window
  rounds: new Map(), // number -> {round, bits}
  referTo: 0,
  busy: false,
};

const api = new Api(() => $("token").value.trim());
const viewer = new Viewer($("view"), $("readout"));
const transcript = new Transcript($("transcript"), { chip: referTo, download: downloadMask, reveal });
transcript.canReveal = (number) => educating() && number <= state.example.rounds.length &&
  Boolean(state.example.rounds[number - 1].truth_url); // a round about what the image does not show has none

function announce(text) {
  $("announcer").textContent = text;
}

function fail(li, error) {
  transcript.fail(li, error);
  announce(`Error: ${error.message}`);
}

function educating() {
  return Boolean(state.example) && $("education-mode").checked;
}

// ---- opening ----

function isDicom(bytes) {
  return bytes.length > 132 && String.fromCharCode(...bytes.slice(128, 132)) === "DICM";
}

function dicomFields() {
  return {
    frame: $("dicom-frame").value,
    window_preset: $("dicom-preset").value,
    window_center: $("dicom-center").value,
    window_width: $("dicom-width").value,
  };
}

async function openFile(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  state.file = isDicom(bytes) ? bytes : null;
  await open(() => api.createSession(bytes, state.file ? dicomFields() : {}), null);
}

async function openExample() {
  const example = state.examples.find((c) => c.id === $("example").value);
  if (!example) return;
  state.file = null;
  await open(async () => api.createSession(await api.blob(example.image_url)), example);
}

async function open(create, example) {
  try {
    await show(await create(), example, []);
  } catch (e) {
    fail(null, e);
  }
}

// Rebuild everything from the server: a reload or a shared link (#session=...) ends here too.
async function show(session, example, rounds) {
  Object.assign(state, { session, example, referTo: 0 });
  state.rounds.clear();
  const hash = new URLSearchParams({ session: session.id });
  if (example) hash.set("example", example.id);
  history.replaceState(null, "", `#${hash}`);
  $("session-info").textContent = `Session ${session.id}: ${session.width} × ${session.height} pixels` +
    (example ? `, example case ${example.id} (${example.title})` : "");
  viewer.open(session.width, session.height, `The image of session ${session.id}, ${session.width} by ` +
    `${session.height} pixels, with the rounds' masks drawn over it`);
  transcript.clear();
  $("legend").replaceChildren();
  $("education").hidden = !example;
  $("welcome").hidden = true;
  $("view").hidden = false;
  $("case-note").hidden = !example?.note;
  $("case-note").textContent = example?.note || "";
  $("download-transcript").disabled = false;
  segmentationOffered();
  await setupWindow(session);
  for (const round of rounds) await addRound(null, round);
  composer(true);
  announce(`Opened ${example ? `example ${example.id}` : "the image"}; ${rounds.length} rounds so far.`);
}

async function restore(sessionId, exampleId) {
  try {
    const [session, { rounds }] = await Promise.all([api.json(`sessions/${sessionId}`),
      api.json(`sessions/${sessionId}/rounds`)]);
    await show(session, state.examples.find((c) => c.id === exampleId) || null, rounds);
  } catch (e) {
    fail(null, e);
  }
}

// ---- the picture: brightness/contrast here, window/level from the server ----

let windowTimer = null;

async function loadPicture(center, width) {
  const query = center == null ? "" : `?${new URLSearchParams({ center, width })}`;
  const blob = await api.blob(`sessions/${state.session.id}/image/rendered${query}`);
  viewer.setPicture(await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" }));
}

async function setupWindow(session) {
  const levels = await api.json(`sessions/${session.id}/image/levels`);
  const controls = $("window-controls");
  controls.hidden = !levels.windowable;
  if (levels.windowable) {
    const span = Math.max(1, levels.maximum - levels.minimum);
    Object.assign($("window-center"), { min: levels.minimum, max: levels.maximum });
    Object.assign($("window-width"), { min: 1, max: span });
    resetWindow(levels);
  }
  const dicom = session.dicom;
  $("dicom-window").hidden = !dicom;
  $("dicom-reopen").hidden = !(dicom && state.file);
  if (dicom) {
    const window = dicom.window_width > 0 ? `centre ${dicom.window_center}, width ${dicom.window_width}` : "none";
    $("dicom-window").textContent = `DICOM ${dicom.modality}, frame ${dicom.frame} of ${dicom.number_of_frames}; ` +
      `window ${window} (${dicom.window_source}), chosen when opening: reopen to change it.`;
  }
  await loadPicture();
}

function resetWindow(levels) {
  $("window-center").value = (levels.minimum + levels.maximum) / 2;
  $("window-width").value = Math.max(1, levels.maximum - levels.minimum);
  $("window-value").textContent = "full range";
}

function windowChanged() {
  const center = Number($("window-center").value);
  const width = Number($("window-width").value);
  $("window-value").textContent = `centre ${center}, width ${width}`;
  clearTimeout(windowTimer);
  windowTimer = setTimeout(() => loadPicture(center, width).catch((e) => fail(null, e)), 150);
}

// ---- rounds ----

// The DICOM SEG holds the rounds' masks: offered once a DICOM session has a round with a mask.
function segmentationOffered() {
  const masks = [...state.rounds.values()].some(({ round }) => round.has_mask);
  const dicom = Boolean(state.session?.dicom);
  $("download-seg").disabled = !(dicom && masks);
  $("download-seg").title = !dicom ? "Only a session opened on DICOM has a DICOM SEG" :
    masks ? "" : "The DICOM SEG holds the rounds' masks: ask a round first";
}

async function addRound(li, round) {
  state.rounds.set(round.number, { round, bits: null });
  if (round.has_mask) {
    const bits = await decodeBits(await api.blob(round.mask_url), state.session.width, state.session.height);
    state.rounds.get(round.number).bits = bits;
    const colour = colourOf(round.number);
    viewer.addLayer({ key: `round-${round.number}`, label: String(round.number), bits, colour,
      name: `round ${round.number} (${colour.name})` });
    addLegend(`round-${round.number}`, `Round ${round.number} · ${colour.name}`, colour);
  }
  transcript.done(li, round);
  transcript.referTo(state.referTo);
  segmentationOffered();
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || state.busy || !state.session) return;
  const body = { question, reference_round: state.referTo, request_id: requestId() };
  composer(false);
  const li = transcript.pending(question);
  referTo(0);
  try {
    for await (const { event: kind, data } of api.ask(state.session.id, body)) {
      if (kind === "answer") {
        transcript.answer(li, data.answer);
        announce(`Answer: ${spoken(data.answer)}`);
      } else if (kind === "round") {
        await addRound(li, data);
        announce(`Round ${data.number}: ${spoken(data.answer)}` +
          (data.has_mask ? `; estimated overlap ${percent(data.quality)}` : "; no mask"));
      }
    }
  } catch (e) {
    fail(li, e);
  } finally {
    composer(true);
  }
}

function composer(enabled) {
  state.busy = !enabled;
  const question = $("question");
  question.disabled = $("send").disabled = !enabled;
  if (!enabled) return;
  question.placeholder = "Ask about the image, e.g. Segment the liver.";
  const next = educating() ? state.example.rounds[state.rounds.size] : null;
  question.value = next ? next.question : "";
  question.focus();
}

function referTo(number) {
  state.referTo = number;
  $("refer-note").hidden = !number;
  $("refer-round").textContent = number;
  transcript.referTo(number);
  if (number) $("question").focus();
}

// ---- overlays and the legend ----

function addLegend(key, text, colour) {
  const li = document.createElement("li");
  const box = Object.assign(document.createElement("input"), { type: "checkbox", checked: true, id: `show-${key}` });
  box.addEventListener("change", () => viewer.setVisible(key, box.checked));
  const label = Object.assign(document.createElement("label"), { htmlFor: box.id });
  const swatch = Object.assign(document.createElement("span"), { className: "swatch" });
  swatch.style.setProperty("--swatch", `rgb(${colour.rgb.join(" ")})`);
  label.append(swatch, text);
  li.append(box, label);
  $("legend").append(li);
}

function toggleRound(number) {
  const box = $(`show-round-${number}`);
  if (!box) return;
  box.checked = !box.checked;
  box.dispatchEvent(new Event("change"));
}

function toggleMode() {
  viewer.mode = viewer.mode === "fill" ? "outline" : "fill";
  $("mode").setAttribute("aria-pressed", String(viewer.mode === "outline"));
  viewer.draw();
  announce(`Masks drawn as ${viewer.mode === "fill" ? "fills" : "outlines"}`);
}

// ---- education mode ----

async function reveal(number) {
  try {
    const truth = state.example.rounds[number - 1];
    const { width, height } = state.session;
    const bits = await decodeBits(await api.blob(truth.truth_url), width, height);
    const predicted = state.rounds.get(number).bits || new Uint8Array(width * height); // found nothing: empty
    const score = dice(predicted, bits);
    viewer.addLayer({ key: `truth-${number}`, label: `T${number}`, name: `ground truth of round ${number}`, bits,
      colour: TRUTH, outlineOnly: true });
    addLegend(`truth-${number}`, `Ground truth of round ${number} · white outline`, TRUTH);
    transcript.revealed(number, score);
    announce(`Round ${number}: Dice against the ground truth ${score.toFixed(2)}`);
  } catch (e) {
    fail(null, e);
  }
}

// ---- downloads ----

async function downloadMask(number) {
  try {
    save(await api.blob(state.rounds.get(number).round.mask_url), `mediround-${state.session.id}-round${number}.png`);
  } catch (e) {
    fail(null, e);
  }
}

async function downloadTranscript() {
  try {
    const id = state.session.id;
    const [session, { rounds }] = await Promise.all([api.json(`sessions/${id}`), api.json(`sessions/${id}/rounds`)]);
    save(jsonBlob({ session, example: state.example?.id ?? null, rounds }), `mediround-${id}-transcript.json`);
  } catch (e) {
    fail(null, e);
  }
}

async function downloadSegmentation() {
  try {
    save(await api.blob(`sessions/${state.session.id}/segmentation`), `mediround-${state.session.id}-seg.dcm`);
  } catch (e) {
    fail(null, e);
  }
}

// ---- start ----

function typing(target) {
  return target.matches("input[type=text], input[type=password], input[type=number], input[type=file], select, " +
    "textarea");
}

function keys(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
  if (/^[1-9]$/.test(event.key)) {
    toggleRound(Number(event.key));
  } else if (event.key === "o" || event.key === "O") {
    toggleMode();
  } else {
    return;
  }
  event.preventDefault();
}

async function start() {
  $("token").value = sessionStorage.getItem("mediround-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("mediround-token", $("token").value.trim()));
  try {
    state.config = await api.json("config");
    transcript.beta = state.config.jcm_beta;
    for (const name of state.config.window_presets) $("dicom-preset").append(new Option(name, name));
    state.examples = (await api.json("examples")).examples;
    for (const c of state.examples) $("example").append(new Option(`${c.id}: ${c.title}`, c.id));
  } catch (e) {
    fail(null, e);
  }
  $("open").addEventListener("submit", (e) => e.preventDefault());
  $("file").addEventListener("change", () => $("file").files[0] && openFile($("file").files[0]));
  $("open-example").addEventListener("click", openExample);
  $("dicom-reopen").addEventListener("click", () => open(() => api.createSession(state.file, dicomFields()), null));
  $("ask").addEventListener("submit", ask);
  $("refer-clear").addEventListener("click", () => referTo(0));
  $("opacity").addEventListener("input", () => {
    viewer.opacity = Number($("opacity").value) / 100;
    viewer.draw();
  });
  $("mode").addEventListener("click", toggleMode);
  for (const id of ["brightness", "contrast"]) {
    $(id).addEventListener("input", () => {
      viewer[id] = Number($(id).value) / 100;
      viewer.draw();
    });
  }
  $("window-center").addEventListener("input", windowChanged);
  $("window-width").addEventListener("input", windowChanged);
  $("window-reset").addEventListener("click", async () => {
    resetWindow({ minimum: Number($("window-center").min), maximum: Number($("window-center").max) });
    await loadPicture().catch((e) => fail(null, e));
  });
  $("education-mode").addEventListener("change", () => !state.busy && !$("question").value && composer(true));
  $("download-transcript").addEventListener("click", downloadTranscript);
  $("download-seg").addEventListener("click", downloadSegmentation);
  document.addEventListener("keydown", keys);
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("session")) await restore(hash.get("session"), hash.get("example"));
  document.body.dataset.ready = "true"; // for tests and embedders: the page is wired
}

start();

// An answer as a screen reader hears it: "mask" where the model said [SEG], as the transcript shows it.
function spoken(answer) {
  return answer.replaceAll("[SEG]", "mask");
}
