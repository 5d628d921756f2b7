"""Turn per-query class probabilities and mask logits into panoptic and semantic maps.

One merge for every classifier, so numbers stay comparable with Mask2Former / FC-CLIP:
it is their `panoptic_inference` and `semantic_inference`, vectorised so that the
per-query loop only does scalar bookkeeping instead of H x W work and a device sync
per query. :func:`postprocess` computes it from the proposals at their own resolution,
a band of the image at a time (bounded memory at camera resolution), bit-identical to
:func:`reference_postprocess` (resize every proposal to the image, then
:func:`panoptic_merge` and :func:`semantic_map`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .resize import crop_geometry, crop_resize
from .structures import MaskProposals, Segment


def _check_inputs(class_probs: torch.Tensor, mask_logits: torch.Tensor) -> None:
    if class_probs.dim() != 2 or mask_logits.dim() != 3 or class_probs.shape[0] != mask_logits.shape[0]:
        raise ValueError(
            f"want class_probs [Q, K+1] and mask_logits [Q, H, W]; got "
            f"{tuple(class_probs.shape)} and {tuple(mask_logits.shape)}")


def panoptic_merge(
    class_probs: torch.Tensor,
    mask_logits: torch.Tensor,
    class_names: Sequence[str],
    class_is_thing: Sequence[bool],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> Tuple[np.ndarray, List[Segment]]:
    """Mask2Former's panoptic merge.

    class_probs [Q, K+1] (last column = void), mask_logits [Q, H, W] at output size.
    Returns an int32 segment map (0 = no segment, ids from 1) and its segments.
    As in Mask2Former, the overlap test divides the pixels a query wins in the argmax
    (its own mask or not) by its own mask area (sigmoid >= 0.5).
    """
    _check_inputs(class_probs, mask_logits)
    num_classes = class_probs.shape[1] - 1
    if len(class_names) != num_classes or len(class_is_thing) != num_classes:
        raise ValueError(f"class_probs has {num_classes} classes but got {len(class_names)} "
                         f"names and {len(class_is_thing)} thing flags")
    h, w = mask_logits.shape[-2:]
    empty = (np.zeros((h, w), np.int32), [])
    if class_probs.shape[0] == 0:
        return empty

    scores, labels = class_probs.float().max(-1)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    if not bool(keep.any()):
        return empty
    if not bool(keep.all()):  # indexing copies every mask: skip it when nothing is dropped
        scores, labels, mask_logits = scores[keep], labels[keep], mask_logits[keep]
    masks = mask_logits.float().sigmoid()
    n = masks.shape[0]

    winner = (scores[:, None, None] * masks).argmax(0)  # [H, W] index of kept query
    inside_own = masks.gather(0, winner[None])[0] >= 0.5
    won_area = torch.bincount(winner.flatten(), minlength=n)
    final_area = torch.bincount(winner[inside_own], minlength=n)
    own_area = (masks >= 0.5).flatten(1).sum(1)

    query_to_id, id_class, id_score = _assign_ids(won_area, final_area, own_area, scores, labels,
                                                  class_is_thing, overlap_threshold)
    lut = torch.tensor(query_to_id, dtype=torch.int32, device=winner.device)
    segment_map = (lut[winner] * inside_own).cpu().numpy().astype(np.int32)
    return segment_map, _segments(segment_map, id_class, id_score, class_names, class_is_thing)


def _assign_ids(won_area, final_area, own_area, scores, labels, class_is_thing, overlap_threshold):
    """The keep/drop and id decisions of the merge -> (segment id per kept query, 0 = dropped;
    class and score per id). Scalar bookkeeping over <= Q queries, so it runs on the host."""
    won_area, final_area, own_area, scores_h, labels_h = (
        t.tolist() for t in (won_area, final_area, own_area, scores, labels))
    query_to_id = [0] * len(scores_h)
    stuff_ids = {}
    id_class, id_score = [], []
    for k in range(len(scores_h)):
        if final_area[k] == 0 or won_area[k] / own_area[k] < overlap_threshold:
            continue
        label = labels_h[k]
        if not class_is_thing[label] and label in stuff_ids:
            seg_id = stuff_ids[label]
            id_score[seg_id - 1] = max(id_score[seg_id - 1], scores_h[k])
        else:
            id_class.append(label)
            id_score.append(scores_h[k])
            seg_id = len(id_class)
            if not class_is_thing[label]:
                stuff_ids[label] = seg_id
        query_to_id[k] = seg_id
    return query_to_id, id_class, id_score


def _segments(segment_map: np.ndarray, id_class, id_score, class_names, class_is_thing) -> List[Segment]:
    num_ids = len(id_class)
    areas = np.bincount(segment_map.ravel(), minlength=num_ids + 1)
    boxes = ndimage.find_objects(segment_map, max_label=num_ids)
    segments = []
    for seg_id, (label, score, box) in enumerate(zip(id_class, id_score, boxes), start=1):
        ys, xs = box
        segments.append(Segment(
            id=seg_id, class_index=int(label), class_name=class_names[label], score=float(score),
            is_thing=bool(class_is_thing[label]), area=int(areas[seg_id]),
            bbox=(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)))
    return segments


def semantic_scores(class_probs: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former's semantic inference: per-class score [K, H, W], void column dropped."""
    _check_inputs(class_probs, mask_logits)
    return torch.einsum("qk,qhw->khw", class_probs[:, :-1].float(), mask_logits.float().sigmoid())


