"""Data passed between pipeline stages: proposals -> class probabilities -> panoptic result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch


@dataclass
class MaskProposals:
    """Class-agnostic masks for a batch of images.

    masks: [B, Q, h, w] mask logits (sigmoid > 0.5 is inside), at any resolution;
    consumers resize to what they need. objectness: [B, Q] probability that a query
    is a real segment (1 - Mask2Former's no-object probability); it becomes the void
    share of each proposal's class distribution.
    """

    masks: torch.Tensor
    objectness: torch.Tensor

    def __post_init__(self):
        if self.masks.dim() != 4 or self.objectness.shape != self.masks.shape[:2]:
            raise ValueError(
                f"MaskProposals wants masks [B,Q,h,w] and objectness [B,Q]; got "
                f"{tuple(self.masks.shape)} and {tuple(self.objectness.shape)}")


@dataclass
class Segment:
    """One panoptic segment; bbox is COCO style (x, y, width, height) in pixels."""

    id: int
    class_index: int
    class_name: str
    score: float
    is_thing: bool
    area: int
    bbox: Tuple[int, int, int, int]


@dataclass
class PanopticResult:
    """Per-image output. segment_map: int32 [H, W], 0 = no segment, else Segment.id.
    semantic_map: int32 [H, W] class index per pixel (argmax of the semantic scores),
    computed separately from the panoptic merge as Mask2Former does for mIoU."""

    segment_map: np.ndarray
    segments: List[Segment]
    semantic_map: np.ndarray
    class_names: List[str] = field(default_factory=list)
    class_is_thing: List[bool] = field(default_factory=list)
    vocabulary_version: Optional[int] = None
