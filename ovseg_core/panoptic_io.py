"""COCO panoptic format, so results can be scored with panopticapi's `pq_compute`."""
from __future__ import annotations

import json
from typing import List, Sequence

import numpy as np
from PIL import Image

from .structures import PanopticResult
from .visualize import palette

_RGB_BASE = np.array([1, 256, 256 ** 2], dtype=np.int64)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """[H, W] ids -> [H, W, 3] uint8 with id = R + 256 G + 256^2 B."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256 ** 3:
        raise ValueError("panoptic ids must lie in [0, 256^3)")
    return (ids[..., None] // _RGB_BASE % 256).astype(np.uint8)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] RGB -> [H, W] int32 ids."""
    return (np.asarray(rgb).astype(np.int64) @ _RGB_BASE).astype(np.int32)


def categories(class_names: Sequence[str], class_is_thing: Sequence[bool]) -> List[dict]:
    """COCO categories; id = class_index + 1 because 0 is void in the PNGs."""
    colors = palette(len(class_names))
    return [{"id": i + 1, "name": name, "isthing": int(bool(thing)), "color": colors[i].tolist()}
            for i, (name, thing) in enumerate(zip(class_names, class_is_thing))]


def segments_info(result: PanopticResult) -> List[dict]:
    return [{"id": int(s.id), "category_id": int(s.class_index) + 1, "area": int(s.area),
             "bbox": [int(v) for v in s.bbox], "iscrowd": 0, "score": float(s.score)}
            for s in result.segments]


def panoptic_annotation(image_id, file_name: str, result: PanopticResult) -> dict:
    """One entry of the JSON's "annotations"; file_name is the PNG's name."""
    return {"image_id": image_id, "file_name": file_name, "segments_info": segments_info(result)}


def write_panoptic_png(path: str, result: PanopticResult) -> None:
    Image.fromarray(id_to_rgb(result.segment_map)).save(path, format="PNG")


def read_panoptic_png(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return rgb_to_id(np.asarray(im.convert("RGB")))


def write_panoptic_json(path: str, images: List[dict], annotations: List[dict],
                        categories: List[dict]) -> None:
    for a in annotations:
        missing = {"image_id", "file_name", "segments_info"} - set(a)
        if missing:
            raise ValueError(f"annotation lacks {sorted(missing)}: {a}")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
