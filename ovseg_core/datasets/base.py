"""What every dataset reader returns: classes, samples, and loaders of images and GT.

Ground truth comes back in *class indices* 0..K-1 (the order of ``classes``), whatever
the dataset's own category ids are, so metrics, vocabularies and predictions share one
numbering.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..panoptic_io import InputError, image_size, read_image, read_panoptic_png
from ..vocabulary import VocabClass, Vocabulary

METADATA_DIR = Path(__file__).resolve().parent / "metadata"
IGNORE = 255


@dataclass(frozen=True)
class ClassInfo:
    """One evaluated class. ``prompts`` are the words CLIP sees (the first becomes the
    vocabulary name); ``dataset_id`` is the dataset's own category id / label value."""

    name: str
    is_thing: bool
    prompts: Tuple[str, ...] = ()
    color: Optional[Tuple[int, int, int]] = None
    dataset_id: Optional[int] = None


@dataclass
class Sample:
    image_id: object
    image_path: Path
    panoptic_path: Optional[Path] = None
    segments: Optional[List[dict]] = None     # segments_info: id, category_id (dataset id), iscrowd, area
    semantic_path: Optional[Path] = None


class DatasetLayoutError(FileNotFoundError):
    """A dataset path that does not hold the expected layout; the message shows it."""


def require(path: Path, dataset: str, layout: str) -> Path:
    if not Path(path).exists():
        raise DatasetLayoutError(f"{dataset}: {path} does not exist. Expected layout:\n{layout}")
    return Path(path)


def load_metadata(name: str) -> List[ClassInfo]:
    """Class lists shipped with the package (``metadata/<name>.json``)."""
    data = json.loads((METADATA_DIR / f"{name}.json").read_text())
    return [ClassInfo(c["name"], bool(c.get("isthing", False)), tuple(c.get("prompts", ())),
                      tuple(c["color"]) if c.get("color") else None, c.get("id"))
            for c in data["classes"]]


def read_class_list(path: Path) -> List[ClassInfo]:
    """A user-supplied class list: one class a line, synonyms after commas, an optional
    ``N:`` or ``N\\t`` index prefix (Pascal Context's labels.txt) dropped."""
    classes = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        head, sep, rest = line.partition(":")
        if sep and head.strip().isdigit():
            line = rest.strip()
        words = [w.strip() for w in line.split(",") if w.strip()]
        classes.append(ClassInfo(words[0], False, tuple(words)))
    return classes


def prompt_words(c: ClassInfo) -> Tuple[str, ...]:
    """COCO-style names ("wall-other-merged") read badly as prompts: use the listed
    prompts, else the name without its -merged/-other/-stuff tags."""
    if c.prompts:
        return c.prompts
    name = c.name
    for tag in ("-merged", "-other", "-stuff"):
        name = name.replace(tag, "")
    return (" ".join(name.replace("-", " ").replace("_", " ").split()),)


