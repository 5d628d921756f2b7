"""Benchmark readers: ``load_dataset("mapillary_vistas_v1.2", root, split="val")``.

Each returns an :class:`EvalDataset` whose ground truth is in class indices; a wrong
path fails with a :class:`DatasetLayoutError` (a FileNotFoundError) showing the layout
the reader expects."""
from __future__ import annotations

from .base import ClassInfo, DatasetLayoutError, EvalDataset, Sample
from .readers import (ade20k_150, ade20k_847, cityscapes, coco_panoptic, mapillary_vistas_v12,
                      mapillary_vistas_v20, panoptic_folder, pascal_context_59, pascal_context_459)

DATASETS = {
    "coco_panoptic": coco_panoptic,
    "ade20k_150": ade20k_150,
    "ade20k_847": ade20k_847,
    "pascal_context_59": pascal_context_59,
    "pascal_context_459": pascal_context_459,
    "cityscapes": cityscapes,
    "mapillary_vistas_v1.2": mapillary_vistas_v12,
    "mapillary_vistas_v2.0": mapillary_vistas_v20,
    "panoptic_folder": panoptic_folder,
}


def load_dataset(name: str, root, split: str = "val") -> EvalDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](root, split)


__all__ = ["DATASETS", "load_dataset", "EvalDataset", "ClassInfo", "Sample", "DatasetLayoutError"]
