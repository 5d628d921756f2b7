"""SMART's Semantic-guided Mask Attention: mask tokens read the vocabulary first.

Eq. (3)-(4) of the paper: [MASK^] = softmax(g_q(MASK) g_k(TGT)^T) g_v(TGT), and CLIP's
own f_q then projects [MASK^] into the query of the masked attention over image tokens.
We add the result to the mask token (residual) and start g_v at zero, so an untrained
SMA is exactly the frozen MaskCLIP baseline and training departs from it smoothly
(zero-initialised gating as in LLaMA-Adapter, which FISA cites). ``residual=False``
gives the paper's literal form.
"""
import torch
import torch.nn.functional as F
from torch import nn


class SemanticGuidedAttention(nn.Module):
    def __init__(self, width: int, text_dim: int, num_heads: int, residual: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.residual = residual
        self.g_q = nn.Linear(width, width)
        self.g_k = nn.Linear(text_dim, width)
        self.g_v = nn.Linear(text_dim, width)
        if residual:
            nn.init.zeros_(self.g_v.weight)
            nn.init.zeros_(self.g_v.bias)

    def forward(self, mask_tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """mask_tokens: [B, Q, width] (after ln_1); text: [T, text_dim] target class tokens."""
        b, q, d = mask_tokens.shape
        h = self.num_heads
        queries = self.g_q(mask_tokens).view(b, q, h, d // h).transpose(1, 2)
        keys = self.g_k(text).view(1, -1, h, d // h).transpose(1, 2).expand(b, -1, -1, -1)
        values = self.g_v(text).view(1, -1, h, d // h).transpose(1, 2).expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(queries, keys, values).transpose(1, 2).reshape(b, q, d)
        return mask_tokens + out if self.residual else out
