"""PQ evaluation speed: ovseg_core.evaluation.panoptic (vectorised, a process per core)
against the panopticapi-equivalent loop written plainly below (one core, np.unique on
uint64 pairs and Python dict loops, as panopticapi's ``pq_compute_single_core``).

Both read the same synthetic COCO-panoptic PNG + JSON files (Mapillary-sized images,
Voronoi segments, crowd regions, void, predictions with jittered boundaries and wrong
classes) and their numbers are checked equal before timing. Prints images/s and the
ratio (target >= 1.5x on 2 cores).

    .venv/bin/python bench/evaluation.py [--images 48] [--height 768] [--width 1024] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ovseg_core.evaluation.panoptic import PQStat, pq_compute  # noqa: E402
from ovseg_core.panoptic_io import id_to_rgb  # noqa: E402

OFFSET = 256 * 256 * 256
VOID = 0


# --------------------------------------------------------------- the reference loop
def rgb2id(color):
    color = color.astype(np.int32)
    return color[:, :, 0] + 256 * color[:, :, 1] + 256 * 256 * color[:, :, 2]


def reference_pq_image(pan_gt, gt_segments, pan_pred, pred_segments, categories):
    """panopticapi's per-image body: returns {category: [iou, tp, fp, fn]}."""
    stat = defaultdict(lambda: [0.0, 0, 0, 0])
    gt_segms = {el["id"]: dict(el) for el in gt_segments}
    pred_segms = {el["id"]: dict(el) for el in pred_segments}
    pred_labels_set = set(el["id"] for el in pred_segments)
    labels, labels_cnt = np.unique(pan_pred, return_counts=True)
    for label, label_cnt in zip(labels, labels_cnt):
        if label not in pred_segms:
            if label == VOID:
                continue
            raise KeyError(f"segment {label} in PNG and not in JSON")
        pred_segms[label]["area"] = label_cnt
        pred_labels_set.remove(label)
        if pred_segms[label]["category_id"] not in categories:
            raise KeyError("unknown category")
    if pred_labels_set:
        raise KeyError("segments in JSON and not in PNG")
    for el in gt_segms.values():
        if "area" not in el:
            el["area"] = int((pan_gt == el["id"]).sum())

    pan_gt_pred = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    gt_pred_map = {}
    labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
    for label, intersection in zip(labels, labels_cnt):
        gt_pred_map[(label // OFFSET, label % OFFSET)] = intersection

    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in gt_pred_map.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        if gt_segms[gt_label]["iscrowd"] == 1:
            continue
        if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
            continue
        union = (pred_segms[pred_label]["area"] + gt_segms[gt_label]["area"] - intersection
                 - gt_pred_map.get((VOID, pred_label), 0))
        iou = intersection / union
        if iou > 0.5:
            s = stat[gt_segms[gt_label]["category_id"]]
            s[1] += 1
            s[0] += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)

    crowd_labels_dict = {}
    for gt_label, gt_info in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt_info["iscrowd"] == 1:
            crowd_labels_dict[gt_info["category_id"]] = gt_label
            continue
        stat[gt_info["category_id"]][3] += 1

    for pred_label, pred_info in pred_segms.items():
        if pred_label in pred_matched:
            continue
        intersection = gt_pred_map.get((VOID, pred_label), 0)
        if pred_info["category_id"] in crowd_labels_dict:
            intersection += gt_pred_map.get((crowd_labels_dict[pred_info["category_id"]], pred_label), 0)
        if intersection / pred_info["area"] > 0.5:
            continue
        stat[pred_info["category_id"]][2] += 1
    return stat


def reference_pq_compute(gt_json, gt_dir, pred_json, pred_dir):
    """panopticapi's single-core loop over files; returns PQStat sums [C, 4] in GT
    category order."""
    gt, pred = json.load(open(gt_json)), json.load(open(pred_json))
    categories = {c["id"]: c for c in gt["categories"]}
    pred_by_image = {a["image_id"]: a for a in pred["annotations"]}
    total = defaultdict(lambda: [0.0, 0, 0, 0])
    for gt_ann in gt["annotations"]:
        pred_ann = pred_by_image[gt_ann["image_id"]]
        pan_gt = rgb2id(np.array(Image.open(os.path.join(gt_dir, gt_ann["file_name"])), dtype=np.uint32))
        pan_pred = rgb2id(np.array(Image.open(os.path.join(pred_dir, pred_ann["file_name"])), dtype=np.uint32))
        for cat, s in reference_pq_image(pan_gt, gt_ann["segments_info"], pan_pred,
                                         pred_ann["segments_info"], categories).items():
            for k in range(4):
                total[cat][k] += s[k]
    return np.array([total[c["id"]] for c in gt["categories"]], np.float64)


# --------------------------------------------------------------- synthetic data
def _voronoi(seeds, height, width, cell=8):
    """Nearest-seed label map, computed on a coarse grid and upsampled (cheap, blocky)."""
    gh, gw = max(1, height // cell), max(1, width // cell)
    yy, xx = np.mgrid[0:gh, 0:gw]
    d = (yy[..., None] - seeds[:, 0] * gh) ** 2 + (xx[..., None] - seeds[:, 1] * gw) ** 2
    coarse = d.argmin(-1)
    return np.kron(coarse, np.ones((cell, cell), np.int64))[:height, :width] if cell > 1 else coarse


def make_case(rng, height, width, num_categories, num_segments=24, cell=8):
    """One image: GT (map, segments with crowd, void, JSON areas) and a prediction with
    jittered boundaries, some wrong classes, dropped and merged segments."""
    h, w = (height + cell - 1) // cell * cell, (width + cell - 1) // cell * cell
    seeds = rng.random((num_segments, 2))
    region = _voronoi(seeds, h, w, cell)[:height, :width]
    gt_ids = rng.choice(np.arange(1, OFFSET), num_segments, replace=False)
    gt_cats = rng.integers(0, num_categories, num_segments)
    void = rng.random(num_segments) < 0.1
    crowd = (rng.random(num_segments) < 0.1) & ~void
    gt_map = np.where(void[region], 0, gt_ids[region])
    gt_segments = [{"id": int(gt_ids[k]), "category_id": int(gt_cats[k]), "iscrowd": int(crowd[k]),
                    "area": int((region == k).sum())} for k in range(num_segments) if not void[k]]
    jitter = seeds + rng.normal(0, 0.03, seeds.shape)
    pred_region = _voronoi(jitter, h, w, cell)[:height, :width]
    merge = rng.random(num_segments) < 0.1
    target = np.where(merge, rng.integers(0, num_segments, num_segments), np.arange(num_segments))
    pred_region = target[pred_region]
    pred_cats = np.where(rng.random(num_segments) < 0.8, gt_cats, rng.integers(0, num_categories, num_segments))
    dropped = rng.random(num_segments) < 0.1
    pred_ids = rng.choice(np.arange(1, OFFSET), num_segments, replace=False)
    pred_map = np.where(dropped[pred_region], 0, pred_ids[pred_region])
    present = np.unique(pred_map)
    pred_segments = [{"id": int(pred_ids[k]), "category_id": int(pred_cats[k])}
                     for k in range(num_segments) if pred_ids[k] in present]
    return gt_map.astype(np.int32), gt_segments, pred_map.astype(np.int32), pred_segments


def write_dataset(folder, num_images, height, width, num_categories=20, seed=0):
    """Writes gt/ and pred/ COCO-panoptic folders + JSONs; returns their paths."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    cats = [{"id": 1 + 3 * c, "name": f"class{c}", "isthing": int(c % 2 == 0)} for c in range(num_categories)]
    anns = {"gt": [], "pred": []}
    for side in anns:
        (folder / side).mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        gt_map, gt_segments, pred_map, pred_segments = make_case(rng, height, width, num_categories)
        for side, m, segs in (("gt", gt_map, gt_segments), ("pred", pred_map, pred_segments)):
            Image.fromarray(id_to_rgb(m)).save(folder / side / f"{i}.png")
            segs = [{**s, "category_id": cats[s["category_id"]]["id"]} for s in segs]
            anns[side].append({"image_id": i, "file_name": f"{i}.png", "segments_info": segs})
    paths = {}
    for side in anns:
        paths[side] = str(folder / f"{side}.json")
        json.dump({"images": [{"id": i, "file_name": f"{i}.png"} for i in range(num_images)],
                   "annotations": anns[side], "categories": cats}, open(paths[side], "w"))
    return paths["gt"], str(folder / "gt"), paths["pred"], str(folder / "pred"), cats


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="default: all cores")
    args = p.parse_args()
    workers = args.workers or os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        gt_json, gt_dir, pred_json, pred_dir, cats = write_dataset(tmp, args.images, args.height, args.width)
        names, things = [c["name"] for c in cats], [bool(c["isthing"]) for c in cats]
        ref = reference_pq_compute(gt_json, gt_dir, pred_json, pred_dir)
        ours = pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=workers, progress=False)
        expect = PQStat(len(cats), ref).summary(names, things)
        for group in ("All", "Things", "Stuff"):
            for k in ("pq", "sq", "rq", "n"):
                assert abs(ours[group][k] - expect[group][k]) < 1e-12, (group, k, ours[group], expect[group])
        times = {"reference": [], "ours": []}
        for _ in range(args.rounds):     # round-robin: load from others hits both alike
            t = time.perf_counter()
            reference_pq_compute(gt_json, gt_dir, pred_json, pred_dir)
            times["reference"].append(time.perf_counter() - t)
            t = time.perf_counter()
            pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=workers, progress=False)
            times["ours"].append(time.perf_counter() - t)
    ips = {k: args.images / statistics.median(v) for k, v in times.items()}
    ratio = ips["ours"] / ips["reference"]
    print(f"PQ evaluation, {args.images} images {args.height}x{args.width}, {len(cats)} categories; "
          f"numbers equal to the reference (All PQ {100 * ours['All']['pq']:.2f}); "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  reference loop (1 core)          {ips['reference']:7.2f} images/s")
    print(f"  ovseg_core ({workers} workers)            {ips['ours']:7.2f} images/s")
    print(f"  ratio {ratio:.2f}x   target >= 1.50x   {'PASS' if ratio >= 1.5 else 'MISS'}")


if __name__ == "__main__":
    main()
