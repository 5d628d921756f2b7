"""The unseen-thing probe: scenes that each hold one unseen thing, and whether the segmenter
finds it and names it. A rate over many scenes, not one fixed scene, is what a test or a
published number may rest on (training/shapes/eval_shapes.py reports it;
test/test_shapes_models.py asserts it on other seeds)."""
from __future__ import annotations

from typing import Iterable, List, Tuple

import numpy as np

from .world import Scene, generate_scene, load_classes


def unseen_thing_scene(seed: int) -> Tuple[Scene, str]:
    """One unseen thing (the six take turns: ``seed`` mod 6), two seen things and two
    stuff classes, drawn from ``seed``; returns the scene and the unseen thing's name."""
    world = load_classes()
    unseen = sorted(t for t in world.things if t in world.unseen)
    target = unseen[seed % len(unseen)]
    rng = np.random.default_rng([seed, 13])
    seen = [t for t in world.things if t not in world.unseen]
    things = [target] + [str(t) for t in rng.choice(seen, 2, replace=False)]
    stuff = [str(s) for s in rng.choice(world.stuff, 2, replace=False)]
    return generate_scene(seed, size=128, things=things, stuff=stuff, radius=(14, 24)), target


def probe(segmenter, seeds: Iterable[int], vocabulary=None) -> List[dict]:
    """Per scene: the unseen thing, the label of the predicted segment that overlaps it
    most (None when no segment touches it) and that segment's IoU with it. A hit is the
    right label at IoU > 0.5, PQ's true positive."""
    world = load_classes()
    vocabulary = vocabulary or world.vocabulary_text()
    records = []
    for seed in seeds:
        scene, target = unseen_thing_scene(seed)
        truth = scene.segment_map == scene.segment_of(target)["id"]
        result = segmenter(scene.image, vocabulary)
        overlaps = {s.id: int((result.segment_map[truth] == s.id).sum()) for s in result.segments}
        best = max(result.segments, key=lambda s: overlaps[s.id], default=None)
        if best is None or overlaps[best.id] == 0:
            records.append({"seed": seed, "thing": target, "label": None, "iou": 0.0})
            continue
        mask = result.segment_map == best.id
        iou = float((mask & truth).sum() / max(1, (mask | truth).sum()))
        records.append({"seed": seed, "thing": target, "label": best.class_name, "iou": iou})
    return records


def summarize(records: List[dict]) -> dict:
    """Hit rate (right label, IoU > 0.5), found rate (IoU > 0.5), right color / shape among
    the found, and the chance hit rate: found x 1 / (number of things)."""
    world = load_classes()
    found = [r for r in records if r["iou"] > 0.5]
    n = max(1, len(records))
    hits = sum(r["label"] == r["thing"] for r in found)
    half = lambda r, i: r["label"] is not None and r["label"].split(" ")[i] == r["thing"].split(" ")[i]  # noqa: E731
    return {"scenes": len(records), "hits": hits, "hit rate": hits / n, "found rate": len(found) / n,
            "color right of found": float(np.mean([half(r, 0) for r in found])) if found else float("nan"),
            "shape right of found": float(np.mean([half(r, -1) for r in found])) if found else float("nan"),
            "chance hit rate": len(found) / n / len(world.things)}
