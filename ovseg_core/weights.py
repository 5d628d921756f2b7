"""Loading weights: open_clip checkpoints and our trained deltas (safetensors).

A delta holds exactly the parameters a preset's trainable policy names (SMART's query
projections and new modules), so a 26M-parameter fine-tune ships as a small file on top
of the public CLIP. Every failure names the file, the preset and the offending keys.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

import open_clip
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import CLIP_CONFIG_DIR

DELTA_FORMAT = "ovseg-delta/1"
_registered = False


def register_clip_configs():
    """Makes our own open_clip model configs (config/clip/*.json) known by name."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CLIP_CONFIG_DIR)
        _registered = True


def _looks_like_file(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def create_clip(model: str, pretrained: Optional[str], preset: str) -> nn.Module:
    """An open_clip CLIP with random weights (pretrained None), a pretrained tag, or a
    local checkpoint file (open_clip's loader, which reads ``weights_only``)."""
    register_clip_configs()
    if model not in open_clip.list_models():
        raise ValueError(f"preset {preset!r}: unknown open_clip model {model!r}; use one of "
                         f"open_clip.list_models() or add a JSON config to {CLIP_CONFIG_DIR}")
    if pretrained and _looks_like_file(pretrained) and not Path(pretrained).is_file():
        raise FileNotFoundError(f"preset {preset!r}: CLIP checkpoint {pretrained} does not exist; "
                                f"fix clip.pretrained (or build without it: --random-weights)")
    try:
        # Random weights are asked for on purpose here: silence open_clip's warning about them.
        quiet = contextlib.nullcontext() if pretrained else _no_warnings()
        with quiet:
            clip = open_clip.create_model(model, pretrained=pretrained or None,
                                          require_pretrained=bool(pretrained))
    except RuntimeError as err:
        shapes = _shape_mismatches(model, pretrained)
        detail = ("tensors of another shape: " + "; ".join(shapes[:8])) if shapes else str(err)[:800]
        raise ValueError(f"preset {preset!r}: CLIP weights {pretrained!r} do not fit model {model!r}: {detail}. "
                         f"Use the model config the checkpoint was trained with") from err
    except Exception as err:
        if pretrained and not _looks_like_file(pretrained):
            raise ValueError(f"preset {preset!r}: could not get open_clip weights {model}/{pretrained} "
                             f"({type(err).__name__}: {err}). Without a network, download the "
                             f"checkpoint elsewhere and set clip.pretrained to its local path") from err
        raise
    return clip.eval()


def _shape_mismatches(model: str, path: Optional[str]) -> List[str]:
    """``key: checkpoint shape vs model shape`` for a local checkpoint, so a load that
    open_clip fails deep inside (e.g. resizing fp16 position embeddings) still says
    which tensors differ. Empty when it cannot tell."""
    if not path or not Path(path).is_file():
        return []
    try:
        if path.endswith(".safetensors"):
            with safe_open(path, framework="pt", device="cpu") as f:
                found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            found = {k.removeprefix("module."): tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
        with _no_warnings():
            expected = {k: tuple(v.shape) for k, v in open_clip.create_model(model).state_dict().items()}
    except Exception:  # the original error stays the message
        return []
    return [f"{k}: checkpoint {list(found[k])} vs model {list(expected[k])}"
            for k in expected if k in found and found[k] != expected[k]]


@contextlib.contextmanager
def _no_warnings():
    """Silences open_clip's warnings meanwhile; restores the caller's own
    ``logging.disable`` level afterwards (not NOTSET, which would undo theirs)."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(previous)


def save_delta(module: nn.Module, names: List[str], path: str, preset: str):
    """Saves the named (trainable) parameters of ``module`` as a safetensors delta."""
    params = dict(module.named_parameters())
    tensors = {n: params[n].detach().to("cpu").contiguous() for n in names}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": DELTA_FORMAT, "preset": preset})


def load_delta(module: nn.Module, names: List[str], path: str, preset: str) -> Dict[str, str]:
    """Loads a delta saved by :func:`save_delta` into ``module``; strict: it must hold
    exactly the parameters ``names`` (the preset's trainable set) with their shapes."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"preset {preset!r}: weights file {path} does not exist")
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:
        raise ValueError(f"preset {preset!r}: {path} is not a readable safetensors file ({err}); "
                         f"deltas are written by ovseg_core.weights.save_delta") from err
    with handle as f:
        metadata = f.metadata() or {}
        keys = set(f.keys())
        params = dict(module.named_parameters())
        missing = sorted(set(names) - keys)
        unexpected = sorted(keys - set(names))
        if missing or unexpected:
            raise ValueError(
                f"weights {path} (trained for preset {metadata.get('preset', '?')!r}) do not match "
                f"preset {preset!r}: missing {len(missing)} key(s) {missing[:5]}, unexpected "
                f"{len(unexpected)} key(s) {unexpected[:5]}. Use the preset the delta was trained with.")
        wrong = [f"{k}: file {tuple(f.get_slice(k).get_shape())} vs model {tuple(params[k].shape)}"
                 for k in sorted(keys) if tuple(f.get_slice(k).get_shape()) != tuple(params[k].shape)]
        if wrong:
            raise ValueError(f"weights {path} do not match preset {preset!r}: wrong shapes {wrong[:5]}")
        with torch.no_grad():
            for k in keys:
                params[k].copy_(f.get_tensor(k))
    return metadata
