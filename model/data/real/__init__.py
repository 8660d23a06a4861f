"""Real CT slices shipped with the package (SA-Med2D demo data) and MR-MedSeg dialogues on them."""

from pathlib import Path

REAL_SLICES = Path(__file__).parent / "sa-med2d-demo"
REAL_DIALOGUES = REAL_SLICES / "dialogues.json"
