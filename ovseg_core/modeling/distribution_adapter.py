"""SMART's Distribution Adapter: a few convolutions that reshape proposal masks.

Mask2Former's mask logits are not what CLIP's attention expects (the paper cites the
input-distribution gap measured by OVSeg); 3x3 convolutions learn that correction on
the mask logits before they become the attention bias. The paper uses two (1 -> 8 -> 1);
``layers`` 1-3 are its Table 3 ablation (1: one 1 -> 1 conv; 3: 1 -> 8 -> 8 -> 1). The
correction is residual and its last conv starts at zero, so an untrained adapter is the
identity and the baseline's masks pass unchanged.
"""
import torch
from torch import nn

ADAPTER_LAYERS = (0, 1, 2, 3)   # 0: no adapter (the encoder holds None)


class DistributionAdapter(nn.Module):
    def __init__(self, layers: int = 2, hidden: int = 8):
        super().__init__()
        if layers not in ADAPTER_LAYERS[1:]:
            raise ValueError(f"a Distribution Adapter has 1, 2 or 3 conv layers, not {layers!r} "
                             f"(distribution_adapter_layers: 0 means no adapter)")
        widths = [1] + [hidden] * (layers - 1) + [1]
        # conv1, conv2, ...: the two-layer adapter keeps the parameter names of earlier deltas.
        self.convs = [f"conv{i + 1}" for i in range(layers)]
        for name, c_in, c_out in zip(self.convs, widths[:-1], widths[1:]):
            self.add_module(name, nn.Conv2d(c_in, c_out, 3, padding=1))
        self.act = nn.GELU()
        last = getattr(self, self.convs[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """[N, 1, h, w] logits -> adjusted logits of the same shape."""
        y = mask_logits
        for i, name in enumerate(self.convs):
            y = getattr(self, name)(y)
            if i < len(self.convs) - 1:
                y = self.act(y)
        return mask_logits + y
