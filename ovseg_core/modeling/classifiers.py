"""Mask classifiers: (image, proposals, vocabulary embeddings) -> class logits per proposal.

Every classifier takes the same inputs and returns ``[B, Q, K]`` logits (``K + 1`` when
it has a learned void embedding, last column void), so the pipeline, the panoptic merge
and the papers' comparisons treat them alike:

- ``MaskAttentionClassifier``: mask tokens inside CLIP (MaskCLIP). With SMA layers, the
  Distribution Adapter and Query Projection Tuning it is SMART/FISA; frozen and without
  them it is the MaskCLIP baseline.
- ``MaskPoolingClassifier``: average CLIP's dense features under each mask (FC-CLIP).
- ``MaskCropClassifier``: each masked crop through CLIP on its own (OVSeg).
- ``MaskAdapterClassifier``: semantic activation maps (Mask-Adapter).
- ``GeometricEnsemble``: two of the above, combined per class as the papers do.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from ..config import size_pair
from ..structures import MaskProposals
from ..text import ClassEmbeddings
from .clip_encoder import MaskCLIPEncoder
from .mask_adapter import MaskAdapterHead

Size = Union[int, Sequence[int]]


class MaskClassifier(nn.Module):
    """Shared plumbing: CLIP preprocessing, text matching, an optional learned void."""

    def __init__(self, encoder: MaskCLIPEncoder, logit_scale: float, input_size: Size,
                 learned_void: bool = False):
        super().__init__()
        self.encoder = encoder
        # FC-CLIP clamps exp(logit_scale) at 100, as CLIP's training did.
        self.logit_scale = float(min(logit_scale, 100.0))
        self.input_size = size_pair(input_size)
        self.register_buffer("mean", torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1), persistent=False)
        self.void_embedding = nn.Parameter(torch.randn(encoder.output_dim) * 0.02) if learned_void else None

    def normalize(self, images: torch.Tensor, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> resized (bilinear) and CLIP-normalised."""
        size = size or self.input_size
        if tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def embed(self, images: torch.Tensor, proposals: MaskProposals,
              text: ClassEmbeddings) -> torch.Tensor:
        """-> [B, Q, E] mask embeddings in CLIP's joint space."""
        raise NotImplementedError

    def adapted_masks(self, proposals: MaskProposals) -> Optional[torch.Tensor]:
        """The Distribution Adapter's output logits [B, Q, h', w'] (None without one)."""
        return None

    def forward(self, images: torch.Tensor, proposals: MaskProposals, text: ClassEmbeddings,
                seen: Optional[torch.Tensor] = None, return_embeddings: bool = False,
                return_adapted_masks: bool = False):
        """-> logits [B, Q, K(+1)]; with ``return_embeddings`` also the normalised mask
        embeddings [B, Q, E] they were computed from (Mask-Adapter's consistency loss), with
        ``return_adapted_masks`` also :meth:`adapted_masks` (the adapter's Dice/BCE loss), in
        that order. Everything a training loss needs comes out of forward, so the
        classifier can be wrapped in DistributedDataParallel."""
        adapted = self.adapted_masks(proposals) if return_adapted_masks else None
        # The adapter's output, once computed for the loss, also makes the attention bias.
        features = F.normalize((self.embed(images, proposals, text) if adapted is None
                                else self.embed(images, proposals, text, adapted=adapted)).float(), dim=-1)
        logits = text.logits(features, self.logit_scale)
        if self.void_embedding is not None:
            void = features @ F.normalize(self.void_embedding.float(), dim=0)
            logits = torch.cat([logits, self.logit_scale * void[..., None]], dim=-1)
        extras = ([features] if return_embeddings else []) + ([adapted] if return_adapted_masks else [])
        return (logits, *extras) if extras else logits

    def new_parameters(self) -> Iterable[Tuple[str, nn.Parameter]]:
        """Parameters that are not CLIP's: always trained (SMART's new modules)."""
        for name, p in self.named_parameters():
            if name == "void_embedding" or not name.startswith(("encoder.", "text_tower.")):
                yield name, p
        for name, p in self.encoder.new_module_parameters():
            yield "encoder." + name, p


class MaskAttentionClassifier(MaskClassifier):
    def embed(self, images, proposals, text, adapted=None):
        out = self.encoder(self.normalize(images), proposals.masks, text.embeddings, adapted)
        return out["masks"]

    def adapted_masks(self, proposals):
        return self.encoder.adapted_masks(proposals.masks, self.input_size)


