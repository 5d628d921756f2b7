"""Mask classification on its own: accuracy on ground-truth masks (Mask-Adapter's
Table 3) and the oracle classifier of the papers' bottleneck analysis (SMART/FISA
Figure 2: ground-truth masks with our classifier vs our masks with a perfect one)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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


class OracleClassifier(nn.Module):
    """A perfect mask classifier with the classifier interface: each proposal gets the
    class of the ground-truth segment it overlaps most ("highest overlap with the
    ground-truth masks", SMART Sec. 3), void when it overlaps none.

    Set ``targets`` before each call: per image, an int [H, W] map of segment indices
    (0 = void / ignore, i = segment i - 1) and the class index of each segment.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.targets: Optional[List[tuple]] = None

    def forward(self, images, proposals, text, seen=None) -> torch.Tensor:
        if self.targets is None or len(self.targets) != proposals.masks.shape[0]:
            raise RuntimeError("OracleClassifier needs targets (segment map, segment classes) for "
                               "every image of the batch; set .targets before calling")
        masks = proposals.masks
        b, q, h, w = masks.shape
        # Class num_classes is void: it gets logit 0 and all others -1e4 (softmax: one-hot).
        logits = torch.full((b, q, self.num_classes + 1), -1e4, device=masks.device)
        for i, (segment_index, classes) in enumerate(self.targets):
            seg = torch.as_tensor(np.asarray(segment_index), device=masks.device).long()
            seg = F.interpolate(seg[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
            num_segments = len(classes)
            onehot = F.one_hot(seg.flatten(), num_segments + 1)[:, 1:].float()   # void column dropped
            overlap = (masks[i].flatten(1) > 0).float() @ onehot                  # [Q, S]
            lookup = torch.tensor(list(classes) + [self.num_classes], device=masks.device)
            best = overlap.argmax(1) if num_segments else torch.zeros(q, dtype=torch.long, device=masks.device)
            hit = overlap.max(1).values > 0 if num_segments else torch.zeros(q, dtype=torch.bool, device=masks.device)
            label = torch.where(hit, lookup[best], torch.full_like(best, self.num_classes))
            logits[i].scatter_(1, label[:, None], 0.0)
        return logits
