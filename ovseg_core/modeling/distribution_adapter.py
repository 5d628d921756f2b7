"""SMART's Distribution Adapter: two convolutions that reshape proposal masks.

Mask2Former's mask logits are not what CLIP's attention expects (the paper cites the
input-distribution gap measured by OVSeg); two 3x3 convolutions learn that correction
on the mask logits before they become the attention bias. The second conv starts at
zero, so the untrained adapter is the identity and the baseline's masks pass unchanged.
"""
import torch
from torch import nn


class DistributionAdapter(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, hidden, 3, padding=1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(hidden, 1, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """[N, 1, h, w] logits -> adjusted logits of the same shape."""
        return mask_logits + self.conv2(self.act(self.conv1(mask_logits)))