def semantic_map(class_probs: torch.Tensor, mask_logits: torch.Tensor,
                 max_elements: int = 1 << 25) -> np.ndarray:
    """int32 [H, W] class index per pixel, for mIoU. Computed a band of rows at a time so
    that K x rows x W stays under ``max_elements`` (847 classes at 1024x2048 would
    otherwise need 7 GB of scores)."""
    _check_inputs(class_probs, mask_logits)
    k = max(class_probs.shape[1] - 1, 1)
    h, w = mask_logits.shape[-2:]
    rows = max(1, max_elements // (k * max(w, 1)))
    bands = [semantic_scores(class_probs, band).argmax(0) for band in mask_logits.split(rows, dim=1)]
    return torch.cat(bands).cpu().numpy().astype(np.int32) if bands else np.zeros((h, w), np.int32)


def reference_postprocess(class_probs: torch.Tensor, mask_logits: torch.Tensor, valid: Tuple[float, float],
                          size: Sequence[int], class_names: Sequence[str], class_is_thing: Sequence[bool],
                          object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8):
    """The post-processing as it was before issue 30: every proposal resized to the image
    (:func:`crop_resize`), then :func:`panoptic_merge` and :func:`semantic_map`. Kept as the
    oracle that :func:`postprocess` is tested against, and as its fallback for the inputs
    the banded path does not take; it holds Q x H x W floats several times over (3.5 GB
    for 100 queries at 1920x1080)."""
    masks = crop_resize(mask_logits, valid, size)
    segment_map, segments = panoptic_merge(class_probs, masks, class_names, class_is_thing,
                                           object_mask_threshold, overlap_threshold)
    return segment_map, segments, semantic_map(class_probs, masks)


MAX_BYTES = 64 << 20     # postprocess's working memory for bands (the horizontal pass, one band)
_SLACK = 1e-5            # relative rounding slack of a bilinear sample (a few ulp) and of sigmoid
_INSIDE_MARGIN = 1e-4    # logits below -this never reach sigmoid >= 0.5 (that needs about > -2.4e-7)


def _resize_exact(x: torch.Tensor, size: Sequence[int], scales: Tuple[Optional[float], Optional[float]],
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[N, h, w] -> [N, >= size] (the top-left ``size`` is the result; with ``out``, a view
    of its start) with torch's bilinear kernel, one axis at a time; ``scales``
    (output / input, None = from the sizes) pins the source grid when ``size`` is a prefix
    of the full output. Torch's CPU kernel computes a 2-D sample as the vertical mix of two
    horizontal mixes, and an axis whose size is unchanged contributes the exact value
    (weights 1 and 0), so a horizontal pass then a vertical pass reproduce the 2-D resize
    bit for bit. Zero padding keeps H + W above 128, where CPU torch would switch to its
    separable kernel (other weights); the padding never reaches the kept samples."""
    n, h, w = x.shape
    shape = _padded_size(h, size)
    inp = x[:, None]
    if tuple(shape) != tuple(size):
        inp = F.pad(inp, (0, shape[1] - size[1], 0, shape[0] - size[0]))
    if out is None:
        return torch.ops.aten.upsample_bilinear2d(inp, shape, False, *scales)[:, 0]
    view = out[:n * shape[0] * shape[1]].view(n, 1, *shape)
    return torch.ops.aten.upsample_bilinear2d.out(inp, shape, False, *scales, out=view)[:, 0]


def _padded_size(rows: int, size: Sequence[int]) -> List[int]:
    """The output size :func:`_resize_exact` asks torch for: ``size`` with the unchanged axis
    (the rows if ``rows`` is ``size[0]``, else the columns) padded to H + W >= 129."""
    pad = max(0, 129 - size[0] - size[1])
    return [size[0] + pad, size[1]] if rows == size[0] else [size[0], size[1] + pad]


def _vector_length(numel: int) -> int:
    """``numel`` rounded up so that every thread's share of an elementwise op is a whole
    number of SIMD steps: torch's CPU sigmoid takes a scalar path on the last few elements
    of a share, and that path can differ from the vector one by an ulp."""
    step = 64 * max(1, torch.get_num_threads())
    return -(-numel // step) * step


def _band_candidates(x: torch.Tensor, scores: torch.Tensor, chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Which kept queries a column of low-res cells needs, from bounds on each cell's
    bilinear samples (they lie between its 2x2 taps, up to rounding): a query can win a
    pixel only where its highest possible score * sigmoid reaches the best lowest one of
    any query there, and can have own-mask pixels only where its taps reach 0. x [n, h, w]
    logits -> (may win, may be inside), each [n, w] bool (any over the rows)."""
    def taps(part):
        """The 2x2 taps of every cell (replicated at the far edges) and a rounding slack."""
        padded = F.pad(part.float()[:, None], (0, 1, 0, 1), mode="replicate")[:, 0]
        slack = _SLACK * padded.abs().amax((1, 2), keepdim=True)
        return (padded[:, :-1, :-1], padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, 1:, 1:]), slack

    n = x.shape[0]
    best_low = None
    for i in range(0, n, chunk):
        (a, b, c, d), slack = taps(x[i:i + chunk])
        lo = torch.minimum(torch.minimum(a, b), torch.minimum(c, d)).sub_(slack)
        low = (scores[i:i + chunk, None, None] * lo.sigmoid_()).amax(0).mul_(1 - _SLACK)
        best_low = low if best_low is None else torch.maximum(best_low, low)
    may_win, may_be_inside = [], []
    for i in range(0, n, chunk):
        (a, b, c, d), slack = taps(x[i:i + chunk])
        hi = torch.maximum(torch.maximum(a, b), torch.maximum(c, d)).add_(slack)
        may_be_inside.append((hi >= -_INSIDE_MARGIN).any(1))
        high = (scores[i:i + chunk, None, None] * hi.sigmoid_()).mul_(1 + _SLACK)
        # Where every query's sigmoid underflows to 0 the first query wins the tie: beyond
        # it, only queries that can score above 0 can win.
        first = (torch.arange(i, i + len(high), device=high.device) == 0)[:, None, None]
        may_win.append(((high >= best_low) & ((high > 0) | first)).any(1))
    return torch.cat(may_win), torch.cat(may_be_inside)


def postprocess(class_probs: torch.Tensor, mask_logits: torch.Tensor, valid: Tuple[float, float],
                size: Sequence[int], class_names: Sequence[str], class_is_thing: Sequence[bool],
                object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8,
                max_bytes: int = MAX_BYTES, band: Optional[int] = None) -> Tuple[np.ndarray, List[Segment], np.ndarray]:
    """Panoptic merge and semantic map of proposals at their own resolution: the result of
    :func:`reference_postprocess` (segment map, segments, semantic map) bit for bit, in
    bounded memory.

    mask_logits [Q, h, w] cover a frame whose top-left ``valid`` fraction is the image;
    ``size`` is the image's (H, W). The image is processed in bands of ``band`` columns
    (full height, so that each sample is computed exactly as the full resize computes it,
    see :func:`_resize_exact`; by default as wide as a quarter of ``max_bytes`` allows, at
    least 64: fewer, larger ops); the horizontal pass is kept for a run of bands at a time
    within ``max_bytes``. Per band, every query's samples feed the semantic map (a sum over
    all queries), and only the queries that can win or own a pixel there (bounded from
    the low-res taps) take part in the merge."""
    _check_inputs(class_probs, mask_logits)
    num_classes = class_probs.shape[1] - 1
    if len(class_names) != num_classes or len(class_is_thing) != num_classes:
        raise ValueError(f"class_probs has {num_classes} classes but got {len(class_names)} "
                         f"names and {len(class_is_thing)} thing flags")
    q = mask_logits.shape[0]
    (k0, k1), (t0, t1) = crop_geometry(mask_logits.shape[-2:], valid, size)
    s0, s1 = int(size[0]), int(size[1])
    full_bytes = 4 * q * t0 * t1
    # The reference is exact by definition and small enough here, or torch would resize
    # through other kernels there (outputs of H + W <= 128, 3 channels, 1-pixel inputs).
    if (3 * full_bytes <= max_bytes or q <= 3 or num_classes == 0 or t0 + t1 <= 128 or min(k0, k1) == 1
            or not bool(torch.isfinite(mask_logits).all())):
        return reference_postprocess(class_probs, mask_logits, valid, size, class_names, class_is_thing,
                                     object_mask_threshold, overlap_threshold)
    device = mask_logits.device
    x = mask_logits[:, :k0, :k1]
    probs = class_probs.float()
    class_part = probs[:, :-1]
    scores, labels = probs.max(-1)
    kept = ((labels != num_classes) & (scores > object_mask_threshold)).nonzero()[:, 0]
    n = len(kept)
    scores_k, labels_k = scores[kept], labels[kept]
    kept_cpu = kept.cpu()
    chunk = max(1, (max_bytes // 16) // (4 * k0 * k1))
    if n:
        may_win, may_be_inside = (t.cpu() for t in _band_candidates(x[kept], scores_k, chunk))
        winner = torch.zeros((s0, s1), dtype=torch.int32, device=device)
        inside = torch.zeros((s0, s1), dtype=torch.bool, device=device)
        won_area = torch.zeros(n, dtype=torch.int64, device=device)
        final_area = torch.zeros_like(won_area)
        own_area = torch.zeros_like(won_area)
    semantic = torch.empty((s0, s1), dtype=torch.int32, device=device)

    scale_w = float(np.float32(k1) / np.float32(t1))          # torch's float32 source step
    band = max(1, int(band)) if band else max(64, (max_bytes // 4) // (4 * q * t0) // 64 * 64)
    runs = -(-s1 // max(band, ((3 * max_bytes // 4) // (4 * q * k0)) // band * band))
    run = -(-(-(-s1 // runs)) // band) * band                     # columns per horizontal pass
    chunk_w = max(1, (max_bytes // 8) // (4 * k0 * (s1 + 129)))
    buffer = torch.empty(0, device=device)
    for start in range(0, s1, run):
        stop = min(s1, start + run)
        last_tap = min(k1, int(np.floor(max(scale_w * (stop - 0.5) - 0.5, 0))) + 3)
        horizontal = torch.empty((q, k0, stop - start), device=device)
        # torch copies an input of the output's size as it is, whatever the scale: ask for one
        # column more then (unless nothing is resized at all, where the copy is the resize).
        columns = stop + 1 if last_tap == stop and k1 != t1 else stop
        for i in range(0, q, chunk_w):
            part = _resize_exact(x[i:i + chunk_w, :, :last_tap].float(), (k0, columns), (None, 1.0 / scale_w))
            horizontal[i:i + chunk_w] = part[:, :k0, start:stop]
        for c in range(start, stop, band):
            width = min(band, stop - c)
            padded = _padded_size(k0, (t0, width))
            need = _vector_length(q * padded[0] * padded[1])
            if buffer.numel() < need:
                buffer = torch.empty(need, device=device)
            sampled = _resize_exact(horizontal[..., c - start:c - start + width], (t0, width), (None, None),
                                    out=buffer)
            buffer[:_vector_length(sampled.numel())].sigmoid_()
            probs_map = sampled[:, :s0, :width]
            semantic[:, c:c + width] = _argmax0(torch.einsum("qk,qhw->khw", class_part, probs_map))
            if not n:
                continue
            cells = _cell_range(c, width, scale_w, k1)
            contenders = may_win[:, cells].any(1).nonzero()[:, 0]
            local = _rows(probs_map, kept_cpu[contenders])
            contenders = contenders.to(device)
            if len(contenders) == 1:
                pick = torch.zeros((s0, width), dtype=torch.int64, device=device)
            else:
                pick = _argmax0(scores_k[contenders][:, None, None] * local)
            won = contenders[pick]
            inside_band = local.gather(0, pick[None])[0] >= 0.5
            winner[:, c:c + width] = won
            inside[:, c:c + width] = inside_band
            won_area += torch.bincount(won.flatten(), minlength=n)
            final_area += torch.bincount(won[inside_band], minlength=n)
            # A contender that cannot be inside here counts 0 pixels, so its count is harmless.
            own_area[contenders] += (local >= 0.5).flatten(1).sum(1)
            owners = (may_be_inside[:, cells].any(1) & ~may_win[:, cells].any(1)).nonzero()[:, 0]
            if len(owners):
                own_area[owners.to(device)] += (_rows(probs_map, kept_cpu[owners]) >= 0.5).flatten(1).sum(1)
        del horizontal
    semantic_np = semantic.cpu().numpy()
    if not n:
        return np.zeros((s0, s1), np.int32), [], semantic_np
    query_to_id, id_class, id_score = _assign_ids(won_area, final_area, own_area, scores_k, labels_k,
                                                  class_is_thing, overlap_threshold)
    lut = np.asarray(query_to_id, dtype=np.int32)
    segment_map = lut[winner.cpu().numpy()]
    segment_map[~inside.cpu().numpy()] = 0
    return segment_map, _segments(segment_map, id_class, id_score, class_names, class_is_thing), semantic_np


def _rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for sorted CPU indices; a view (no copy) when they are consecutive,
    as when every query contends everywhere."""
    if len(index) and int(index[-1]) - int(index[0]) + 1 == len(index):
        return values[int(index[0]):int(index[-1]) + 1]
    return values[index.to(values.device)]


def _argmax0(values: torch.Tensor) -> torch.Tensor:
    """``values.argmax(0)`` (the first of equal maxima): torch reduces a leading dimension
    as a strided loop, several times slower than this copy plus a reduction over the last."""
    return values.movedim(0, -1).contiguous().argmax(-1)


def _cell_range(start: int, width: int, scale: float, cells: int) -> slice:
    """The low-res cells (left taps) that output columns [start, start + width) sample, one
    more on each side for the float rounding of the source position."""
    first = int(np.floor(max(scale * (start + 0.5) - 0.5, 0)))
    last = int(np.floor(max(scale * (start + width - 0.5) - 0.5, 0)))
    return slice(max(0, first - 1), min(cells, last + 2))


def split_components(proposals: MaskProposals, min_fraction: float, min_pixels: int = 4) -> MaskProposals:
    """Each proposal whose mask (logit > 0) falls into several connected parts, each at
    least ``min_fraction`` of its largest part (and ``min_pixels``), becomes one proposal
    per part, all at its objectness. A small mask generator sometimes gives one query to
    two things of one look that do not touch; a per-mask classifier then names their
    union, and the merge gives both to one segment. Every pixel of the original mask
    logits goes to the part nearest it (smaller parts and soft borders included), so the
    parts tile the original mask exactly. Images of a batch are padded to the same number
    of queries with empty masks at objectness 0."""
    if min_fraction <= 0:
        return proposals
    masks, objectness = proposals.masks, proposals.objectness
    inside = (masks > 0).cpu().numpy()
    per_image = []
    for b in range(masks.shape[0]):
        parts = []                                          # (query, region [h, w] bool)
        for q in range(masks.shape[1]):
            labels, n = ndimage.label(inside[b, q])
            if n < 2:
                continue
            areas = np.bincount(labels.ravel())[1:]
            big = np.flatnonzero(areas >= max(min_pixels, min_fraction * areas.max())) + 1
            if len(big) < 2:
                continue
            kept = np.where(np.isin(labels, big), labels, 0)
            _, (iy, ix) = ndimage.distance_transform_edt(kept == 0, return_indices=True)
            nearest = kept[iy, ix]
            parts += [(q, nearest == part) for part in big]
        per_image.append(parts)
    if not any(per_image):
        return proposals
    q_out = max(masks.shape[1] + len(parts) - len({q for q, _ in parts}) for parts in per_image)
    out_masks = masks.new_full((masks.shape[0], q_out) + tuple(masks.shape[2:]), -20.0)
    out_obj = objectness.new_zeros((objectness.shape[0], q_out))
    for b, parts in enumerate(per_image):
        split = {q for q, _ in parts}
        whole = [q for q in range(masks.shape[1]) if q not in split]
        out_masks[b, :len(whole)] = masks[b, whole]
        out_obj[b, :len(whole)] = objectness[b, whole]
        for j, (q, region) in enumerate(parts, start=len(whole)):
            region = torch.from_numpy(region).to(masks.device)
            out_masks[b, j] = torch.where(region, masks[b, q], out_masks.new_tensor(-20.0))
            out_obj[b, j] = objectness[b, q]
    return MaskProposals(out_masks, out_obj)
