"""Render a conversation as one PNG: a panel per round with its mask over the image and its text.

The referenced round's mask is outlined in a second colour, so a reader can check each reference; a
legend under the title names both colours.
Also used for predicted masks (pass ``masks=`` to override the ground truth); a round about a
structure the image does not show gets no tint, only its answer. Real-brain slices
(records with an ``orientation``) get the patient's directions at the panel edges (R/L, A/P, S/I).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.data.images import load_image, load_mask
from model.data.mrmedseg import Conversation
from model.data.phantoms.shapes import dilate

PANEL, TEXT_H, COLUMNS, HEADER = 256, 96, 4, 42
TARGET, REFERENCE = np.array([255, 60, 40]), np.array([40, 200, 255])


def overlay(image: np.ndarray, mask: np.ndarray | None, reference: np.ndarray | None = None) -> np.ndarray:
    """``image`` (H, W, 3) with ``mask`` tinted and the outline of ``reference``."""
    out = image.astype(np.float32)
    if mask is not None:
        out[mask] = 0.5 * out[mask] + 0.5 * TARGET
    if reference is not None:
        edge = dilate(reference, 1) & ~reference
        out[edge] = REFERENCE
    return out.clip(0, 255).astype(np.uint8)


# The patient's direction at each panel edge (left, right, top, bottom) per orientation, radiological view.
EDGE_LABELS = {"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}


def _legend(draw: ImageDraw.ImageDraw, font, kind: str, references: bool) -> None:
    """The colours' meaning, on the title's second line: a filled swatch, and an outlined one if used."""
    y = HEADER // 2 + 2  # the title's second line
    draw.rectangle((6, y + 1, 18, y + 12), fill=tuple(int(v) for v in TARGET))
    draw.text((23, y), f"the round's {kind} mask", fill="black", font=font)
    if references:
        x = 30 + int(draw.textlength(f"the round's {kind} mask", font=font))
        draw.rectangle((x, y + 1, x + 12, y + 12), outline=tuple(int(v) for v in REFERENCE), width=2)
        draw.text((x + 17, y), "outline: the mask of the round it refers to", fill="black", font=font)


def _mark_edges(draw: ImageDraw.ImageDraw, x: int, y: int, labels: str, font) -> None:
    left, right, top, bottom = labels
    half = PANEL // 2
    for text, (tx, ty) in ((left, (x + 5, y + half - 6)), (right, (x + PANEL - 13, y + half - 6)),
                           (top, (x + half - 3, y + 4)), (bottom, (x + half - 3, y + PANEL - 18))):
        draw.text((tx, ty), text, fill="yellow", font=font)


def render_conversation(conv: Conversation, root: str | Path, out: str | Path,
                        masks: list[np.ndarray] | None = None, title: str | None = None) -> Path:
    """Write the picture of ``conv`` (dataset files under ``root``) to ``out``; returns the path."""
    root = Path(root)
    image = load_image(root / conv.image)
    truth = [load_mask(root / r.mask) if r.has_mask else None for r in conv.rounds]  # None: not in the image
    shown = masks if masks is not None else truth
    font = ImageFont.load_default(size=12)
    n = len(conv.rounds)
    cols = min(COLUMNS, n)
    rows = (n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * PANEL, HEADER + rows * (PANEL + TEXT_H)), "white")
    draw = ImageDraw.Draw(sheet)
    orientation = conv.extra.get("orientation")
    where = f"  {orientation} {conv.extra['position_mm']:+.0f} mm" if "position_mm" in conv.extra else ""
    draw.text((6, 5), title or f"{conv.extra.get('id', '')}  {conv.image}  "
              f"{conv.extra.get('modality', '')}{where}  {conv.extra.get('scenario', '')}", fill="black", font=font)
    _legend(draw, font, "predicted" if masks is not None else "ground-truth",
            any(r.reference is not None for r in conv.rounds))
    for k, r in enumerate(conv.rounds):
        x, y = (k % cols) * PANEL, HEADER + (k // cols) * (PANEL + TEXT_H)
        ref = shown[r.reference] if r.reference is not None else None
        tile = Image.fromarray(overlay(image, shown[k], ref)).resize((PANEL - 4, PANEL - 4), Image.NEAREST)
        sheet.paste(tile, (x + 2, y + 2))
        if orientation in EDGE_LABELS:
            _mark_edges(draw, x, y, EDGE_LABELS[orientation], font)
        label = f"round {k + 1}" + (f" (refers to round {r.reference + 1})" if r.reference is not None else "")
        said = f"{r.answer} [mask]".strip() if r.has_mask else r.answer  # where the answer's [SEG] stands
        lines = [label, *textwrap.wrap(r.question, 40)[:3], *textwrap.wrap(f"-> {said}", 40)[:2]]
        draw.multiline_text((x + 4, y + PANEL + 2), "\n".join(lines), fill="black", font=font, spacing=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
