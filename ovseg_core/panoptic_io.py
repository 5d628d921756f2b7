"""COCO panoptic format, so results can be scored with panopticapi's `pq_compute`, and
the checked readers every tool shares (the PQ CLI, the dataset readers, ``ovseg-bag``):
a bad file fails with one line that names it and says what to change.

No torch here: the metrics and readers import this module."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .structures import PanopticResult

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
    from .visualize import palette
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


def read_panoptic_png(path: str, what: str = "panoptic PNG") -> np.ndarray:
    """[H, W] int32 ids of a COCO-panoptic PNG; :class:`InputError` if it is not one."""
    return rgb_to_id(read_image(path, what, modes=("RGB", "RGBA"), convert="RGB"))


def write_panoptic_json(path: str, images: List[dict], annotations: List[dict],
                        categories: List[dict]) -> None:
    for a in annotations:
        missing = {"image_id", "file_name", "segments_info"} - set(a)
        if missing:
            raise ValueError(f"annotation lacks {sorted(missing)}: {a}")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


# ---------------------------------------------------------------- checked input files

PNG_ID_LIMIT = 256 ** 3     # ids a COCO-panoptic PNG can hold


class InputError(ValueError):
    """A bad input file; the message names the file and what to change (a ValueError, so
    callers that catch ValueError report it)."""


def load_json(path, what: str):
    """The parsed JSON at ``path``, or an :class:`InputError` naming the file: missing,
    a folder, unreadable, not UTF-8 or not JSON (e.g. a PNG given as the JSON)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the {what} JSON file itself")
    if not path.exists():
        raise InputError(f"{path}: {what} JSON does not exist; check the path")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: the {what} JSON is not valid JSON ({str(err).splitlines()[0]}); "
                         f"give a COCO-style JSON file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the {what} JSON ({err.strerror or err})") from None


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_panoptic_json(data, path, what: str, categories: bool = True) -> dict:
    """``data`` (from ``path``) is COCO-panoptic: a dict with a list of ``annotations``
    (image_id, file_name, segments_info of dicts with integer id in [1, 2^24) and
    category_id, optional non-negative integer area, iscrowd 0/1) and, when
    ``categories``, a list of categories with integer id and a name. Returns ``data``;
    raises :class:`InputError` naming the file and the first problem."""
    def fail(problem: str, fix: str = "fix the JSON"):
        raise InputError(f"{path}: {problem}; {fix}")

    if not isinstance(data, dict):
        fail(f"the {what} JSON is a {type(data).__name__}, not an object with annotations"
             + (" and categories" if categories else ""), "give a COCO-panoptic JSON")
    need = ("annotations", "categories") if categories else ("annotations",)
    for key in need:
        if not isinstance(data.get(key), list):
            fail(f"the {what} JSON has no list '{key}'" if key not in data else
                 f"'{key}' is a {type(data[key]).__name__}, not a list", "give a COCO-panoptic JSON")
    if categories:
        seen = set()
        for k, c in enumerate(data["categories"]):
            if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
                fail(f"categories[{k}] needs an integer id and a string name")
            if c["id"] in seen:
                fail(f"category id {c['id']} is listed twice")
            seen.add(c["id"])
    if "images" in data and not (isinstance(data["images"], list) and all(
            isinstance(im, dict) and (_is_int(im.get("id")) or isinstance(im.get("id"), str))
            and isinstance(im.get("file_name", ""), str) for im in data["images"])):
        fail("'images' must be a list of objects with an integer or string id and a string file_name")
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            fail(f"annotations[{k}] is a {type(ann).__name__}, not an object")
        image = ann.get("image_id")
        if not (_is_int(image) or isinstance(image, str)):
            fail(f"annotations[{k}] has no integer or string image_id")
        where = f"image {image}"
        if not isinstance(ann.get("file_name"), str) or not ann["file_name"]:
            fail(f"{where} has no file_name (its PNG's name)")
        if not isinstance(ann.get("segments_info"), list):
            fail(f"{where} ({ann['file_name']}) has no list segments_info")
        ids = set()
        for s in ann["segments_info"]:
            if not isinstance(s, dict):
                fail(f"{where} ({ann['file_name']}): a segment is a {type(s).__name__}, not an object")
            sid = s.get("id")
            if not _is_int(sid) or not 0 < sid < PNG_ID_LIMIT:
                fail(f"{where} ({ann['file_name']}): segment id {sid!r} is not an integer in [1, 2^24)",
                     "ids are R + 256 G + 256^2 B of the PNG's pixels")
            if sid in ids:
                fail(f"{where} ({ann['file_name']}): segment id {sid} is listed twice")
            ids.add(sid)
            if not _is_int(s.get("category_id")):
                fail(f"{where} ({ann['file_name']}): segment {sid} has no integer category_id")
            if "area" in s and not (_is_int(s["area"]) and s["area"] >= 0):
                fail(f"{where} ({ann['file_name']}): segment {sid} has area {s['area']!r}, not a pixel count")
            if s.get("iscrowd", 0) not in (0, 1):
                fail(f"{where} ({ann['file_name']}): segment {sid} has iscrowd {s['iscrowd']!r}, not 0 or 1")
    return data


def load_panoptic_json(path, what: str, categories: bool = True) -> dict:
    """:func:`load_json` + :func:`check_panoptic_json`."""
    return check_panoptic_json(load_json(path, what), path, what, categories)


def image_size(path, what: str):
    """(height, width) from the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise InputError(f"{path}: {what} does not exist; add it or remove its entry") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: {what} is not a readable image ({_reason(err, path)}); replace it") from None


def _reason(err: Exception, path) -> str:
    """PIL's message without the path it repeats (the message starts with it)."""
    return str(err).replace(f" '{path}'", "").replace(f" {path}", "") or type(err).__name__


def read_image(path, what: str, modes: Optional[Sequence[str]] = None, convert: Optional[str] = None) -> np.ndarray:
    """The pixels of an image file, or an :class:`InputError` naming it: missing, a
    folder, corrupt or truncated, or (given ``modes``) of another PIL mode."""
    try:
        with Image.open(path) as im:
            if modes is not None and im.mode not in modes:
                raise InputError(f"{path}: {what} has PIL mode {im.mode}, expected {' or '.join(modes)}; "
                                 f"save it in that mode")
            return np.array(im.convert(convert) if convert else im)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} does not exist; add it or remove its entry") from None
    except IsADirectoryError:
        raise InputError(f"{path}: {what} is a folder, not an image file") from None
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: {what} is not a readable image ({_reason(err, path)}); replace it") from None


def write_text_atomic(path, text: str) -> None:
    """Writes to a temporary file beside ``path`` and renames it over ``path``: a reader
    (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(obj, path) -> None:
    """Strict JSON (NaN or inf raise instead of writing non-JSON), written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1, allow_nan=False))
