"""Tiny datasets written in each supported on-disk layout, with known ground truth.

Every image is a scene of horizontal stuff bands with thing rectangles on top, a void
strip at the bottom and, optionally, a crowd rectangle; segment ids are random 24-bit
numbers so the RGB id encoding is exercised. Writers return what they wrote (per image
the segments and their class indices) for the tests to compare with.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

from ovseg_core.datasets.base import load_metadata
from ovseg_core.panoptic_io import id_to_rgb


def scene(rng, height: int, width: int, stuff: Sequence[int], things: Sequence[int], crowd: bool = False):
    """-> id map (int32), segments [{id, category (class index), iscrowd, area}],
    semantic map (class index, 255 void). One segment per stuff class, as in real GT."""
    ids = rng.choice(np.arange(1, 256 ** 3), len(stuff) + len(things) + 1, replace=False)
    seg = np.zeros((height, width), np.int32)
    semantic = np.full((height, width), 255, np.int32)
    segments = []
    bands = np.linspace(0, height - 3, len(stuff) + 1).astype(int)
    for k, c in enumerate(stuff):
        seg[bands[k]:bands[k + 1]] = ids[k]
        semantic[bands[k]:bands[k + 1]] = c
        segments.append({"id": int(ids[k]), "category": int(c), "iscrowd": 0})
    for k, c in enumerate(things):
        y, x = rng.integers(0, height // 2), rng.integers(0, width - 8)
        h, w = rng.integers(4, height // 2), rng.integers(4, 10)
        seg[y:y + h, x:x + w] = ids[len(stuff) + k]
        semantic[y:y + h, x:x + w] = c
        segments.append({"id": int(ids[len(stuff) + k]), "category": int(c), "iscrowd": 0})
    if crowd and things:
        seg[height - 6:height - 3, :6] = ids[-1]
        semantic[height - 6:height - 3, :6] = things[0]
        segments.append({"id": int(ids[-1]), "category": int(things[0]), "iscrowd": 1})
    for s in segments:
        s["area"] = int((seg == s["id"]).sum())
    segments = [s for s in segments if s["area"] > 0]
    return seg, segments, semantic


def _image(rng, height, width) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _pick(rng, is_thing: Sequence[bool], n_stuff=2, n_things=3) -> Tuple[List[int], List[int]]:
    stuff = [i for i, t in enumerate(is_thing) if not t]
    things = [i for i, t in enumerate(is_thing) if t]
    return (sorted(rng.choice(stuff, min(n_stuff, len(stuff)), replace=False).tolist()),
            rng.choice(things, n_things).tolist() if things else [])


def _write_panoptic(png_dir: Path, json_path: Path, entries, categories, images):
    png_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image_id, file_name, seg, segments, cat_ids in entries:
        Image.fromarray(id_to_rgb(seg)).save(png_dir / file_name)
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": [
            {"id": s["id"], "category_id": cat_ids[s["category"]], "iscrowd": s["iscrowd"], "area": s["area"],
             "bbox": [0, 0, 1, 1]} for s in segments]})
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def write_coco(root: Path, names, is_thing, num_images=3, size=(24, 32), seed=0, crowd=True):
    """COCO panoptic; category ids are deliberately not contiguous (3 k + 2)."""
    rng = np.random.default_rng(seed)
    cat_ids = [3 * k + 2 for k in range(len(names))]
    categories = [{"id": cat_ids[k], "name": n, "isthing": int(t), "color": [k, 2 * k, 3 * k]}
                  for k, (n, t) in enumerate(zip(names, is_thing))]
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    entries, images, written = [], [], []
    for i in range(num_images):
        seg, segments, semantic = scene(rng, *size, *_pick(rng, is_thing), crowd=crowd)
        _image(rng, *size).save(root / "val2017" / f"{i:012d}.jpg")
        images.append({"id": 100 + i, "file_name": f"{i:012d}.jpg", "height": size[0], "width": size[1]})
        entries.append((100 + i, f"{i:012d}.png", seg, segments, cat_ids))
        written.append((seg, segments, semantic))
    _write_panoptic(root / "annotations" / "panoptic_val2017", root / "annotations" / "panoptic_val2017.json",
                    entries, categories, images)
    return written


def write_ade150(root: Path, num_images=2, size=(20, 28), seed=0, semantic="raw", panoptic=True):
    """ADEChallengeData2016 with raw (0 = other, 1-150) or detectron2 (0-149, 255) labels,
    and optionally detectron2's panoptic JSON (first 50 categories stuff, the rest things)."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    (base / "images" / "validation").mkdir(parents=True, exist_ok=True)
    names = [c.name for c in load_metadata("ade20k_150")]
    is_thing = [k >= 50 for k in range(150)]
    folder = base / ("annotations" if semantic == "raw" else "annotations_detectron2") / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    entries, images, written = [], [], []
    for i in range(num_images):
        stem = f"ADE_val_{i + 1:08d}"
        seg, segments, sem = scene(rng, *size, *_pick(rng, is_thing))
        _image(rng, *size).save(base / "images" / "validation" / f"{stem}.jpg")
        label = np.where(sem == 255, 0, sem + 1) if semantic == "raw" else sem
        Image.fromarray(label.astype(np.uint8)).save(folder / f"{stem}.png")
        images.append({"id": stem, "file_name": f"{stem}.jpg"})
        entries.append((stem, f"{stem}.png", seg, segments, list(range(1, 151))))
        written.append((seg, segments, sem))
    if panoptic:
        cats = [{"id": k + 1, "name": n, "isthing": int(t)} for k, (n, t) in enumerate(zip(names, is_thing))]
        _write_panoptic(base / "ade20k_panoptic_val", base / "ade20k_panoptic_val.json", entries, cats, images)
    return written


