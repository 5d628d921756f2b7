"""Training data: panoptic samples -> augmented crops with per-segment masks.

Every random choice is a function of (seed, global sample position): the image order
comes from a seeded permutation per epoch and the augmentation of the sample at
position p from a generator seeded with (seed, p). So the data a step sees does not
depend on the number of processes or loader workers, and a resumed run sees exactly
what an uninterrupted one would have.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..vocabulary import VocabClass, Vocabulary
from .recipe import DataConfig


@dataclass
class Sample:
    """A panoptic ground truth in training-class indices. ``index`` [H, W] int32:
    0 void, j = segment j - 1; ``ignore`` marks pixels of classes never supervised
    (excluded classes, crowd regions): proposals lying on them learn nothing."""

    image: np.ndarray            # uint8 [H, W, 3]
    index: np.ndarray            # int32 [H, W]
    classes: List[int]           # training-class index per segment
    ignore: np.ndarray           # bool [H, W]


class PanopticSource:
    """A dataset reader's split (``ovseg_core.datasets``) restricted to training classes."""

    def __init__(self, data, vocabulary: Vocabulary, keep: Sequence[int]):
        self.data = data
        self.vocabulary = vocabulary            # the training classes
        self.to_train = {k: i for i, k in enumerate(keep)}

    def __len__(self) -> int:
        return len(self.data)

    def load(self, i: int) -> Sample:
        seg_map, segments = self.data.load_panoptic(i)
        image = self.data.load_image(i)
        if image.shape[:2] != seg_map.shape:
            raise ValueError(f"{self.data.samples[i].image_path}: image {image.shape[:2]} and its panoptic PNG "
                             f"{seg_map.shape} differ in size; fix the dataset")
        index = np.zeros(seg_map.shape, np.int32)
        ignore = np.zeros(seg_map.shape, bool)
        classes = []
        for seg in segments:
            pixels = seg_map == seg["id"]
            target = self.to_train.get(seg["category_id"])
            if target is None or seg.get("iscrowd", 0):
                ignore |= pixels
            elif pixels.any():
                classes.append(target)
                index[pixels] = len(classes)
        return Sample(image, index, classes, ignore)


class ShapesSource:
    """Generated ShapesWorld scenes drawn from the training classes only (classes outside
    them are never drawn, so nothing is ignored): scene i has seed ``seed + i``.

    With ``grey_share`` > 0 each thing is, with that probability, repainted off the palette
    and labelled by its bare shape word, a training class of its own: the classifier must
    then name a shape that no color gives away, the prior an unseen "color shape" needs,
    while no unseen thing is ever drawn. With ``hue_share`` > 0 a thing not so repainted
    is, with that probability, repainted in a named off-palette hue and labelled by it
    ("pink star"), every shape in every such hue: color and shape shown varying
    independently (:func:`repaint_for_training`)."""

    def __init__(self, vocabulary: Vocabulary, num: int, seed: int, size: int, grey_share: float = 0.0,
                 hue_share: float = 0.0):
        from ..shapes.world import EXTRA_HUES, load_classes
        for key, share in (("shapes_grey_share", grey_share), ("shapes_hue_share", hue_share)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"data.{key} must be within 0-1, got {share}")
        self.drawn = vocabulary.names
        shapes = load_classes().shapes
        extra = list(shapes) if grey_share > 0 else []
        extra += [f"{h} {s}" for h in EXTRA_HUES for s in shapes] if hue_share > 0 else []
        self.vocabulary = Vocabulary(vocabulary.classes + tuple(VocabClass(n, (n,), True) for n in extra))
        self.num, self.seed, self.size = num, seed, size
        self.grey_share, self.hue_share = grey_share, hue_share

    def __len__(self) -> int:
        return self.num

    def load(self, i: int) -> Sample:
        from ..shapes.world import generate_scene, repaint_for_training
        scene = generate_scene(self.seed + i, size=self.size, classes=self.drawn)
        lookup = {n: k for k, n in enumerate(self.vocabulary.names)}
        rng = np.random.default_rng([self.seed + i, 1])     # the scene's own stream stays untouched
        image = scene.image
        index = np.zeros(scene.segment_map.shape, np.int32)
        classes = []
        for seg in scene.segments:
            pixels = scene.segment_map == seg["id"]
            name = seg["class_name"]
            if seg["isthing"]:
                image, name = repaint_for_training(rng, image, pixels, name, self.grey_share, self.hue_share)
            classes.append(lookup[name])
            index[pixels] = len(classes)
        return Sample(image, index, classes, np.zeros(index.shape, bool))


