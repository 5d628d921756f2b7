"""Turn per-query class probabilities and mask logits into panoptic and semantic maps.

One merge for every classifier, so numbers stay comparable with Mask2Former / FC-CLIP:
it is their `panoptic_inference` and `semantic_inference`, vectorised so that the
per-query loop only does scalar bookkeeping instead of H x W work and a device sync
per query.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

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

    # The keep/drop and id decisions are scalar bookkeeping over <= Q queries: do them on host.
    won_area, final_area, own_area, scores_h, labels_h = (
        t.tolist() for t in (won_area, final_area, own_area, scores, labels))
    query_to_id = [0] * n
    stuff_ids = {}
    id_class, id_score = [], []
    for k in range(n):
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

    lut = torch.tensor(query_to_id, dtype=torch.int32, device=winner.device)
    segment_map = (lut[winner] * inside_own).cpu().numpy().astype(np.int32)

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
    return segment_map, segments


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
