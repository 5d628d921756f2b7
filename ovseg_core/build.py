"""Builds a Segmenter from a preset: the registry users and scripts go through.

    seg = build_segmenter("smart_vitl14_336_swinb", weights="smart_coco.safetensors")
    result = seg(image_rgb, "car; road [stuff]; person,pedestrian")
"""
from __future__ import annotations

import copy
import hashlib
from typing import Any, Dict, List, Optional

import open_clip
import torch
from torch import nn

from .config import ClassifierConfig, PresetConfig, load_preset, preset_names, resolve_path, size_pair
from .modeling.classifiers import CLASSIFIERS, GeometricEnsemble, MaskCropClassifier, MaskAdapterClassifier
from .modeling.clip_encoder import MaskCLIPEncoder
from .modeling.distribution_adapter import ADAPTER_LAYERS
from .modeling.proposals import Mask2FormerProposals
from .segmenter import Segmenter
from .text import EmbeddingCache, TextEncoder
from .trainable import apply_trainable
from .weights import create_clip, load_delta

__all__ = ["build_segmenter", "preset_names", "load_preset"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here; use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or None for plain fp32."""
    table = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision not in table:
        raise ValueError(f"unknown precision {precision!r}; choose auto, fp32, fp16 or bf16")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is for CUDA; on the CPU use fp32 or bf16")
    return table[precision]


def build_classifier(cfg: ClassifierConfig, clip: nn.Module, visual: nn.Module, clip_size,
                     preset: str, resize: str = "square") -> nn.Module:
    """``visual`` becomes the classifier's encoder (its modules are taken, not copied)."""
    if cfg.type not in CLASSIFIERS:
        raise ValueError(f"preset {preset!r}: unknown classifier type {cfg.type!r}; "
                         f"choose one of {sorted(CLASSIFIERS)}")
    uses_masks_in_clip = cfg.type == "mask_attention"
    if not uses_masks_in_clip and (cfg.sma_layers or cfg.distribution_adapter_layers):
        raise ValueError(f"preset {preset!r}: sma_layers and distribution_adapter_layers need the "
                         f"mask_attention classifier, not {cfg.type!r}")
    if cfg.distribution_adapter_layers not in ADAPTER_LAYERS:
        raise ValueError(f"preset {preset!r}: classifier.distribution_adapter_layers is "
                         f"{cfg.distribution_adapter_layers}; use one of {ADAPTER_LAYERS} "
                         f"(0: no adapter, 2: the paper's)")
    text_dim = int(clip.text_projection.shape[1]) if getattr(clip, "text_projection", None) is not None \
        else clip.visual.output_dim
    encoder = MaskCLIPEncoder(visual, text_dim=text_dim, sma_layers=cfg.sma_layers,
                              sma_residual=cfg.sma_residual,
                              distribution_adapter_layers=cfg.distribution_adapter_layers)
    kwargs: Dict[str, Any] = dict(logit_scale=float(clip.logit_scale.detach().exp()), learned_void=cfg.learned_void,
                                  resize=resize)
    if cfg.type == "mask_crop":
        # Crops go through CLIP at its native (pre-training) size.
        return MaskCropClassifier(encoder, input_size=encoder.native_grid[0] * encoder.patch_size,
                                  chunk=cfg.crop_chunk, **kwargs)
    if cfg.type == "mask_adapter":
        return MaskAdapterClassifier(encoder, input_size=clip_size, hidden=cfg.adapter_hidden,
                                     num_maps=cfg.adapter_maps, **kwargs)
    return CLASSIFIERS[cfg.type](encoder, input_size=clip_size, **kwargs)


def build_segmenter(preset: str = "tiny", weights: Optional[str] = None, device: Optional[str] = None,
                    overrides: Optional[Dict[str, Any]] = None,
                    embedding_cache: Optional[EmbeddingCache] = None) -> Segmenter:
    """A ready Segmenter. ``weights`` (our trained delta) overrides the preset's;
    ``overrides`` are dotted preset keys, e.g. ``{"inference.overlap_threshold": 0.5}``;
    ``embedding_cache`` lets several segmenters share encoded vocabularies. Oracle masks
    are passed per call: ``segmenter(image, vocabulary, proposals=OracleProposals()(gt))``."""
    cfg = load_preset(preset, overrides)
    if device is not None:
        cfg.device = device
    if weights is not None:
        cfg.weights = weights
    return build_from_config(cfg, embedding_cache=embedding_cache)


def build_from_config(cfg: PresetConfig, embedding_cache: Optional[EmbeddingCache] = None) -> Segmenter:
    if cfg.runtime == "onnxruntime":   # the same Segmenter, its networks from an `ovseg export` folder
        from .export.runtime import build_onnx_segmenter
        return build_onnx_segmenter(cfg, embedding_cache)
    device = resolve_device(cfg.device)
    clip_size = size_pair(cfg.clip.input_size)
    clip = create_clip(cfg.clip.model, resolve_path(cfg.clip.pretrained), cfg.name)
    # The second half of an ensemble gets its own copy so the two never share parameters.
    second_visual = copy.deepcopy(clip.visual) if cfg.ensemble is not None else None
    classifier = build_classifier(cfg.classifier, clip, clip.visual, clip_size, cfg.name, cfg.clip.resize)
    seen: List[str] = []
    if cfg.ensemble is not None:
        second = build_classifier(cfg.ensemble.classifier, clip, second_visual, clip_size, cfg.name,
                                  cfg.clip.resize)
        classifier = GeometricEnsemble(classifier, second, cfg.ensemble.alpha, cfg.ensemble.beta)
        seen = list(cfg.ensemble.seen_classes)
    clip.visual = None  # the encoders own the visual tower now; the text tower stays here
    if cfg.text.trainable:
        classifier.text_tower = clip  # trained too: its tensors join the classifier's delta
    proposals = build_proposals(cfg)
    try:
        trainable = apply_trainable(classifier, cfg.classifier.trainable, clip, proposals,
                                    lora_rank=cfg.classifier.lora_rank,
                                    second_policy=cfg.ensemble.classifier.trainable if cfg.ensemble else "frozen")
    except ValueError as err:
        raise ValueError(f"preset {cfg.name!r}: {err}") from err
    if cfg.weights:
        load_delta(classifier, trainable, resolve_path(cfg.weights), cfg.name)
    classifier.eval()
    tokenizer = open_clip.get_tokenizer(cfg.clip.model)
    model_key = f"{cfg.name}|{cfg.clip.model}|{cfg.clip.pretrained}|{_fingerprint(clip)}"
    text_encoder = TextEncoder(clip.to(device), tokenizer, model_key, chunk_size=cfg.text.chunk_size,
                               # `is None`, not `or`: an empty shared cache is falsy (it has a __len__)
                               cache=embedding_cache if embedding_cache is not None
                               else EmbeddingCache(cfg.text.cache_size))
    segmenter = Segmenter(proposals.to(device), classifier.to(device), text_encoder,
                          proposal_size=size_pair(cfg.proposals.input_size), clip_size=clip_size,
                          inference=cfg.inference, device=device,
                          amp_dtype=resolve_precision(cfg.precision, device), seen_classes=seen,
                          name=cfg.name, config=cfg, trainable=trainable,
                          proposal_resize=cfg.proposals.resize, clip_resize=cfg.clip.resize)
    return segmenter


def _fingerprint(module: nn.Module) -> str:
    """Names a text tower's weights in cache keys: two random initialisations (or two
    checkpoints under one tag) never share cached embeddings; equal weights do."""
    digest = hashlib.sha1()
    for p in list(module.parameters())[:3]:
        digest.update(p.detach().float().cpu().numpy().tobytes()[:1 << 20])
    return digest.hexdigest()[:16]


def build_proposals(cfg: PresetConfig) -> nn.Module:
    if cfg.proposals.pretrained:
        try:
            return Mask2FormerProposals.from_pretrained(resolve_path(cfg.proposals.pretrained))
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"preset {cfg.name!r}: {err}") from err
    if not cfg.proposals.model:
        raise ValueError(f"preset {cfg.name!r}: set proposals.model (an architecture) or "
                         f"proposals.pretrained (a Mask2Former directory)")
    return Mask2FormerProposals.from_arch(cfg.proposals.model)
