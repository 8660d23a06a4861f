"""Judging MediRound: segmentation metrics and the paper-shaped evaluation built on them.

- ``metrics.py``  Dice, gIoU, cIoU as the official evaluation computes them, per round and split;
- ``evaluate.py`` the tables (JSON + Markdown), the per-round plot and overlay pictures (``mediround eval``);
- ``structures.py`` Dice per structure and per structure size on the real-brain splits.
"""
