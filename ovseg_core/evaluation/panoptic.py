"""Panoptic Quality with panopticapi's exact rules (``pq_compute``), vectorised.

Per image, panopticapi counts the pixels of every (ground-truth id, predicted id) pair
with ``np.unique`` on a uint64 image and then loops over the pairs in Python. Here ids
become segment indices with one ``searchsorted`` per map and the pair counts come from
one ``bincount``; matching, false negatives and false positives are array operations
on the small [gt segments x predicted segments] table. The rules are panopticapi's:

- a pair matches when the categories agree, the GT segment is not crowd and
  IoU > 0.5, where the union leaves out predicted pixels lying on GT void (id 0);
- the GT area is the JSON's ``area`` where given (panopticapi reads it from there); an
  area that disagrees with the PNG's pixel count is refused (it would give IoU > 1);
- unmatched non-crowd GT segments are false negatives;
- an unmatched prediction is not a false positive when more than half of it lies on
  void or on the crowd region of its own category (the last crowd segment of that
  category, as panopticapi's dict keeps);
- PQ, SQ, RQ are averaged over the categories with TP + FP + FN > 0.

Run as ``python -m ovseg_core.evaluation.panoptic --gt-json J --gt-dir D --pred-json J
--pred-dir D [--json-out F] [--workers N]``. Bad input (a file that is not COCO-panoptic,
a missing or corrupt PNG, sizes or areas that disagree) ends with one line naming the
file and exit status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import threading
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..panoptic_io import InputError, dump_json, load_panoptic_json, read_image


IOU, TP, FP, FN = range(4)


class PQStat:
    """Per-category sums [C, 4] = (IoU of matches, TP, FP, FN). Adding two PQStats is
    merging two sets of images, so shards combine exactly."""

    def __init__(self, num_categories: int, sums: Optional[np.ndarray] = None):
        self.sums = np.zeros((num_categories, 4), np.float64) if sums is None else np.asarray(sums, np.float64)
        if self.sums.shape != (num_categories, 4):
            raise ValueError(f"PQStat sums must be [{num_categories}, 4], got {self.sums.shape}")

    def __iadd__(self, other):
        self.sums += other.sums if isinstance(other, PQStat) else other
        return self

    def __add__(self, other):
        return PQStat(len(self.sums), self.sums.copy()).__iadd__(other)

    def summary(self, names: Sequence[str], is_thing: Sequence[bool]) -> dict:
        """``{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": {name: {...}}}`` on a
        0-1 scale. A group with no category present has n = 0 and zeros (panopticapi
        would divide by zero)."""
        if len(names) != len(self.sums) or len(is_thing) != len(self.sums):
            raise ValueError(f"{len(self.sums)} categories but {len(names)} names and {len(is_thing)} thing flags")
        iou, tp, fp, fn = self.sums.T
        denom = tp + 0.5 * fp + 0.5 * fn
        present = tp + fp + fn > 0
        safe = np.where(present, denom, 1.0)
        pq = np.where(present, iou / safe, 0.0)
        sq = np.where(tp > 0, iou / np.maximum(tp, 1), 0.0)
        rq = np.where(present, tp / safe, 0.0)
        thing = np.asarray(is_thing, bool)
        out = {}
        for group, select in (("All", np.ones_like(thing)), ("Things", thing), ("Stuff", ~thing)):
            use = select & present
            n = int(use.sum())
            out[group] = {k: float(v[use].sum() / n) if n else 0.0 for k, v in (("pq", pq), ("sq", sq), ("rq", rq))}
            out[group]["n"] = n
        out["per_class"] = {
            name: {"pq": float(pq[i]), "sq": float(sq[i]), "rq": float(rq[i]), "tp": int(tp[i]),
                   "fp": int(fp[i]), "fn": int(fn[i]), "isthing": bool(thing[i]), "present": bool(present[i])}
            for i, name in enumerate(names)}
        return out


_LUT_SIZE = 256 ** 3                    # every id a COCO-panoptic PNG can hold
_UNSET = np.iinfo(np.uint16).max
_lut: Optional[np.ndarray] = None
_lut_lock = threading.Lock()


def _index_map(id_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Segment index per pixel: i for ids[i], len(ids) for void (0), len(ids) + 1 for an
    id not listed. A lookup table over all 2^24 PNG ids (32 MB, made once per process,
    only the image's entries touched) costs one gather per pixel, where np.unique sorts."""
    global _lut
    n = len(ids)
    id_map = np.asarray(id_map)
    if (n + 2 >= _UNSET or id_map.size == 0 or id_map.min() < 0 or id_map.max() >= _LUT_SIZE
            or (n and (ids.min() < 0 or ids.max() >= _LUT_SIZE))):
        keys = np.concatenate([ids, [0]]).astype(np.int64)
        order = np.argsort(keys)
        keys, codes = keys[order], np.arange(n + 1)[order]
        flat = id_map.astype(np.int64)
        pos = np.searchsorted(keys, flat).clip(max=n)
        return np.where(keys[pos] == flat, codes[pos], n + 1)
    with _lut_lock:
        if _lut is None:
            _lut = np.full(_LUT_SIZE, _UNSET, np.uint16)
        _lut[ids] = np.arange(n)
        _lut[0] = n
        codes = np.take(_lut, id_map)
        _lut[ids] = _UNSET
        _lut[0] = _UNSET
    codes[codes == _UNSET] = n + 1
    return codes


def resize_labels(labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Label or id maps to another size, nearest by pixel centre (no new values), e.g. a
    prediction made at the test size back to the GT size."""
    h, w = labels.shape
    if (h, w) == tuple(size):
        return labels
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def pq_prediction(gt_map: np.ndarray, gt_segments: Sequence[dict], pred_map: np.ndarray,
                  pred_segments: Sequence[dict], num_categories: int) -> "PQStat":
    """:func:`pq_image` for a prediction of any size: its map is resized to the GT's and
    segments that vanish in the resize are dropped (panopticapi wants exactly the ids
    in the map)."""
    pred_map = resize_labels(np.asarray(pred_map), np.asarray(gt_map).shape)
    present = set(np.unique(pred_map).tolist())
    return pq_image(gt_map, gt_segments, pred_map, [s for s in pred_segments if s["id"] in present],
                    num_categories)


def read_id_png(path: str, what: str = "panoptic PNG") -> np.ndarray:
    """A COCO-panoptic PNG as uint32 ids: PIL's RGBA bytes read as one little-endian
    uint32 and the alpha byte masked off (id = R + 256 G + 256^2 B), with no per-channel
    arithmetic. A missing, corrupt or non-RGB file raises :class:`InputError` naming it."""
    rgba = read_image(path, what, modes=("RGB", "RGBA"), convert="RGBA")
    return rgba.view("<u4")[..., 0] & np.uint32(0xFFFFFF)


def _segment_arrays(segments: Sequence[dict], what: str, num_categories: int):
    ids = np.array([int(s["id"]) for s in segments], np.int64)
    cats = np.array([int(s["category_id"]) for s in segments], np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{what} segments repeat an id: {sorted(ids.tolist())}")
    if (ids <= 0).any():
        raise ValueError(f"{what} segment ids must be > 0 (0 is void); got {ids[ids <= 0].tolist()}")
    bad = (cats < 0) | (cats >= num_categories)
    if bad.any():
        raise ValueError(f"{what} segments have category indices {sorted(set(cats[bad].tolist()))} "
                         f"outside [0, {num_categories})")
    return ids, cats


def pq_image(gt_map: np.ndarray, gt_segments: Sequence[dict], pred_map: np.ndarray,
             pred_segments: Sequence[dict], num_categories: int) -> PQStat:
    """PQ sums of one image. Maps are int [H, W] segment ids (0 = void); segments are
    dicts with ``id`` and ``category_id`` (a category *index* in [0, num_categories)),
    GT ones also ``iscrowd`` and optionally ``area``. Predictions must list exactly the
    ids in their map, as panopticapi demands."""
    gt_map, pred_map = np.asarray(gt_map), np.asarray(pred_map)
    if gt_map.shape != pred_map.shape:
        raise ValueError(f"GT map {gt_map.shape} and prediction map {pred_map.shape} differ in size; "
                         f"resize the prediction (nearest) to the GT size")
    gt_ids, gt_cat = _segment_arrays(gt_segments, "GT", num_categories)
    pred_ids, pred_cat = _segment_arrays(pred_segments, "predicted", num_categories)
    n_gt, n_pred = len(gt_ids), len(pred_ids)
    crowd = np.array([bool(s.get("iscrowd", 0)) for s in gt_segments], bool)

    gt_code = _index_map(gt_map, gt_ids)              # n_gt = void, n_gt + 1 = unlisted
    pred_code = _index_map(pred_map, pred_ids)        # n_pred = void
    if (pred_code == n_pred + 1).any():
        unknown = np.unique(pred_map[pred_code == n_pred + 1])
        raise ValueError(f"predicted ids {unknown[:10].tolist()} are in the PNG but not in segments_info")
    counts = np.bincount(gt_code.astype(np.int64).ravel() * (n_pred + 1) + pred_code.ravel(),
                         minlength=(n_gt + 2) * (n_pred + 1)).reshape(n_gt + 2, n_pred + 1)
    pred_area = counts[:, :n_pred].sum(0)
    if (pred_area == 0).any():
        raise ValueError(f"predicted ids {pred_ids[pred_area == 0].tolist()} are in segments_info "
                         f"but not in the PNG")
    gt_area = np.array([s["area"] if "area" in s else -1 for s in gt_segments], np.int64)
    counted = counts[:n_gt].sum(1)
    wrong = (gt_area >= 0) & (gt_area != counted)
    if wrong.any():
        g = int(np.argmax(wrong))
        raise ValueError(f"GT segment {gt_ids[g]} has area {gt_area[g]} in segments_info but {counted[g]} pixels "
                         f"in the map; set area to its pixel count or leave it out")
    gt_area = np.where(gt_area >= 0, gt_area, counted)
    inter = counts[:n_gt, :n_pred]
    on_void = counts[n_gt, :n_pred]

    stat = PQStat(num_categories)
    sums = stat.sums
    candidate = (inter > 0) & (gt_cat[:, None] == pred_cat[None, :]) & ~crowd[:, None]
    gi, pi = np.nonzero(candidate)
    union = pred_area[pi] + gt_area[gi] - inter[gi, pi] - on_void[pi]
    iou = inter[gi, pi] / union
    match = iou > 0.5
    gi, pi, iou = gi[match], pi[match], iou[match]
    np.add.at(sums[:, IOU], gt_cat[gi], iou)
    np.add.at(sums[:, TP], gt_cat[gi], 1)
    gt_matched = np.zeros(n_gt, bool)
    gt_matched[gi] = True
    pred_matched = np.zeros(n_pred, bool)
    pred_matched[pi] = True

    np.add.at(sums[:, FN], gt_cat[~gt_matched & ~crowd], 1)

    crowd_of = np.full(num_categories, -1, np.int64)
    for g in np.nonzero(crowd)[0]:        # the last crowd segment of a category wins
        crowd_of[gt_cat[g]] = g
    c = crowd_of[pred_cat]
    ignored = on_void + np.where(c >= 0, inter[c.clip(min=0), np.arange(n_pred)] if n_gt else 0, 0)
    fp = ~pred_matched & ~(ignored / np.maximum(pred_area, 1) > 0.5)
    np.add.at(sums[:, FP], pred_cat[fp], 1)
    return stat


def _image_task(args):
    """PQ sums of one image; every problem becomes one :class:`InputError` line naming
    the file at fault and the image id."""
    gt_ann, pred_ann, gt_dir, pred_dir, cat_index, gt_json, pred_json = args
    gt_png, pred_png = os.path.join(gt_dir, gt_ann["file_name"]), os.path.join(pred_dir, pred_ann["file_name"])
    image = f"image {gt_ann['image_id']}"
    gt_map = read_id_png(gt_png, f"the GT PNG of {image}")
    pred_map = read_id_png(pred_png, f"the predicted PNG of {image}")

    def convert(segments, json_path, what):
        out = []
        for s in segments:
            if s["category_id"] not in cat_index:
                raise InputError(f"{json_path}: {image}: {what} segment {s['id']} has category_id "
                                 f"{s['category_id']}, which the GT categories do not list; use a listed id")
            out.append({**s, "category_id": cat_index[s["category_id"]]})
        return out

    gt_segments = convert(gt_ann["segments_info"], gt_json, "GT")
    pred_segments = convert(pred_ann["segments_info"], pred_json, "predicted")
    if gt_map.shape != pred_map.shape:
        raise InputError(f"{pred_png}: {image}: the prediction is {pred_map.shape[1]}x{pred_map.shape[0]} "
                         f"but its GT {gt_png} is {gt_map.shape[1]}x{gt_map.shape[0]}; write predictions "
                         f"at the GT size")
    try:
        return pq_image(gt_map, gt_segments, pred_map, pred_segments, len(cat_index)).sums
    except ValueError as err:
        blame = gt_png if str(err).startswith("GT") else pred_png
        raise InputError(f"{blame}: {image}: {err}") from None


def pq_compute(gt_json: str, gt_dir: str, pred_json: str, pred_dir: str,
               workers: Optional[int] = None, progress: bool = True) -> dict:
    """panopticapi's ``pq_compute`` on COCO-panoptic files, over ``workers`` processes
    (default: all cores). Images are summed in the GT JSON's order, so the numbers do
    not depend on the number of workers."""
    gt = load_panoptic_json(gt_json, "GT")
    pred = load_panoptic_json(pred_json, "prediction", categories=False)
    categories = gt["categories"]
    cat_index = {c["id"]: i for i, c in enumerate(categories)}
    pred_by_image = {a["image_id"]: a for a in pred["annotations"]}
    tasks = []
    for gt_ann in gt["annotations"]:
        if gt_ann["image_id"] not in pred_by_image:
            raise InputError(f"{pred_json}: no prediction for the image with id {gt_ann['image_id']} "
                             f"({gt_ann['file_name']}); the prediction JSON must cover every GT image")
        tasks.append((gt_ann, pred_by_image[gt_ann["image_id"]], gt_dir, pred_dir, cat_index, gt_json, pred_json))
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    stat = PQStat(len(categories))
    bar = tqdm(total=len(tasks), desc="PQ", unit="img", disable=not progress)
    if workers == 1:
        results = map(_image_task, tasks)
        pool = None
    else:
        pool = mp.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers)
        results = pool.imap(_image_task, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))
    try:
        for sums in results:
            stat += sums
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return stat.summary([c["name"] for c in categories], [bool(c.get("isthing", 0)) for c in categories])


def format_table(results: dict) -> str:
    """panopticapi's printout, scaled to percent."""
    lines = [f"{'':10}| {'PQ':>6} {'SQ':>6} {'RQ':>6} {'N':>5}", "-" * 38]
    for group in ("All", "Things", "Stuff"):
        r = results[group]
        lines.append(f"{group:10}| {100 * r['pq']:6.1f} {100 * r['sq']:6.1f} {100 * r['rq']:6.1f} {r['n']:5d}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ovseg_core.evaluation.panoptic",
                                description="Panoptic Quality of COCO-panoptic predictions (panopticapi's rules)")
    p.add_argument("--gt-json", required=True)
    p.add_argument("--gt-dir", required=True, help="folder of the GT PNGs")
    p.add_argument("--pred-json", required=True)
    p.add_argument("--pred-dir", required=True, help="folder of the predicted PNGs")
    p.add_argument("--json-out", help="write the numbers (0-1 scale, with per_class) here")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = p.parse_args(argv)
    for folder in (args.gt_dir, args.pred_dir):
        if not Path(folder).is_dir():
            p.error(f"{folder} is not a folder; --gt-dir/--pred-dir hold the panoptic PNGs")
    if args.json_out and Path(args.json_out).is_dir():
        p.error(f"--json-out {args.json_out} is a folder; give a file name")
    try:
        results = pq_compute(args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, args.workers,
                             progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.json_out:
        try:
            dump_json(results, args.json_out)
        except OSError as err:
            print(f"error: {args.json_out}: cannot write the results ({err.strerror or err}); "
                  f"choose another --json-out", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
