"""The variants of the ``shapes`` preset whose inference cost bench/shapes.py measures
(SMART, SMA everywhere, the Distribution Adapter alone, mask pooling, Mask-Adapter, the
proposals' input size and split), and the classifier call it times; here because the
benchmark and its test both build them."""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch

PRESET = "shapes"
BASELINE = "frozen"
# name -> (what it is, dotted preset overrides)
VARIANTS: Dict[str, tuple] = {
    "frozen": ("frozen mask attention (the preset)", {}),
    "smart": ("SMART: SMA last block + DA 2 + void", {
        "classifier.sma_layers": [-1], "classifier.distribution_adapter_layers": 2,
        "classifier.learned_void": True, "classifier.trainable": "query_projection"}),
    "sma_all": ("SMA in all 4 blocks", {"classifier.sma_layers": [0, 1, 2, 3]}),
    "adapter": ("Distribution Adapter alone (2)", {"classifier.distribution_adapter_layers": 2}),
    "mask_pooling": ("mask pooling (FC-CLIP)", {"classifier.type": "mask_pooling"}),
    "mask_adapter": ("Mask-Adapter (hidden 64)", {"classifier.type": "mask_adapter",
                                                  "classifier.adapter_hidden": 64}),
    "proposals_128": ("Mask2Former input 128 px (before 192)", {"proposals.input_size": 128}),
    "no_split": ("proposals not split into parts (before)", {"inference.split_components": 0.0}),
}


def build_variants(names: Sequence[str], device: str, embedding_cache=None, overrides=None):
    """{name: Segmenter} for the given VARIANTS, each built from the shapes preset (shipped
    weights; the variant's new modules at their random initialisation)."""
    from ..build import build_from_config
    from ..config import load_preset

    out = {}
    for name in names:
        cfg = load_preset(PRESET, {**VARIANTS[name][1], **(overrides or {})})
        cfg.device = device
        out[name] = build_from_config(cfg, embedding_cache=embedding_cache)
    return out


def new_parameter_count(segmenter) -> int:
    """Parameters that are not CLIP's or Mask2Former's (SMA, adapters, learned void)."""
    return sum(p.numel() for _, p in segmenter.classifier.new_parameters())


def classifier_call(segmenter, images: List[torch.Tensor], proposals, vocabulary) -> Callable[[], torch.Tensor]:
    """A function that runs ``segmenter``'s classifier alone on ``images`` ([3, H, W] in
    [0, 1]) with the given Mask2Former ``proposals`` (on the mask generator's batch), as
    the pipeline calls it: the same layout, the masks moved onto CLIP's frame, the cached
    class embeddings. Returns [B, Q, K(+1)] logits."""
    from ..resize import move_masks
    from ..structures import MaskProposals

    layout = segmenter.layout(images)
    vocab, text = segmenter.encode_vocabulary(vocabulary)
    moved = move_masks(proposals.masks, layout.proposal_valid, layout.clip_valid)
    for_clip = proposals if moved is proposals.masks else MaskProposals(moved, proposals.objectness)
    kwargs = {"image_sizes": layout.clip_sizes} if layout.clip_padded else {}
    seen = segmenter.seen_mask(vocab)

    def run():
        with segmenter.autocast():
            return segmenter.classifier(layout.clip_batch, for_clip, text, seen, **kwargs)

    return run
