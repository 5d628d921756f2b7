"""Mask proposals: a frozen Mask2Former proposes class-agnostic masks, or ground truth does.

Mask2Former's class labels are thrown away (CLIP classifies the masks); only its
no-object probability survives, as objectness.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.utils import (CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME,
                                WEIGHTS_NAME)

from ..structures import MaskProposals

_SWIN_STAGES = ["stage1", "stage2", "stage3", "stage4"]

# Mask2Former's COCO-panoptic head, spelled out rather than left to transformers' defaults
# so that a change of defaults cannot silently stop the table fitting hub checkpoints.
_COCO_PANOPTIC_HEAD = dict(
    feature_size=256, mask_feature_size=256, hidden_dim=256, encoder_feedforward_dim=1024, encoder_layers=6,
    decoder_layers=10, num_attention_heads=8, dim_feedforward=2048, common_stride=4,
    feature_strides=[4, 8, 16, 32], num_queries=100, num_labels=133)

# Built offline (nothing is downloaded). swin-tiny / swin-base match the hub's
# facebook/mask2former-swin-{tiny,base}-coco-panoptic, converted from Mask2Former's
# configs/coco/panoptic-segmentation/swin/maskformer2_swin_{tiny,base_384}_bs16_50ep.yaml.
# Both use 100 queries: Mask2Former's model zoo uses 200 only for Swin-L (swin-large below).
# "tiny" is for tests and CPU smoke runs. decoder_layers counts the prediction from the bare
# queries, so 3 means 2 masked-attention layers (as the hub's 10 means 9).
MASK2FORMER_ARCHS: dict[str, dict] = {
    "swin-tiny": dict(
        backbone_config=dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                             image_size=224, drop_path_rate=0.3, out_features=_SWIN_STAGES),
        **_COCO_PANOPTIC_HEAD),
    "swin-base": dict(
        backbone_config=dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                             image_size=384, drop_path_rate=0.3, out_features=_SWIN_STAGES),
        **_COCO_PANOPTIC_HEAD),
    # Swin-L (IN-21k, 384) is the one Mask2Former COCO-panoptic model with 200 queries.
    "swin-large": dict(
        backbone_config=dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
                             image_size=384, drop_path_rate=0.3, out_features=_SWIN_STAGES),
        **{**_COCO_PANOPTIC_HEAD, "num_queries": 200}),
    "tiny": dict(
        backbone_config=dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=4,
                             image_size=128, drop_path_rate=0.0, out_features=_SWIN_STAGES),
        feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, encoder_layers=1,
        decoder_layers=3, num_attention_heads=2, dim_feedforward=64, common_stride=4,
        feature_strides=[4, 8, 16, 32], num_queries=20, num_labels=133),
}


def _config_keys(config_class) -> set[str]:
    # Private dataclass fields (SwinConfig._out_features) are set through their public name.
    return {f.name.lstrip("_") for f in dataclasses.fields(config_class)} | {"num_labels"}


def _check_keys(kwargs: dict, config_class, where: str) -> None:
    """transformers configs accept any kwarg silently; a typo would build the wrong model."""
    valid = _config_keys(config_class)
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown}; valid keys: {sorted(valid)}")


def build_config(arch: dict) -> Mask2FormerConfig:
    """Mask2FormerConfig from a MASK2FORMER_ARCHS-style dict (backbone_config is SwinConfig kwargs)."""
    arch = dict(arch)
    backbone = arch.pop("backbone_config", None)
    if not isinstance(backbone, dict):
        raise ValueError("a Mask2Former arch needs backbone_config: a dict of SwinConfig kwargs")
    _check_keys(arch, Mask2FormerConfig, "Mask2FormerConfig")
    _check_keys(backbone, SwinConfig, "backbone_config (SwinConfig)")
    return Mask2FormerConfig(backbone_config=SwinConfig(**backbone), **arch)


def _arch_with_overrides(name: str, overrides: dict) -> dict:
    if name not in MASK2FORMER_ARCHS:
        raise ValueError(f"unknown Mask2Former arch {name!r}; known: {sorted(MASK2FORMER_ARCHS)}")
    arch = copy.deepcopy(MASK2FORMER_ARCHS[name])
    backbone_overrides = overrides.pop("backbone_config", {})
    arch.update(overrides)
    arch["backbone_config"].update(backbone_overrides)
    return arch


# Hub ids are "name" or "org/name"; anything else (absolute, ./relative, nested) is a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
_HOW_TO_SAVE = ("write checkpoint directories with Mask2FormerProposals.save_pretrained(dir) or "
                "Mask2FormerForUniversalSegmentation.save_pretrained(dir)")


def _check_local_checkpoint(path: str) -> None:
    if not os.path.isfile(os.path.join(path, CONFIG_NAME)):
        raise FileNotFoundError(f"Mask2Former checkpoint {path!r} has no {CONFIG_NAME}; {_HOW_TO_SAVE}")
    if not any(os.path.isfile(os.path.join(path, f)) for f in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"Mask2Former checkpoint {path!r} has no weights (none of {list(_WEIGHT_FILES)}); {_HOW_TO_SAVE}")


def _examples(keys, n: int = 5) -> str:
    keys = sorted(keys, key=str)
    return ", ".join(map(str, keys[:n])) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _unneeded_weights(model: Mask2FormerForUniversalSegmentation) -> list[re.Pattern]:
    """Weights a checkpoint may lack without changing the proposals.

    Submodels declare theirs (SwinBackbone: the unused swin.layernorm, absent from the hub's
    pre-v5 checkpoints), but transformers honours that only for the top-level model.
    The loss's criterion.* buffers play no part at inference.
    """
    patterns = [re.compile(r"criterion\.")]
    for name, module in model.named_modules():
        if name:  # the top-level model's own list is already applied
            for pattern in getattr(module, "_keys_to_ignore_on_load_missing", None) or ():
                patterns.append(re.compile(re.escape(name + ".") + pattern))
    return patterns


def _check_loading_info(path: str, info: dict, unneeded: list[re.Pattern]) -> None:
    """Raise unless every needed model weight came from the checkpoint with the right shape.

    transformers only logs missing weights and initialises them at random, which would give
    plausible-looking but meaningless proposals.
    """
    missing = [k for k in info.get("missing_keys", ()) if not any(p.match(k) for p in unneeded)]
    unexpected = info.get("unexpected_keys", ())
    mismatched = [f"{key} (checkpoint {tuple(ckpt)} vs config {tuple(model)})"
                  for key, ckpt, model in info.get("mismatched_keys", ())]
    if missing or mismatched:
        parts = [f"{name} {_examples(keys)}" for name, keys in
                 (("missing:", missing), ("shape mismatch:", mismatched), ("unexpected:", unexpected)) if keys]
        raise ValueError(
            f"Mask2Former weights in {path!r} do not fit its {CONFIG_NAME}; " + "; ".join(parts) +
            f". Fix: keep the {CONFIG_NAME} that was saved with these weights, or re-save the model; {_HOW_TO_SAVE}")
    if unexpected:
        # Every weight the model needs was loaded; extra tensors cannot change the proposals.
        warnings.warn(f"Mask2Former checkpoint {path!r} has unused tensors: {_examples(unexpected)}")


class Mask2FormerProposals(torch.nn.Module):
    """Frozen Mask2Former as a class-agnostic mask proposer.

    Frozen because the open-vocabulary recipe relies on its COCO-trained masks; it stays in
    eval mode even under a parent's .train() so Swin's drop-path never perturbs proposals.
    """

    size_divisor = 32  # Swin's 4 stages downsample by 32; Mask2Former pads inputs to this

    def __init__(self, model: Mask2FormerForUniversalSegmentation):
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        # Non-persistent: normalisation is part of the method, not of the checkpoint.
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        self.train(False)

    @classmethod
    def from_arch(cls, name: str, **overrides) -> "Mask2FormerProposals":
        """Random-init model from MASK2FORMER_ARCHS[name]; overrides replace top-level keys,
        and a backbone_config override dict is merged into the backbone's kwargs."""
        return cls(Mask2FormerForUniversalSegmentation(build_config(_arch_with_overrides(name, overrides))))

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike) -> "Mask2FormerProposals":
        """Load a save_pretrained directory, or a hub id where a network is reachable."""
        path = os.path.expanduser(os.fspath(path_or_hub_id))
        local = os.path.isdir(path)
        if local:
            _check_local_checkpoint(path)
        elif not _HUB_ID.fullmatch(path):
            raise FileNotFoundError(f"Mask2Former checkpoint directory {path!r} does not exist; {_HOW_TO_SAVE}")
        try:
            config = AutoConfig.from_pretrained(path)
        except OSError as e:
            if local:
                raise
            raise FileNotFoundError(
                f"could not load Mask2Former {path!r}: no such local directory and the hub did not serve it "
                f"({e}). Without network access pass a local directory; {_HOW_TO_SAVE}") from e
        if not isinstance(config, Mask2FormerConfig):
            raise ValueError(f"{path!r} holds a {type(config).__name__}, not a Mask2Former checkpoint")
        # Mismatched shapes are collected rather than raised so that the error can name them.
        model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
            path, config=config, dtype=torch.float32, output_loading_info=True, ignore_mismatched_sizes=True)
        _check_loading_info(path, info, _unneeded_weights(model))
        return cls(model)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.model.save_pretrained(path)

    @property
    def num_queries(self) -> int:
        return self.model.config.num_queries

    def train(self, mode: bool = True) -> "Mask2FormerProposals":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> MaskProposals:
        """images: float RGB [B, 3, H, W] in [0, 1]. Returns mask logits at 1/4 resolution,
        [B, Q, ceil(H/4), ceil(W/4)], and objectness [B, Q], both float32."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be float RGB [B, 3, H, W] in [0, 1]; got {images.dtype} "
                             f"{tuple(images.shape)}")
        height, width = images.shape[-2:]
        # Normalise in float32 whatever the input dtype, then pad with zeros (the mean colour),
        # bottom/right, as Mask2Former pads after normalising.
        x = (images.to(self.pixel_mean.device, torch.float32) - self.pixel_mean) / self.pixel_std
        x = F.pad(x, (0, -width % self.size_divisor, 0, -height % self.size_divisor))
        out = self.model(pixel_values=x.to(self.model.dtype))

        masks = out.masks_queries_logits
        # Keep the mask cells that overlap the image; ceil so a partly covered last cell stays.
        crop_h = -(-height * masks.shape[-2] // x.shape[-2])
        crop_w = -(-width * masks.shape[-1] // x.shape[-1])
        masks = masks[..., :crop_h, :crop_w].float()
        objectness = 1.0 - out.class_queries_logits.float().softmax(-1)[..., -1]
        return MaskProposals(masks=masks.contiguous(), objectness=objectness)


class OracleProposals:
    """Ground-truth masks posing as proposals, for the oracle analysis (CLIP classifies the
    true segments, which isolates classification error from mask quality)."""

    logit = 20.0  # sigmoid(20) = 1 - 2e-9: a hard mask that still reads as logits

    def __init__(self, device: torch.device | str | None = None):
        self.device = device

    def __call__(self, gt_masks: Sequence[np.ndarray | torch.Tensor]) -> MaskProposals:
        """gt_masks: per image, bool/uint8 [N_i, H, W] (nonzero = inside), all the same H, W.

        Images with fewer segments are padded with empty masks of objectness 0; Q is at least 1
        so an image without segments still yields a well-formed (all-void) batch.
        """
        if len(gt_masks) == 0:
            raise ValueError("OracleProposals needs the masks of at least one image")
        masks = [torch.as_tensor(np.asarray(m)) if not isinstance(m, torch.Tensor) else m for m in gt_masks]
        if any(m.dim() != 3 for m in masks) or len({tuple(m.shape[-2:]) for m in masks}) != 1:
            raise ValueError("ground-truth masks must be [N_i, H, W] with the same H, W for every image; got "
                             f"{[tuple(m.shape) for m in masks]}")
        device = self.device if self.device is not None else masks[0].device
        height, width = masks[0].shape[-2:]
        num_queries = max(1, max(m.shape[0] for m in masks))
        logits = torch.full((len(masks), num_queries, height, width), -self.logit, device=device)
        objectness = torch.zeros(len(masks), num_queries, device=device)
        for i, m in enumerate(masks):
            n = m.shape[0]
            logits[i, :n][m.to(device) != 0] = self.logit
            objectness[i, :n] = 1.0
        return MaskProposals(masks=logits, objectness=objectness)