def write_semantic_folder(image_dir: Path, label_dir: Path, num_classes: int, ext: str, num_images=2,
                          size=(20, 28), seed=0, ignore=255):
    """Images + label files (PNG uint8 or TIFF uint16) with values < num_classes or ignore."""
    rng = np.random.default_rng(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(num_images):
        label = rng.integers(0, num_classes, size)
        label[-2:] = ignore
        dtype = np.uint16 if ext == ".tif" else np.uint8
        _image(rng, *size).save(image_dir / f"img{i}.jpg")
        Image.fromarray(label.astype(dtype)).save(label_dir / f"img{i}{ext}")
        written.append(label)
    return written


def write_cityscapes(root: Path, num_images=2, size=(16, 32), seed=0):
    rng = np.random.default_rng(seed)
    label_ids = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    names = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
             "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
             "bicycle"]
    is_thing = [k >= 11 for k in range(19)]
    cats = [{"id": i, "name": n, "isthing": int(t)} for i, n, t in zip(label_ids, names, is_thing)]
    entries, written = [], []
    for i in range(num_images):
        city = ["frankfurt", "lindau"][i % 2]
        stem = f"{city}_{i:06d}_000019"
        seg, segments, sem = scene(rng, *size, *_pick(rng, is_thing))
        (root / "leftImg8bit" / "val" / city).mkdir(parents=True, exist_ok=True)
        _image(rng, *size).save(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        entries.append((stem, f"{stem}_gtFine_panoptic.png", seg, segments, label_ids))
        written.append((seg, segments, sem))
    _write_panoptic(root / "gtFine" / "cityscapes_panoptic_val", root / "gtFine" / "cityscapes_panoptic_val.json",
                    entries, cats, [{"id": e[0], "file_name": f"{e[0]}_leftImg8bit.png"} for e in entries])
    return written


MAPILLARY = {"1.2": (66, 37, "panoptic_2018.json"), "2.0": (124, 60, "panoptic_2020.json")}


def mapillary_config(version: str) -> dict:
    """A config with the real label count; the last label is Unlabeled (not evaluated).
    (Names are placeholders: the reader must take them from the file, not know them.)"""
    num_labels, num_things, _ = MAPILLARY[version]
    labels = [{"name": f"group--label-{k}", "readable": f"Label {k}", "instances": k < num_things,
               "evaluate": True, "color": [k, 255 - k, (7 * k) % 256]} for k in range(num_labels - 1)]
    labels.append({"name": "void--unlabeled", "readable": "Unlabeled", "instances": False, "evaluate": False,
                   "color": [0, 0, 0]})
    return {"labels": labels, "version": version}


def write_mapillary(root: Path, version="1.2", nested=False, num_images=2, size=(24, 40), seed=0):
    """Flat (v1.2 download) or nested (v2.0 download: v1.2/ and v2.0/ under each split).
    Label value k is panoptic category k + 1; "Unlabeled" pixels are a segment too."""
    rng = np.random.default_rng(seed)
    num_labels, num_things, json_name = MAPILLARY[version]
    config = mapillary_config(version)
    is_thing = [lab["instances"] for lab in config["labels"][:-1]]
    split = root / "validation"
    ann = split / f"v{version}" if nested else split
    root.mkdir(parents=True, exist_ok=True)
    (root / (f"config_v{version}.json" if nested else "config.json")).write_text(json.dumps(config))
    (split / "images").mkdir(parents=True, exist_ok=True)
    (ann / "labels").mkdir(parents=True, exist_ok=True)
    entries, images, written = [], [], []
    cat_ids = list(range(1, num_labels + 1))
    for i in range(num_images):
        stem = f"img{i:03d}"
        seg, segments, sem = scene(rng, *size, *_pick(rng, is_thing), crowd=False)
        # the void strip becomes an "Unlabeled" segment, as Mapillary annotates it
        unlabeled_id = int(seg.max()) + 1
        seg = np.where(seg == 0, unlabeled_id, seg).astype(np.int32)
        label = np.where(sem == 255, num_labels - 1, sem)
        all_segments = segments + [{"id": unlabeled_id, "category": num_labels - 1, "iscrowd": 0,
                                    "area": int((seg == unlabeled_id).sum())}]
        _image(rng, *size).save(split / "images" / f"{stem}.jpg")
        Image.fromarray(label.astype(np.uint8)).save(ann / "labels" / f"{stem}.png")
        images.append({"id": stem, "file_name": f"{stem}.jpg"})
        entries.append((stem, f"{stem}.png", seg, all_segments, cat_ids))
        written.append((np.where(seg == unlabeled_id, 0, seg), segments, sem))
    cats = [{"id": k + 1, "name": lab["name"], "isthing": int(lab["instances"])}
            for k, lab in enumerate(config["labels"])]
    _write_panoptic(ann / "panoptic", ann / "panoptic" / json_name, entries, cats, images)
    return written
