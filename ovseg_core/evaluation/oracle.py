"""The oracle classifier of the papers' bottleneck analysis (SMART/FISA Figure 2:
ground-truth masks with our classifier vs our masks with a perfect one)."""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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