def training_classes(names: Sequence[str], is_thing: Sequence[bool], vocab: Vocabulary,
                     cfg: DataConfig, where: str) -> Tuple[Vocabulary, List[int]]:
    """The training vocabulary (a subset of the dataset's, in its order) and the dataset
    class indices it keeps. Unknown names in the subset keys are errors."""
    known = {n.casefold(): k for k, n in enumerate(names)}
    known.update({c.name.casefold(): k for k, c in enumerate(vocab.classes)})
    for key in ("train_classes", "exclude_classes"):
        unknown = [n for n in getattr(cfg, key) if n.casefold() not in known]
        if unknown:
            raise ValueError(f"{where}: data.{key} names classes the dataset does not have: {unknown[:8]}; "
                             f"its classes are e.g. {list(names)[:8]}")
    chosen = {known[n.casefold()] for n in cfg.train_classes} if cfg.train_classes else set(range(len(names)))
    chosen -= {known[n.casefold()] for n in cfg.exclude_classes}
    keep = sorted(chosen)
    if not keep:
        raise ValueError(f"{where}: the class subset leaves no class to train on")
    return Vocabulary(tuple(vocab.classes[k] for k in keep)), keep


def shapes_vocabulary(cfg: DataConfig, where: str) -> Tuple[Vocabulary, List[int]]:
    """ShapesWorld's seen classes (never its unseen ones), narrowed by the subset keys."""
    from ..shapes.world import load_classes
    world = load_classes()
    vocab = Vocabulary(tuple(VocabClass(n, (n,), t) for n, t in zip(world.names, world.is_thing)))
    unseen = [n for n in cfg.train_classes if n in world.unseen]
    if unseen:
        raise ValueError(f"{where}: data.train_classes names unseen ShapesWorld classes {unseen}; "
                         f"they must never be trained on (ovseg_core/shapes/split.json)")
    cfg_seen = DataConfig(**{**cfg.__dict__, "exclude_classes": list(cfg.exclude_classes) +
                             [n for n in world.unseen if n not in cfg.train_classes]})
    return training_classes(world.names, world.is_thing, vocab, cfg_seen, where)


def build_source(cfg: DataConfig, where: str):
    """The recipe's training data: a generated ShapesWorld or a dataset reader's split."""
    if cfg.dataset == "shapes":
        vocab, _ = shapes_vocabulary(cfg, where)
        return ShapesSource(vocab, cfg.shapes_num_scenes, cfg.shapes_seed, cfg.shapes_size, cfg.shapes_grey_share,
                            cfg.shapes_hue_share)
    from ..datasets import load_dataset
    if not cfg.root:
        raise ValueError(f"{where}: data.root is not set; pass --data-root DIR (the {cfg.dataset} folder)")
    data = load_dataset(cfg.dataset, cfg.root, cfg.split)
    if not data.has_panoptic:
        raise ValueError(f"{where}: {cfg.dataset} has no panoptic ground truth to train on")
    vocab, keep = training_classes(data.names, data.is_thing, data.vocabulary(), cfg, where)
    return PanopticSource(data, vocab, keep)