class EvalDataset:
    """A split of a benchmark. ``semantic_decode`` maps a label image's values to class
    indices (ignore = 255); without semantic files the semantic GT is derived from the
    panoptic GT (every segment's class, crowd included, void ignored)."""

    def __init__(self, name: str, classes: Sequence[ClassInfo], samples: Sequence[Sample],
                 semantic_decode: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        self.name = name
        self.classes = list(classes)
        self.samples = list(samples)
        self.semantic_decode = semantic_decode
        self.ignore_label = IGNORE
        if len(self.classes) >= IGNORE:
            self.ignore_label = 65535       # ADE-847, PC-459: class indices pass 255
        self._by_dataset_id: Dict[int, int] = {c.dataset_id: i for i, c in enumerate(self.classes)
                                               if c.dataset_id is not None}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.classes]

    @property
    def is_thing(self) -> List[bool]:
        return [c.is_thing for c in self.classes]

    @property
    def has_panoptic(self) -> bool:
        return bool(self.samples) and self.samples[0].panoptic_path is not None

    @property
    def has_semantic(self) -> bool:
        return bool(self.samples) and (self.samples[0].semantic_path is not None or self.has_panoptic)

    def vocabulary(self) -> Vocabulary:
        """The run-time vocabulary in class order; a prompt name another class already
        took falls back to the dataset's name so every class stays distinct."""
        taken, classes = set(), []
        for c in self.classes:
            words = prompt_words(c)
            if words[0].casefold() in taken:
                words = (c.name,) + words
                if c.name.casefold() in taken:
                    raise ValueError(f"{self.name}: two classes are both called {c.name!r}; "
                                     f"give them distinct names or prompts")
            taken.add(words[0].casefold())
            classes.append(VocabClass(words[0], words, c.is_thing))
        return Vocabulary(tuple(classes))

    def _what(self, i: int, kind: str) -> str:
        return f"{kind} of image {self.samples[i].image_id}"

    def check(self, i: int) -> None:
        """Cheap pre-flight of sample ``i`` (file headers only): its image, panoptic PNG
        and label image exist, are readable and have one size. Raises
        :class:`InputError` naming the file at fault."""
        s = self.samples[i]
        size = image_size(s.image_path, self._what(i, "the image file"))
        for path, kind in ((s.panoptic_path, "the panoptic PNG"), (s.semantic_path, "the label image")):
            if path is None:
                continue
            other = image_size(path, self._what(i, kind))
            if other != size:
                raise InputError(f"{path}: {self._what(i, kind)} is {other[1]}x{other[0]} but the image "
                                 f"{s.image_path} is {size[1]}x{size[0]}; ground truth must have its image's size")

    def load_image(self, i: int) -> np.ndarray:
        """uint8 RGB [H, W, 3]."""
        return read_image(self.samples[i].image_path, self._what(i, "the image file"), convert="RGB")

    def load_panoptic(self, i: int) -> Tuple[np.ndarray, List[dict]]:
        """int32 segment map and segments (id, category_id = class index, iscrowd, area).
        Segments of categories the benchmark does not evaluate become void."""
        s = self.samples[i]
        if s.panoptic_path is None:
            raise ValueError(f"{self.name} has no panoptic ground truth")
        seg_map = read_panoptic_png(str(s.panoptic_path), self._what(i, "the panoptic PNG"))
        listed = [seg for seg in s.segments if "area" in seg]
        if listed:
            ids, counts = np.unique(seg_map, return_counts=True)
            pixels = dict(zip(ids.tolist(), counts.tolist()))
            for seg in listed:
                if pixels.get(int(seg["id"]), 0) != int(seg["area"]):
                    raise InputError(
                        f"{s.panoptic_path}: image {s.image_id}: segment {seg['id']} has "
                        f"{pixels.get(int(seg['id']), 0)} pixels but area {seg['area']} in the panoptic JSON; "
                        f"fix the PNG or the JSON's area (its pixel count)")
        segments, dropped = [], []
        for seg in s.segments:
            index = self._by_dataset_id.get(int(seg["category_id"]))
            if index is None:
                dropped.append(int(seg["id"]))
                continue
            out = {"id": int(seg["id"]), "category_id": index, "iscrowd": int(seg.get("iscrowd", 0))}
            if "area" in seg:
                out["area"] = int(seg["area"])
            segments.append(out)
        if dropped:
            seg_map = np.where(np.isin(seg_map, dropped), 0, seg_map).astype(np.int32)
        return seg_map, segments

    def load_semantic(self, i: int) -> np.ndarray:
        """int32 class index per pixel, ``ignore_label`` where not evaluated."""
        s = self.samples[i]
        if s.semantic_path is not None:
            raw = read_image(s.semantic_path, self._what(i, "the label image"))
            if raw.ndim != 2:
                raise InputError(f"{s.semantic_path}: {self._what(i, 'the label image')} has {raw.shape[-1]} "
                                 f"channels; labels are one value per pixel (8- or 16-bit single channel)")
            return self.semantic_decode(raw).astype(np.int32)
        seg_map, segments = self.load_panoptic(i)
        ids = np.array([0] + [g["id"] for g in segments], np.int64)
        labels = np.array([self.ignore_label] + [g["category_id"] for g in segments], np.int32)
        order = np.argsort(ids)
        pos = np.searchsorted(ids[order], seg_map).clip(max=len(ids) - 1)
        found = ids[order][pos] == seg_map
        return np.where(found, labels[order][pos], self.ignore_label).astype(np.int32)

    def gt_segment_index(self, i: int, panoptic: Optional[Tuple[np.ndarray, List[dict]]] = None
                         ) -> Tuple[np.ndarray, List[int]]:
        """For oracle masks and the oracle classifier: an int32 map of segment positions
        (0 = void, j = segment j - 1) and the class of each segment. Panoptic data gives
        its segments (pass ``load_panoptic(i)`` if already loaded); semantic-only data
        one segment per class present."""
        if self.has_panoptic:
            seg_map, segments = panoptic if panoptic is not None else self.load_panoptic(i)
            ids = np.array([0] + [g["id"] for g in segments], np.int64)
            order = np.argsort(ids)
            pos = np.searchsorted(ids[order], seg_map).clip(max=len(ids) - 1)
            index = np.where(ids[order][pos] == seg_map, order[pos], 0).astype(np.int32)
            return index, [g["category_id"] for g in segments]
        sem = self.load_semantic(i)
        classes = [int(c) for c in np.unique(sem) if c != self.ignore_label]
        index = np.zeros(sem.shape, np.int32)
        for j, c in enumerate(classes, start=1):
            index[sem == c] = j
        return index, classes
