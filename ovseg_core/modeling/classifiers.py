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
from ..resize import check_resize_mode, fitted_size, resize_image
from ..structures import MaskProposals
from ..text import ClassEmbeddings
from .clip_encoder import MaskCLIPEncoder
from .mask_adapter import MaskAdapterHead

Size = Union[int, Sequence[int]]


class MaskClassifier(nn.Module):
    """Shared plumbing: CLIP preprocessing, text matching, an optional learned void."""

    def __init__(self, encoder: MaskCLIPEncoder, logit_scale: float, input_size: Size,
                 learned_void: bool = False, resize: str = "square"):
        super().__init__()
        self.encoder = encoder
        # FC-CLIP clamps exp(logit_scale) at 100, as CLIP's training did.
        self.logit_scale = float(min(logit_scale, 100.0))
        self.input_size = size_pair(input_size)
        # square: images are squashed to input_size; longest_side: they fit inside it, and
        # the position embeddings of the input_size frame are cut to the image's grid.
        self.resize = check_resize_mode(resize, "the classifier's resize")
        self.register_buffer("mean", torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1), persistent=False)
        self.void_embedding = nn.Parameter(torch.randn(encoder.output_dim) * 0.02) if learned_void else None

    @property
    def frame(self) -> Optional[Tuple[int, int]]:
        """The input size CLIP's position embeddings are laid out on (longest_side only)."""
        return self.input_size if self.resize == "longest_side" else None

    def input_shape(self, images: torch.Tensor, image_sizes=None) -> Tuple[int, int]:
        """The size of the batch CLIP sees: as given for a padded batch (``image_sizes``),
        else the classifier's resizing of ``images``."""
        if image_sizes is not None:
            return tuple(images.shape[-2:])
        return fitted_size(images.shape[-2:], self.input_size, self.resize)

    def normalize(self, images: torch.Tensor, image_sizes=None) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] -> resized (bilinear) and CLIP-normalised. A batch
        the segmenter has padded (``image_sizes``: each image's (h, w) at its top-left) is
        not resized; its padding becomes 0 (the mean colour), as Mask2Former pads."""
        images = resize_image(images, self.input_shape(images, image_sizes))
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if image_sizes is not None:
            h, w = x.shape[-2:]
            limits = torch.tensor(image_sizes, device=x.device)
            rows = torch.arange(h, device=x.device)[None, :, None] < limits[:, 0, None, None]
            cols = torch.arange(w, device=x.device)[None, None, :] < limits[:, 1, None, None]
            x = x * (rows & cols)[:, None].to(x.dtype)
        return x

    def clip(self, images: torch.Tensor, masks=None, text=None, adapted=None, image_sizes=None):
        """The encoder on ``images`` in [0, 1], laid out as this classifier serves them."""
        return self.encoder(self.normalize(images, image_sizes), masks, text, adapted,
                            image_sizes=image_sizes, frame=self.frame)

    def embed(self, images: torch.Tensor, proposals: MaskProposals,
              text: ClassEmbeddings, image_sizes=None) -> torch.Tensor:
        """-> [B, Q, E] mask embeddings in CLIP's joint space."""
        raise NotImplementedError

    def adapted_masks(self, proposals: MaskProposals, image_size: Optional[Tuple[int, int]] = None
                      ) -> Optional[torch.Tensor]:
        """The Distribution Adapter's output logits [B, Q, h', w'] for CLIP input of
        ``image_size`` (default: the input size); None without an adapter."""
        return None

    def forward(self, images: torch.Tensor, proposals: MaskProposals, text: ClassEmbeddings,
                seen: Optional[torch.Tensor] = None, return_embeddings: bool = False,
                return_adapted_masks: bool = False, image_sizes=None):
        """-> logits [B, Q, K(+1)]; with ``return_embeddings`` also the normalised mask
        embeddings [B, Q, E] they were computed from (Mask-Adapter's consistency loss), with
        ``return_adapted_masks`` also :meth:`adapted_masks` (the adapter's Dice/BCE loss), in
        that order. Everything a training loss needs comes out of forward, so the
        classifier can be wrapped in DistributedDataParallel. ``image_sizes``: the batch
        is padded (the segmenter's aspect-preserving layout), image i filling its top-left
        (h, w); the masks must already be off on the padding."""
        adapted = self.adapted_masks(proposals, self.input_shape(images, image_sizes)) \
            if return_adapted_masks else None
        # The adapter's output, once computed for the loss, also makes the attention bias.
        extra = {} if adapted is None else {"adapted": adapted}
        features = F.normalize(self.embed(images, proposals, text, image_sizes=image_sizes, **extra).float(),
                               dim=-1)
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
    def embed(self, images, proposals, text, image_sizes=None, adapted=None):
        return self.clip(images, proposals.masks, text.embeddings, adapted, image_sizes)["masks"]

    def adapted_masks(self, proposals, image_size=None):
        return self.encoder.adapted_masks(proposals.masks, image_size or self.input_size)


class MaskPoolingClassifier(MaskClassifier):
    """FC-CLIP's mask pooling: the mask logits, bilinearly resized to the feature grid and
    binarised (logit > 0), average CLIP's dense features before the final projection
    (last-block patch tokens); the average then goes through CLIP's head (ln_post, proj).
    An empty mask pools nothing (zero features)."""

    def embed(self, images, proposals, text, image_sizes=None):
        tokens = self.clip(images, image_sizes=image_sizes)["tokens"]  # [B, gh, gw, width]
        inside = F.interpolate(proposals.masks.float(), size=tokens.shape[1:3], mode="bilinear",
                               align_corners=False) > 0
        content = self.encoder.content_patches(self.input_shape(images, image_sizes), image_sizes)
        if content is not None:     # padding is never pooled
            inside = inside & content[:, None]
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

    def crops(self, image: torch.Tensor, masks: torch.Tensor, size: Optional[Tuple[int, int]] = None
              ) -> torch.Tensor:
        """image [3, H, W] in [0, 1], masks [Q, h, w] logits -> [Q, 3, s, s] masked crops.
        ``size``: the image's (h, w) at the top-left of a padded ``image`` (an empty mask
        then crops the image, not the padding)."""
        inside = F.interpolate(masks[None].float(), size=image.shape[-2:], mode="bilinear",
                               align_corners=False)[0] > 0
        h, w = size or image.shape[-2:]
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

    def embed(self, images, proposals, text, image_sizes=None):
        embeddings = []
        for i, (image, masks) in enumerate(zip(images, proposals.masks)):
            crops = self.normalize(self.crops(image, masks, image_sizes[i] if image_sizes is not None else None))
            embeddings.append(torch.cat([self.encoder(c)["image"] for c in crops.split(self.chunk)])
                              if len(crops) else crops.new_zeros(0, self.encoder.output_dim))
        return torch.stack(embeddings)


class MaskAdapterClassifier(MaskClassifier):
    def __init__(self, encoder: MaskCLIPEncoder, *args, hidden: int = 256, num_maps: int = 16, **kwargs):
        super().__init__(encoder, *args, **kwargs)
        self.adapter = MaskAdapterHead(encoder.width, hidden=hidden, num_maps=num_maps)

    def embed(self, images, proposals, text, image_sizes=None):
        tokens = self.clip(images, image_sizes=image_sizes)["tokens"]
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

    def forward(self, images, proposals, text: ClassEmbeddings, seen: Optional[torch.Tensor] = None,
                image_sizes=None):
        k = text.num_classes
        first = self.first(images, proposals, text, seen, image_sizes=image_sizes).float()
        second = self.second(images, proposals, text, seen, image_sizes=image_sizes).float()
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
