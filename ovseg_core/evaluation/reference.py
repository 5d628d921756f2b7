"""The yardstick our vectorised PQ is checked against, and the data it is checked on.

``reference_pq_image`` / ``reference_pq_compute`` are panopticapi's ``pq_compute_single_core``
rules written plainly (np.unique on uint64 pairs, dict loops; transcribed here, not
imported: panopticapi is not packaged for our use). ``make_case`` / ``write_dataset``
make synthetic COCO-panoptic images (Voronoi segments, crowd, void, predictions with
jittered boundaries, wrong classes, dropped and merged segments). The tests and
bench/evaluation.py both use them, so they live in the package.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from ..panoptic_io import id_to_rgb

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
