"""mIoU, fwIoU and pixel accuracy with detectron2's SemSegEvaluator rules.

The statistic is detectron2's confusion matrix [(N + 1) x (N + 1)] indexed
[prediction, ground truth], the last row/column being the ignore label; predictions
on ignored pixels do not count. IoU_c = TP / (GT_c + Pred_c - TP) and the means run
over the classes present in the ground truth. Mask-Adapter additionally reports the
mIoU of the classes seen in training and of the unseen ones, and their harmonic mean.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


class SemanticStat:
    """Confusion matrix of a set of images; ``+=`` merges sets (integer sums, exact)."""

    def __init__(self, num_classes: int, ignore_label: int = 255, matrix: Optional[np.ndarray] = None):
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        if 0 <= self.ignore_label < self.num_classes:
            raise ValueError(f"ignore label {ignore_label} is one of the {num_classes} classes; "
                             f"use a label outside [0, {num_classes}) (detectron2 uses 255)")
        n = self.num_classes + 1
        self.matrix = np.zeros((n, n), np.int64) if matrix is None else np.asarray(matrix, np.int64)
        if self.matrix.shape != (n, n):
            raise ValueError(f"confusion matrix must be [{n}, {n}], got {self.matrix.shape}")

    def update(self, pred: np.ndarray, gt: np.ndarray) -> "SemanticStat":
        """Adds one image: int [H, W] class indices (prediction) and labels (GT)."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and GT {gt.shape} differ in size; "
                             f"resize the prediction (nearest) to the GT size")
        n = self.num_classes
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        ignored = gt == self.ignore_label
        if ((gt < 0) | (gt >= n))[~ignored].any():
            bad = np.unique(gt[~ignored & ((gt < 0) | (gt >= n))])[:10].tolist()
            raise ValueError(f"GT labels {bad} are neither classes [0, {n}) nor the ignore label "
                             f"{self.ignore_label}")
        if ((pred < 0) | (pred >= n)).any():
            raise ValueError(f"predicted labels must lie in [0, {n})")
        gt = np.where(ignored, n, gt)
        self.matrix += np.bincount((n + 1) * pred + gt, minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
        return self

    def __iadd__(self, other: "SemanticStat"):
        self.matrix += other.matrix if isinstance(other, SemanticStat) else other
        return self

    def summary(self, names: Sequence[str], seen: Optional[Sequence[bool]] = None) -> dict:
        """Numbers on a 0-1 scale: mIoU, fwIoU, mACC, pACC, per-class IoU/ACC (None for
        classes absent from the GT) and, given ``seen`` (per class: in the training
        vocabulary?), mIoU over seen / unseen classes and their harmonic mean."""
        if len(names) != self.num_classes:
            raise ValueError(f"{self.num_classes} classes but {len(names)} names")
        conf = self.matrix[:-1, :-1].astype(np.float64)
        tp = np.diagonal(conf)
        pos_gt = conf.sum(0)
        pos_pred = conf.sum(1)
        present = pos_gt > 0
        union = pos_gt + pos_pred - tp
        valid = present & (union > 0)
        acc = np.where(present, tp / np.maximum(pos_gt, 1), np.nan)
        iou = np.where(valid, tp / np.maximum(union, 1), np.nan)
        total = pos_gt.sum()
        weights = pos_gt / total if total else pos_gt

        def mean(select):
            use = valid & select
            return float(iou[use].mean()) if use.any() else None

        out = {
            "mIoU": mean(np.ones_like(valid)),
            "fwIoU": float((iou[valid] * weights[valid]).sum()) if valid.any() else None,
            "mACC": float(acc[present].mean()) if present.any() else None,
            "pACC": float(tp.sum() / total) if total else None,
            "per_class": {name: {"iou": None if np.isnan(iou[i]) else float(iou[i]),
                                 "acc": None if np.isnan(acc[i]) else float(acc[i]),
                                 "gt_pixels": int(pos_gt[i])}
                          for i, name in enumerate(names)},
        }
        if seen is not None:
            is_seen = np.asarray(seen, bool)
            if is_seen.shape != (self.num_classes,):
                raise ValueError(f"seen needs one flag per class ({self.num_classes}), got {is_seen.shape}")
            s, u = mean(is_seen), mean(~is_seen)
            out["mIoU_seen"], out["mIoU_unseen"] = s, u
            # None only when a side has no class in the GT; a side at 0.0 makes it 0.0
            out["hIoU"] = None if s is None or u is None else (2 * s * u / (s + u) if s + u > 0 else 0.0)
            out["num_seen"], out["num_unseen"] = int(is_seen.sum()), int((~is_seen).sum())
        return out
