"""The papers' losses, as sums: the caller divides by counts taken over all processes, so
that one step on P processes with batch B/P equals one step on one process with B.

- ``classification_sums``: cross-entropy over the training classes (+ void), the void
  target weighted as Mask2Former's eos_coef.
- ``mask_sums``: Dice and BCE of the Distribution Adapter's output masks against their
  matched ground truth (coverage at the adapter's resolution).
- ``consistency_sum``: Mask-Adapter's 1 - cos(predicted-mask embedding, detached
  embedding of its matched ground-truth mask).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

IGNORE = -100


def classification_sums(logits: torch.Tensor, targets: torch.Tensor, void_index: Optional[int],
                        void_weight: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """logits [..., C], targets [...] (class, ``void_index`` or IGNORE) -> (weighted CE
    sum, sum of the weights of the counted targets)."""
    logits, targets = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
    weight = torch.ones(logits.shape[-1], device=logits.device)
    if void_index is not None:
        weight[void_index] = void_weight
    total = F.cross_entropy(logits, targets, weight=weight, ignore_index=IGNORE, reduction="sum")
    counted = targets != IGNORE
    return total, weight[targets[counted]].sum()


def mask_sums(mask_logits: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """[M, h, w] logits and [M, h, w] targets in [0, 1] -> (Dice sum, BCE sum) over the
    M masks (BCE averaged over each mask's pixels, as Mask2Former)."""
    logits, targets = mask_logits.flatten(1).float(), targets.flatten(1).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    probs = logits.sigmoid()
    dice = 1 - (2 * (probs * targets).sum(1) + 1) / (probs.sum(1) + targets.sum(1) + 1)
    return dice.sum(), bce.sum()


def consistency_sum(predicted: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
    """[M, E] embeddings of predicted masks and of their matched GT masks."""
    return (1 - F.cosine_similarity(predicted.float(), ground_truth.detach().float(), dim=-1)).sum()