def large_scale_jitter(sample: Sample, rng: np.random.Generator, crop: int,
                       scale_range: Sequence[float], flip: bool) -> Sample:
    """detectron2's LSJ (ResizeScale + FixedSizeCrop): scale the image so that it fits a
    crop x crop square times s ~ U(scale_range), take a random crop of that size, pad
    what is missing (image grey 128, ground truth void), then flip with p = 0.5."""
    h, w = sample.index.shape
    s = rng.uniform(*scale_range) * min(crop / h, crop / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    image = cv2.resize(sample.image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    index = cv2.resize(sample.index, (nw, nh), interpolation=cv2.INTER_NEAREST)
    ignore = cv2.resize(sample.ignore.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
    y0 = int(rng.integers(0, nh - crop + 1)) if nh > crop else 0
    x0 = int(rng.integers(0, nw - crop + 1)) if nw > crop else 0
    out_image = np.full((crop, crop, 3), 128, np.uint8)
    out_index = np.zeros((crop, crop), np.int32)
    out_ignore = np.zeros((crop, crop), bool)
    ch, cw = min(crop, nh), min(crop, nw)
    out_image[:ch, :cw] = image[y0:y0 + ch, x0:x0 + cw]
    out_index[:ch, :cw] = index[y0:y0 + ch, x0:x0 + cw]
    out_ignore[:ch, :cw] = ignore[y0:y0 + ch, x0:x0 + cw]
    if flip and rng.random() < 0.5:
        out_image, out_index, out_ignore = out_image[:, ::-1], out_index[:, ::-1], out_ignore[:, ::-1]
    return Sample(np.ascontiguousarray(out_image), np.ascontiguousarray(out_index), sample.classes,
                  np.ascontiguousarray(out_ignore))


class TrainingSet(Dataset):
    """Indexed by global sample position; returns one augmented crop as tensors:
    image uint8 [3, S, S], masks bool [N, S, S] (segments still visible), classes [N],
    ignore bool [S, S]."""

    def __init__(self, source, cfg: DataConfig, seed: int):
        self.source, self.cfg, self.seed = source, cfg, seed
        n = len(source)
        used = max(1, int(round(cfg.data_fraction * n)))
        subset = np.random.default_rng([seed, 1]).permutation(n)[:used] if used < n else np.arange(n)
        self.images = np.sort(subset)

    def image_at(self, position: int) -> int:
        epoch, within = divmod(position, len(self.images))
        return int(self.images[np.random.default_rng([self.seed, 2, epoch]).permutation(len(self.images))[within]])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int):
        sample = self.source.load(self.image_at(position))
        rng = np.random.default_rng([self.seed, 3, position])
        sample = large_scale_jitter(sample, rng, self.cfg.crop_size, self.cfg.scale_range, self.cfg.flip)
        present = [j for j in range(1, len(sample.classes) + 1)]
        masks = sample.index[None] == np.asarray(present, np.int32)[:, None, None] if present else \
            np.zeros((0, *sample.index.shape), bool)
        visible = masks.reshape(len(present), -1).any(1) if present else np.zeros(0, bool)
        classes = np.asarray(sample.classes, np.int64)[visible] if present else np.zeros(0, np.int64)
        return {"image": torch.from_numpy(sample.image).permute(2, 0, 1).contiguous(),
                "masks": torch.from_numpy(masks[visible]), "classes": torch.from_numpy(classes),
                "ignore": torch.from_numpy(sample.ignore), "position": position}


class StepSampler(Sampler):
    """Yields, for each step from ``start_step``, this rank's slice of the global batch:
    positions step * global_batch + rank * local_batch + [0, local_batch)."""

    def __init__(self, start_step: int, max_steps: int, global_batch: int, rank: int, world: int):
        if global_batch % world:
            raise ValueError(f"optim.batch_size {global_batch} does not split evenly over {world} processes; "
                             f"use a multiple of {world}")
        self.start, self.stop = start_step, max_steps
        self.global_batch, self.local = global_batch, global_batch // world
        self.offset = rank * self.local

    def __iter__(self) -> Iterator[List[int]]:
        for step in range(self.start, self.stop):
            base = step * self.global_batch + self.offset
            yield list(range(base, base + self.local))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def collate(items: List[dict]) -> dict:
    return {"images": torch.stack([it["image"] for it in items]),
            "masks": [it["masks"] for it in items], "classes": [it["classes"] for it in items],
            "ignore": torch.stack([it["ignore"] for it in items]),
            "positions": [it["position"] for it in items]}
