"""Model input geometry: how an image is resized for a stage, and how batches are padded.

``square`` squashes every image to the stage's input size (the old behaviour, and how
training crops are fed). ``longest_side`` keeps the aspect ratio: the image is scaled to
fit inside the input size (for a square size S the longer side becomes S), so a 2:1 image
and the same content inside a padded square are seen at the same scale; images of other
sizes in one batch are padded at the bottom and right. Padding is tracked per image as the
fraction of the batch frame that holds the image, so masks can be cropped back to it.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .config import RESIZE_MODES

OFF_LOGIT = -20.0   # mask logit written on padding: sigmoid(-20) = 2e-9 (as OracleProposals' hard masks)

Size = Tuple[int, int]


def check_resize_mode(mode: str, key: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"{key} is {mode!r}; choose one of {', '.join(RESIZE_MODES)} "
                         f"(longest_side keeps the aspect ratio, square squashes to the input size)")
    return mode


def fitted_size(size: Sequence[int], box: Sequence[int], mode: str) -> Size:
    """The size an image of ``size`` (H, W) is resized to for a stage of input size ``box``."""
    if mode == "square":
        return int(box[0]), int(box[1])
    h, w = int(size[0]), int(size[1])
    scale = min(box[0] / h, box[1] / w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_image(batch: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, *size], bilinear with antialiasing (no-op at that size)."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    return F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def batch_for_stage(images: Union[torch.Tensor, Sequence[torch.Tensor]], box: Sequence[int], mode: str,
                    multiple: int = 1, pad_value: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[Size]]:
    """[3, h, w] images (a list, or a [B, 3, H, W] batch) -> a [B, 3, H, W] batch and each
    image's size inside it.

    Each image is resized once, straight from its own size. In ``longest_side`` mode the
    batch is padded (bottom/right, with ``pad_value`` per channel, default 0) to the
    largest image rounded up to ``multiple`` (CLIP's patch: no content is dropped by the
    patch grid); a batch of one size that needs no rounding is not padded at all."""
    if isinstance(images, torch.Tensor):
        size = fitted_size(images.shape[-2:], box, mode)
        resized, sizes = [resize_image(images, size)], [size] * len(images)
    else:
        sizes = [fitted_size(im.shape[-2:], box, mode) for im in images]
        resized = [resize_image(im[None], s) for im, s in zip(images, sizes)]
    if mode == "square":
        return torch.cat(resized), sizes
    frame = [max(s[d] for s in sizes) for d in (0, 1)]
    frame = [-(-f // multiple) * multiple for f in frame]
    out = []
    for im in resized:
        dh, dw = frame[0] - im.shape[-2], frame[1] - im.shape[-1]
        if dh or dw:
            value = torch.zeros(3, device=im.device, dtype=im.dtype) if pad_value is None else pad_value
            padded = value.to(im.device, im.dtype).view(1, 3, 1, 1).repeat(len(im), 1, *frame)
            padded[..., :im.shape[-2], :im.shape[-1]] = im
            im = padded
        out.append(im)
    return torch.cat(out), sizes


def valid_fractions(sizes: Sequence[Size], frame: Sequence[int]) -> List[Tuple[float, float]]:
    """Per image, the fraction (rows, columns) of the batch frame that holds the image."""
    return [(s[0] / frame[0], s[1] / frame[1]) for s in sizes]


def crop_geometry(shape: Sequence[int], valid: Tuple[float, float], size: Sequence[int]) -> Tuple[Size, Size]:
    """For masks of ``shape`` (h, w) whose top-left ``valid`` fraction is the image: the
    cells kept (those overlapping the image) and the size they are resized to, of which
    the top-left ``size`` is the image (what :func:`crop_resize` does, in one place so
    that the banded post-processing resizes exactly alike)."""
    h, w = int(shape[0]), int(shape[1])
    extent = (valid[0] * h, valid[1] * w)
    keep = tuple(min(n, max(1, math.ceil(e - 1e-6))) for n, e in zip((h, w), extent))
    target = tuple(max(s, round(s * k / e)) for s, k, e in zip(size, keep, extent))
    return keep, target


def crop_resize(masks: torch.Tensor, valid: Tuple[float, float], size: Sequence[int]) -> torch.Tensor:
    """[..., h, w] masks over a frame whose top-left ``valid`` fraction is the image ->
    the image's part resized (bilinear) to ``size``. With ``valid`` (1, 1) this is a plain
    resize; otherwise the cells that overlap the image are kept (a partly covered last cell
    too) and resized so that the image's exact extent lands on ``size``."""
    if masks.dim() not in (3, 4):
        raise ValueError(f"masks must be [Q, h, w] or [B, Q, h, w], got {tuple(masks.shape)}")
    x = masks.float() if masks.dim() == 4 else masks[None].float()
    keep, target = crop_geometry(x.shape[-2:], valid, size)
    x = F.interpolate(x[..., :keep[0], :keep[1]], size=tuple(target), mode="bilinear", align_corners=False)
    x = x[..., :size[0], :size[1]]
    return x if masks.dim() == 4 else x[0]


def move_masks(masks: torch.Tensor, source: Sequence[Tuple[float, float]],
               target: Sequence[Tuple[float, float]]) -> torch.Tensor:
    """[B, Q, h, w] mask logits whose image i fills the ``source[i]`` fraction of the frame
    -> the same masks (same shape) with image i filling ``target[i]``, the rest
    :data:`OFF_LOGIT`: the proposals' frame mapped onto CLIP's. Unchanged where they agree."""
    if all(abs(s[0] - t[0]) < 1e-9 and abs(s[1] - t[1]) < 1e-9 for s, t in zip(source, target)):
        return masks
    h, w = masks.shape[-2:]
    out = masks.new_full(masks.shape, OFF_LOGIT)
    for i, (src, dst) in enumerate(zip(source, target)):
        size = (max(1, min(h, round(dst[0] * h))), max(1, min(w, round(dst[1] * w))))
        out[i, :, :size[0], :size[1]] = crop_resize(masks[i], src, size).to(masks.dtype)
    return out