class MaskPoolingClassifier(MaskClassifier):
    """FC-CLIP's mask pooling: the mask logits, bilinearly resized to the feature grid and
    binarised (logit > 0), average CLIP's dense features before the final projection
    (last-block patch tokens); the average then goes through CLIP's head (ln_post, proj).
    An empty mask pools nothing (zero features)."""

    def embed(self, images, proposals, text):
        tokens = self.encoder(self.normalize(images))["tokens"]  # [B, gh, gw, width]
        inside = F.interpolate(proposals.masks.float(), size=tokens.shape[1:3], mode="bilinear",
                               align_corners=False) > 0
        inside = inside.to(tokens.dtype)
        pooled = torch.einsum("bqhw,bhwc->bqc", inside, tokens)
        pooled = pooled / inside.flatten(2).sum(-1, keepdim=True).clamp_min(1)
        return self.encoder.head(pooled)


class MaskCropClassifier(MaskClassifier):
    """OVSeg: crop each mask's box, blank what is outside the mask, classify the crop.

    ``input_size`` is the crop size (CLIP's native size); ``chunk`` crops go through CLIP
    at once. It is the slow, faithful baseline: one CLIP forward per proposal.
    """

    def __init__(self, *args, chunk: int = 32, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk = chunk

    def crops(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """image [3, H, W] in [0, 1], masks [Q, h, w] logits -> [Q, 3, s, s] masked crops."""
        h, w = image.shape[-2:]
        inside = F.interpolate(masks[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0] > 0
        background = self.mean.view(3, 1, 1).to(image.dtype)  # blanks to the mean colour: 0 after normalising
        out = []
        for m in inside:
            ys, xs = torch.nonzero(m, as_tuple=True)
            if ys.numel() == 0:
                y0, y1, x0, x1 = 0, h, 0, w
            else:
                y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            crop = torch.where(m[y0:y1, x0:x1], image[:, y0:y1, x0:x1], background)
            out.append(F.interpolate(crop[None], size=self.input_size, mode="bilinear", align_corners=False))
        return torch.cat(out) if out else image.new_zeros(0, 3, *self.input_size)

    def embed(self, images, proposals, text):
        embeddings = []
        for image, masks in zip(images, proposals.masks):
            crops = self.normalize(self.crops(image, masks))
            embeddings.append(torch.cat([self.encoder(c)["image"] for c in crops.split(self.chunk)])
                              if len(crops) else crops.new_zeros(0, self.encoder.output_dim))
        return torch.stack(embeddings)


class MaskAdapterClassifier(MaskClassifier):
    def __init__(self, encoder: MaskCLIPEncoder, *args, hidden: int = 256, num_maps: int = 16, **kwargs):
        super().__init__(encoder, *args, **kwargs)
        self.adapter = MaskAdapterHead(encoder.width, hidden=hidden, num_maps=num_maps)

    def embed(self, images, proposals, text):
        tokens = self.encoder(self.normalize(images))["tokens"]
        return self.encoder.head(self.adapter(tokens, proposals.masks))


class GeometricEnsemble(nn.Module):
    """FC-CLIP's geometric ensemble: p(c) ~ p_first(c)^(1-w) * p_second(c)^w, w = alpha
    for seen classes, beta for unseen.

    ``first`` is the in-vocabulary classifier (trained on the seen classes), ``second``
    the out-of-vocabulary one, frozen CLIP (FC-CLIP: a 0.4, b 0.8; Mask-Adapter with
    FC-CLIP: 0.7, 0.9). Each half's softmax runs over the K classes only (a void logit is
    dropped before it). If ``first`` has a learned void, the void probability is its
    p_void and the classes share the rest: the K + 1 returned logits have the softmax
    [softmax(ensemble) * (1 - p_void), p_void]; otherwise the K logits are the ensemble's
    log-probabilities (void is then left to the proposals' objectness).
    ``seen`` [K] bool marks the seen classes; None means all unseen.
    """

    def __init__(self, first: nn.Module, second: nn.Module, alpha: float = 0.4, beta: float = 0.8):
        super().__init__()
        self.first, self.second = first, second
        self.alpha, self.beta = alpha, beta

    def forward(self, images, proposals, text: ClassEmbeddings, seen: Optional[torch.Tensor] = None):
        k = text.num_classes
        first = self.first(images, proposals, text, seen).float()
        second = self.second(images, proposals, text, seen).float()
        w = torch.full((k,), self.beta, device=first.device)
        if seen is not None:
            w = torch.where(seen.to(w.device), torch.full_like(w, self.alpha), w)
        ensemble = (1 - w) * first[..., :k].log_softmax(-1) + w * second[..., :k].log_softmax(-1)
        if first.shape[-1] == k:
            return ensemble
        log_first = first.log_softmax(-1)
        log_void = log_first[..., k:]
        log_not_void = log_first[..., :k].logsumexp(-1, keepdim=True)   # log(1 - p_void), stably
        return torch.cat([ensemble.log_softmax(-1) + log_not_void, log_void], dim=-1)


CLASSIFIERS = {
    "mask_attention": MaskAttentionClassifier,
    "mask_pooling": MaskPoolingClassifier,
    "mask_crop": MaskCropClassifier,
    "mask_adapter": MaskAdapterClassifier,
}
