"""Readers for the papers' benchmarks in their standard on-disk layouts (detectron2's
``datasets/`` conventions, the datasets' own downloads). Nothing is downloaded.

Class metadata comes from the dataset's own files where it has them (COCO / ADE /
Cityscapes panoptic JSON categories, Mapillary's config.json); otherwise from the
lists in ``metadata/`` (ADE20K-150, Pascal Context 59). ADE20K-847 and Pascal Context
459 read their class list from a file beside the data (see their layouts).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from ..panoptic_io import InputError, load_json, load_panoptic_json
from .base import IGNORE, ClassInfo, DatasetLayoutError, EvalDataset, Sample, load_metadata, read_class_list, require

SPLITS = {"val": "validation", "train": "training"}


def _split(split: str, dataset: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"{dataset}: unknown split {split!r}; use one of {sorted(SPLITS)}")
    return split


def _decoder(num_values: int, mapping: Dict[int, int], ignore: int) -> Callable[[np.ndarray], np.ndarray]:
    """Label value -> class index (``mapping``), every other value -> ``ignore``."""
    lut = np.full(max(num_values, max(mapping, default=0) + 1), ignore, np.int64)
    for value, index in mapping.items():
        lut[value] = index

    def decode(raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw).astype(np.int64)
        inside = (raw >= 0) & (raw < len(lut))
        return np.where(inside, lut[np.where(inside, raw, 0)], ignore)
    return decode


def _panoptic_samples(json_path: Path, png_dir: Path, image_path: Callable[[dict, dict], Path],
                      dataset: str, layout: str) -> tuple:
    """Samples and categories of a COCO-panoptic JSON + PNG folder."""
    require(json_path, dataset, layout)
    require(png_dir, dataset, layout)
    data = load_panoptic_json(json_path, f"{dataset} panoptic")
    images = {im["id"]: im for im in data.get("images", [])}
    samples = []
    for ann in data["annotations"]:
        # a JSON without "images" names the image after its PNG, as the datasets do
        image = {"id": ann["image_id"], "file_name": Path(ann["file_name"]).stem + ".jpg",
                 **images.get(ann["image_id"], {})}
        samples.append(Sample(ann["image_id"], image_path(image, ann), png_dir / ann["file_name"],
                              ann["segments_info"]))
    if samples:
        require(samples[0].image_path, dataset, layout)
        require(samples[0].panoptic_path, dataset, layout)
    return samples, data["categories"]


def _classes_from_categories(categories: List[dict]) -> List[ClassInfo]:
    return [ClassInfo(c["name"], bool(c.get("isthing", 0)), (),
                      tuple(c["color"]) if isinstance(c.get("color"), list) else None, int(c["id"]))
            for c in categories]


# ---------------------------------------------------------------- COCO panoptic
COCO_LAYOUT = """  ROOT/annotations/panoptic_{split}2017.json
  ROOT/annotations/panoptic_{split}2017/*.png
  ROOT/{split}2017/*.jpg            (split: val or train)"""


def coco_panoptic(root, split: str = "val") -> EvalDataset:
    root, name = Path(root), "coco_panoptic"
    _split(split, name)
    layout = COCO_LAYOUT.replace("ROOT", str(root))
    samples, cats = _panoptic_samples(
        root / "annotations" / f"panoptic_{split}2017.json", root / "annotations" / f"panoptic_{split}2017",
        lambda im, ann: root / f"{split}2017" / im["file_name"], name, layout)
    return EvalDataset(name, _classes_from_categories(cats), samples)


# ---------------------------------------------------------------- ADE20K
ADE150_LAYOUT = """  ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg
  semantic (either):
  ROOT/ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png  (0-149, 255 ignore)
  ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png             (0 other, 1-150)
  panoptic (optional, detectron2's prepare_ade20k_panoptic_annotations.py):
  ROOT/ADEChallengeData2016/ade20k_panoptic_{train,val}.json
  ROOT/ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png
  (ROOT may also be the ADEChallengeData2016 folder itself)"""


def _ade_base(root: Path) -> Path:
    return root if root.name == "ADEChallengeData2016" or (root / "images").is_dir() else root / "ADEChallengeData2016"


def ade20k_150(root, split: str = "val") -> EvalDataset:
    """Semantic labels always; panoptic GT too where the panoptic files exist."""
    root, name = Path(root), "ade20k_150"
    _split(split, name)
    base = _ade_base(root)
    layout = ADE150_LAYOUT.replace("ROOT", str(root))
    folder = SPLITS[split]
    image_dir = require(base / "images" / folder, name, layout)
    d2_dir, raw_dir = base / "annotations_detectron2" / folder, base / "annotations" / folder
    classes = load_metadata("ade20k_150")
    if d2_dir.is_dir():
        sem_dir, decode = d2_dir, _decoder(256, {i: i for i in range(150)}, IGNORE)
    elif raw_dir.is_dir():
        sem_dir, decode = raw_dir, _decoder(256, {i + 1: i for i in range(150)}, IGNORE)
    else:
        sem_dir, decode = None, None
    pan_json = base / f"ade20k_panoptic_{split}.json"
    if pan_json.is_file():
        samples, cats = _panoptic_samples(pan_json, base / f"ade20k_panoptic_{split}",
                                          lambda im, ann: image_dir / im["file_name"], name, layout)
        ours = {c.name.casefold(): c for c in classes}
        pan_classes = []
        for c in _classes_from_categories(cats):
            mine = ours.get(c.name.split(",")[0].strip().casefold())
            prompts = mine.prompts if mine else tuple(w.strip() for w in c.name.split(",") if w.strip())
            pan_classes.append(ClassInfo(prompts[0], c.is_thing, prompts, c.color, c.dataset_id))
        if sem_dir is not None:
            if len(pan_classes) != 150:
                raise ValueError(f"{name}: {pan_json} lists {len(pan_classes)} categories, not 150")
            for s in samples:
                s.semantic_path = sem_dir / (Path(s.image_path).stem + ".png")
        return EvalDataset(name, pan_classes, samples, decode)
    if sem_dir is None:
        require(d2_dir, name, layout)
    samples = [Sample(p.stem, p, semantic_path=sem_dir / (p.stem + ".png"))
               for p in sorted(image_dir.glob("*.jpg"))]
    if not samples:
        require(image_dir / "*.jpg", name, layout)
    require(samples[0].semantic_path, name, layout)
    return EvalDataset(name, classes, samples, decode)


def _semantic_folder_dataset(name: str, image_dir: Path, label_dir: Path, label_ext: str,
                             classes: List[ClassInfo], decode, layout: str) -> EvalDataset:
    require(image_dir, name, layout)
    require(label_dir, name, layout)
    samples = [Sample(p.stem, p, semantic_path=label_dir / (p.stem + label_ext))
               for p in sorted(image_dir.glob("*.jpg"))]
    if not samples:
        require(image_dir / "*.jpg", name, layout)
    require(samples[0].semantic_path, name, layout)
    return EvalDataset(name, classes, samples, decode)


def _class_file(candidates: List[Path], name: str, count: int, layout: str) -> List[ClassInfo]:
    for path in candidates:
        if path.is_file():
            classes = read_class_list(path)
            if len(classes) != count:
                raise ValueError(f"{name}: {path} lists {len(classes)} classes, expected {count}")
            return classes
    raise DatasetLayoutError(
        f"{name}: no class list found (looked for {', '.join(map(str, candidates))}). ovseg does not "
        f"ship the {count} names; put them there, one class a line in label order, synonyms after "
        f"commas. Expected layout:\n{layout}")


ADE847_LAYOUT = """  ROOT/ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
  ROOT/ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif   (uint16, 0-846, 65535 ignore)
  ROOT/ADE20K_2021_17_01/classes.txt   (847 names in label order, synonyms after commas)"""


def ade20k_847(root, split: str = "val") -> EvalDataset:
    root, name = Path(root), "ade20k_847"
    _split(split, name)
    base = root if root.name == "ADE20K_2021_17_01" else root / "ADE20K_2021_17_01"
    layout = ADE847_LAYOUT.replace("ROOT", str(root))
    require(base, name, layout)
    classes = _class_file([base / "classes.txt"], name, 847, layout)
    classes = [ClassInfo(c.name, False, c.prompts, None, i) for i, c in enumerate(classes)]
    return _semantic_folder_dataset(name, base / "images_detectron2" / SPLITS[split],
                                    base / "annotations_detectron2" / SPLITS[split], ".tif", classes,
                                    _decoder(65536, {i: i for i in range(847)}, 65535), layout)


# ---------------------------------------------------------------- Pascal Context
PC_LAYOUT = """  ROOT/pascal_ctx_d2/images/{training,validation}/*.jpg
  ROOT/pascal_ctx_d2/annotations_ctx59/{training,validation}/*.png    (PC-59: 0-58, 255 ignore)
  ROOT/pascal_ctx_d2/annotations_ctx459/{training,validation}/*.tif   (PC-459: uint16 0-458, 65535 ignore)
  ROOT/pascal_ctx_d2/labels.txt or classes.txt   (PC-459 only: 459 names in label order)"""


def _pc_base(root: Path) -> Path:
    return root if root.name == "pascal_ctx_d2" else root / "pascal_ctx_d2"


def pascal_context_59(root, split: str = "val") -> EvalDataset:
    root, name = Path(root), "pascal_context_59"
    _split(split, name)
    base = _pc_base(root)
    layout = PC_LAYOUT.replace("ROOT", str(root))
    return _semantic_folder_dataset(name, base / "images" / SPLITS[split],
                                    base / "annotations_ctx59" / SPLITS[split], ".png",
                                    load_metadata("pascal_context_59"),
                                    _decoder(256, {i: i for i in range(59)}, IGNORE), layout)


def pascal_context_459(root, split: str = "val") -> EvalDataset:
    root, name = Path(root), "pascal_context_459"
    _split(split, name)
    base = _pc_base(root)
    layout = PC_LAYOUT.replace("ROOT", str(root))
    require(base, name, layout)
    classes = _class_file([base / "classes.txt", base / "labels.txt"], name, 459, layout)
    classes = [ClassInfo(c.name, False, c.prompts, None, i) for i, c in enumerate(classes)]
    return _semantic_folder_dataset(name, base / "images" / SPLITS[split],
                                    base / "annotations_ctx459" / SPLITS[split], ".tif", classes,
                                    _decoder(65536, {i: i for i in range(459)}, 65535), layout)


# ---------------------------------------------------------------- Cityscapes
CITYSCAPES_LAYOUT = """  ROOT/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png
  ROOT/gtFine/cityscapes_panoptic_{train,val}.json
  ROOT/gtFine/cityscapes_panoptic_{train,val}/*_gtFine_panoptic.png
  (cityscapesscripts' createPanopticImgs output; 19 evaluated categories)"""


def cityscapes(root, split: str = "val") -> EvalDataset:
    root, name = Path(root), "cityscapes"
    _split(split, name)
    layout = CITYSCAPES_LAYOUT.replace("ROOT", str(root))

    def image_path(im, ann):
        stem = str(ann["image_id"])
        return root / "leftImg8bit" / split / stem.split("_")[0] / f"{stem}_leftImg8bit.png"

    samples, cats = _panoptic_samples(root / "gtFine" / f"cityscapes_panoptic_{split}.json",
                                      root / "gtFine" / f"cityscapes_panoptic_{split}", image_path, name, layout)
    return EvalDataset(name, _classes_from_categories(cats), samples)


# ---------------------------------------------------------------- Mapillary Vistas
MAPILLARY_LAYOUT = """  flat (v1.2 download):
  ROOT/config.json
  ROOT/{training,validation}/images/*.jpg
  ROOT/{training,validation}/labels/*.png         (8-bit label index)
  ROOT/{training,validation}/panoptic/*.png and panoptic/panoptic_2018.json
  nested (v2.0 download, both versions):
  ROOT/config_v1.2.json, ROOT/config_v2.0.json
  ROOT/{training,validation}/images/*.jpg
  ROOT/{training,validation}/v1.2/{labels,panoptic}/..., panoptic/panoptic_2018.json
  ROOT/{training,validation}/v2.0/{labels,panoptic}/..., panoptic/panoptic_2020.json"""

_MAPILLARY = {"1.2": ("panoptic_2018.json", 66, 65), "2.0": ("panoptic_2020.json", 124, None)}


def _mapillary(root, split: str, version: str) -> EvalDataset:
    root, name = Path(root), f"mapillary_vistas_v{version}"
    _split(split, name)
    layout = MAPILLARY_LAYOUT.replace("ROOT", str(root))
    json_name, num_labels, _ = _MAPILLARY[version]
    folder = root / SPLITS[split]
    nested = folder / f"v{version}"
    if (root / f"config_v{version}.json").is_file() and nested.is_dir():
        config_path, ann_dir = root / f"config_v{version}.json", nested
    elif (root / "config.json").is_file() and (folder / "panoptic").is_dir():
        config_path, ann_dir = root / "config.json", folder
    else:
        raise DatasetLayoutError(f"{name}: neither {root / 'config.json'} with {folder / 'panoptic'} "
                                f"(flat layout) nor {root / f'config_v{version}.json'} with {nested} "
                                f"(nested layout) exists. Expected layout:\n{layout}")
    config = load_json(config_path, f"{name} config")
    labels = config.get("labels") if isinstance(config, dict) else None
    if not isinstance(labels, list):
        raise InputError(f"{config_path}: not a Mapillary config (needs a list 'labels'); use the config.json "
                         f"of the download")
    for k, lab in enumerate(labels):
        color = lab.get("color") if isinstance(lab, dict) else None
        if not (isinstance(lab, dict) and isinstance(lab.get("name"), str) and lab["name"].strip()
                and isinstance(lab.get("readable", ""), str)
                and all(isinstance(lab.get(f, True), bool) for f in ("instances", "evaluate"))
                and (color is None or (isinstance(color, list) and len(color) == 3
                                       and all(isinstance(c, int) and 0 <= c < 256 for c in color)))):
            raise InputError(f"{config_path}: labels[{k}] needs a name, and where given a string readable, "
                             f"true/false instances and evaluate, and an RGB color; use the config.json of "
                             f"the download")
    if len(labels) != num_labels:
        raise ValueError(f"{name}: {config_path} has {len(labels)} labels; v{version} has {num_labels}. "
                         f"Is this the config of the other version?")
    # Evaluated labels keep their config order; the rest (Unlabeled) is ignored.
    evaluated = [i for i, lab in enumerate(labels) if lab.get("evaluate", True)]
    readable = [labels[i].get("readable", labels[i]["name"]) for i in evaluated]
    repeated = {r.casefold() for r in readable if sum(x.casefold() == r.casefold() for x in readable) > 1}
    classes = [ClassInfo(labels[i]["name"] if r.casefold() in repeated else r,
                         bool(labels[i].get("instances", False)), (),
                         tuple(labels[i]["color"]) if labels[i].get("color") else None, i + 1)
               for i, r in zip(evaluated, readable)]
    json_path = next((p for p in (ann_dir / "panoptic" / json_name, ann_dir / json_name) if p.is_file()),
                     ann_dir / "panoptic" / json_name)
    samples, _ = _panoptic_samples(json_path, ann_dir / "panoptic",
                                   lambda im, ann: folder / "images" / im["file_name"], name, layout)
    label_dir = ann_dir / "labels"
    if label_dir.is_dir():
        for s in samples:
            s.semantic_path = label_dir / (Path(s.panoptic_path).stem + ".png")
        require(samples[0].semantic_path, name, layout) if samples else None
    decode = _decoder(256, {label: index for index, label in enumerate(evaluated)}, IGNORE)
    return EvalDataset(name, classes, samples, decode)


def mapillary_vistas_v12(root, split: str = "val") -> EvalDataset:
    return _mapillary(root, split, "1.2")


def mapillary_vistas_v20(root, split: str = "val") -> EvalDataset:
    return _mapillary(root, split, "2.0")


# ---------------------------------------------------------------- a COCO-panoptic folder
PANOPTIC_FOLDER_LAYOUT = """  ROOT/panoptic.json          (COCO panoptic: images, annotations, categories with isthing)
  ROOT/panoptic/*.png
  ROOT/images/*               (the image files the JSON's images[].file_name name)
  (what `ovseg segment` and `python -m ovseg_core.shapes dataset` write; split is ignored)"""


def panoptic_folder(root, split: str = "val") -> EvalDataset:
    """Any COCO-panoptic set in one folder, with its own categories (e.g. ShapesWorld)."""
    root, name = Path(root), "panoptic_folder"
    layout = PANOPTIC_FOLDER_LAYOUT.replace("ROOT", str(root))
    samples, cats = _panoptic_samples(root / "panoptic.json", root / "panoptic",
                                      lambda im, ann: root / "images" / im["file_name"], name, layout)
    return EvalDataset(name, _classes_from_categories(cats), samples)
