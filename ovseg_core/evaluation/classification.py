"""Mask classification on its own: accuracy on ground-truth masks (Mask-Adapter's
Table 3). The oracle classifier of the bottleneck analysis is in ``oracle.py`` (it
needs torch; this module does not)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


class MaskAccuracy:
    """Per-class (correct, total) counts [K, 2] of classifying given masks; adds up."""

    def __init__(self, num_classes: int, counts: Optional[np.ndarray] = None):
        self.counts = np.zeros((num_classes, 2), np.int64) if counts is None else np.asarray(counts, np.int64)

    def update(self, gt_classes: Sequence[int], predicted: Sequence[int]) -> "MaskAccuracy":
        gt = np.asarray(gt_classes, np.int64)
        pred = np.asarray(predicted, np.int64)
        if gt.shape != pred.shape:
            raise ValueError(f"{len(gt)} GT classes but {len(pred)} predictions")
        if ((gt < 0) | (gt >= len(self.counts))).any():
            raise ValueError(f"GT classes must lie in [0, {len(self.counts)})")
        np.add.at(self.counts[:, 0], gt, gt == pred)
        np.add.at(self.counts[:, 1], gt, 1)
        return self

    def __iadd__(self, other: "MaskAccuracy"):
        self.counts += other.counts if isinstance(other, MaskAccuracy) else other
        return self

    def summary(self, names: Sequence[str]) -> dict:
        """Top-1 accuracy over all masks, and the mean of per-class accuracies over the
        classes that have masks (0-1 scale)."""
        correct, total = self.counts.T
        has = total > 0
        per = np.where(has, correct / np.maximum(total, 1), np.nan)
        return {"accuracy": float(correct.sum() / total.sum()) if total.sum() else None,
                "mean_class_accuracy": float(per[has].mean()) if has.any() else None,
                "num_masks": int(total.sum()),
                "per_class": {n: {"accuracy": None if np.isnan(per[i]) else float(per[i]), "masks": int(total[i])}
                              for i, n in enumerate(names)}}
