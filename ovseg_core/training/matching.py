"""Class-agnostic matching of proposals to ground-truth segments.

The mask generator is frozen and its classes are thrown away, so matching uses masks
only: Mask2Former's matcher costs (BCE + Dice) solved by the Hungarian algorithm, or
Mask-Adapter's IoU matcher, which keeps every pair above a threshold so that several
near-duplicate proposals of one object all learn its class.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def resize_targets(masks: torch.Tensor, size) -> torch.Tensor:
    """bool [N, H, W] ground truth -> float [N, h, w] coverage in [0, 1] (area average),
    the soft target a low-resolution mask logit can be compared with."""
    if masks.shape[0] == 0:
        return masks.new_zeros(0, *size, dtype=torch.float32)
    return F.adaptive_avg_pool2d(masks[None].float(), size)[0] if tuple(masks.shape[-2:]) != tuple(size) \
        else masks.float()


def mask_costs(logits: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """[Q, P] logits and [N, P] targets in [0, 1] -> pairwise mean BCE and Dice [Q, N]."""
    logits, targets = logits.float(), targets.float()
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    bce = (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]
    probs = logits.sigmoid()
    dice = 1 - (2 * probs @ targets.T + 1) / (probs.sum(-1)[:, None] + targets.sum(-1)[None] + 1)
    return bce, dice


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, gt: torch.Tensor, cost_bce: float = 5.0,
                    cost_dice: float = 5.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """logits [Q, h, w], gt bool [N, H, W] -> (proposal indices, GT indices), one-to-one."""
    if gt.shape[0] == 0 or logits.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    targets = resize_targets(gt, logits.shape[-2:]).flatten(1)
    bce, dice = mask_costs(logits.flatten(1), targets)
    rows, cols = linear_sum_assignment((cost_bce * bce + cost_dice * dice).cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def mask_iou(logits: torch.Tensor, gt: torch.Tensor, pred_threshold: float = 0.4) -> torch.Tensor:
    """[Q, N] IoU of proposals (sigmoid > pred_threshold, Mask-Adapter's 0.4) and GT
    masks (coverage > 0.5 at the proposals' resolution)."""
    pred = (logits.float().sigmoid() > pred_threshold).flatten(1).float()
    target = (resize_targets(gt, logits.shape[-2:]) > 0.5).flatten(1).float()
    inter = pred @ target.T
    union = pred.sum(-1)[:, None] + target.sum(-1)[None] - inter
    return inter / union.clamp_min(1)


@torch.no_grad()
def iou_match(logits: torch.Tensor, gt: torch.Tensor, threshold: float = 0.7, pairs: str = "one_per_gt",
              generator: torch.Generator = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mask-Adapter's matcher. ``all``: every (proposal, GT) pair with IoU >= threshold,
    a proposal keeping only its best GT; ``one_per_gt``: one of them per GT, drawn at
    random with ``generator`` (as its code does)."""
    if gt.shape[0] == 0 or logits.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    iou = mask_iou(logits, gt).cpu()
    best, gt_of = iou.max(1)
    rows = torch.nonzero(best >= threshold).flatten()
    cols = gt_of[rows]
    if pairs == "one_per_gt" and len(rows):
        order = torch.randperm(len(rows), generator=generator)
        rows, cols = rows[order], cols[order]
        first = torch.zeros(len(rows), dtype=torch.bool)
        seen = set()
        for i, g in enumerate(cols.tolist()):
            if g not in seen:
                seen.add(g)
                first[i] = True
        rows, cols = rows[first], cols[first]
    return rows, cols
