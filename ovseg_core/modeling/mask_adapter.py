"""Mask-Adapter head: semantic activation maps from a mask and CLIP's dense features.

Per mask: the mask is patchified by two stride-2 convolutions to the CLIP feature grid,
added to the CLIP features, refined by three ConvNeXt blocks and turned into K
activation maps. Each map is a spatial softmax over log-sigmoid scores; the mask
embedding is the mean over maps of the map-weighted CLIP features, through CLIP's head.
Unlike mask pooling, the maps may look outside the mask for context.
"""
import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's channels_first LN)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class MaskAdapterHead(nn.Module):
    def __init__(self, clip_width: int, hidden: int = 256, num_maps: int = 16, num_blocks: int = 3):
        super().__init__()
        self.num_maps = num_maps
        self.mask_patchify = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1), ChannelLayerNorm(4), nn.GELU(),
            nn.Conv2d(4, 16, 3, stride=2, padding=1), ChannelLayerNorm(16), nn.GELU(),
            nn.Conv2d(16, clip_width, 1))
        self.fuse = nn.Conv2d(clip_width, hidden, 1)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(hidden) for _ in range(num_blocks)])
        self.norm = ChannelLayerNorm(hidden)
        self.to_maps = nn.Conv2d(hidden, num_maps, 1)

    def activation_maps(self, tokens: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """tokens [B, gh, gw, C] CLIP features, masks [B, Q, h, w] logits -> [B, Q, K, gh*gw]
        normalised maps (each sums to 1 over space)."""
        b, gh, gw, c = tokens.shape
        q = masks.shape[1]
        binary = (masks.flatten(0, 1)[:, None].float() > 0).to(tokens.dtype)
        binary = F.interpolate(binary, size=(4 * gh, 4 * gw), mode="bilinear", align_corners=False)
        feats = tokens.permute(0, 3, 1, 2).repeat_interleave(q, dim=0)
        x = self.fuse(feats + self.mask_patchify(binary))
        maps = self.to_maps(self.norm(self.blocks(x)))
        return F.logsigmoid(maps).flatten(2).softmax(-1).view(b, q, self.num_maps, gh * gw)

    def forward(self, tokens: torch.Tensor, masks: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """-> [B, Q, C] mask features (before CLIP's head). ``chunk`` masks at a time: the
        head runs on a copy of the CLIP features per mask."""
        flat = tokens.flatten(1, 2)
        pooled = [torch.einsum("bqkn,bnc->bqc", self.activation_maps(tokens, part), flat) / self.num_maps
                  for part in masks.split(chunk, dim=1)]
        return torch.cat(pooled, dim=1) if pooled else flat.new_zeros(tokens.shape[0], 0, tokens.shape[-1])
