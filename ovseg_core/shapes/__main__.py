"""``python -m ovseg_core.shapes``: write ShapesWorld datasets and camera streams.

    python -m ovseg_core.shapes dataset out/shapes/val --num 100 --seed 1000
    python -m ovseg_core.shapes dataset out/shapes/val_variants --num 100 --seed 1000 --layout variants
    python -m ovseg_core.shapes stream out/shapes/stream --frames 40 --seed 7
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Sequence

from PIL import Image
from tqdm import tqdm

from ..panoptic_io import id_to_rgb, write_panoptic_json
from .world import LAYOUT_VARIANTS, LAYOUTS, Scene, camera_pan, describe_layout, layout_scene, load_classes


def write_scenes(out: Path, scenes: Sequence[Scene], names: Sequence[str]) -> None:
    """``out/images/*.png``, ``out/panoptic/*.png`` + ``out/panoptic.json`` (COCO panoptic,
    categories with thing flags and split) and ``out/captions.json`` (COCO captions)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "panoptic").mkdir(parents=True, exist_ok=True)
    images, annotations, captions = [], [], []
    for image_id, (scene, name) in enumerate(zip(scenes, names)):
        Image.fromarray(scene.image).save(out / "images" / f"{name}.png")
        Image.fromarray(id_to_rgb(scene.segment_map)).save(out / "panoptic" / f"{name}.png")
        h, w = scene.segment_map.shape
        images.append({"id": image_id, "file_name": f"{name}.png", "height": h, "width": w, "seed": scene.seed})
        segments = [{k: s[k] for k in ("id", "category_id", "area", "bbox", "iscrowd")} for s in scene.segments]
        annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments})
        captions.append({"id": image_id, "image_id": image_id, "caption": scene.caption})
    write_panoptic_json(str(out / "panoptic.json"), images, annotations, load_classes().categories())
    with open(out / "captions.json", "w") as f:
        json.dump({"images": images, "annotations": captions}, f)


def write_stream(out: Path, frames: int, seed: int, size: int = 128) -> List[Path]:
    """A camera panning across one wide scene: ``out/images/frame_NNNN.png`` (+ ground
    truth as in :func:`write_scenes`). Returns the image paths in stream order."""
    scenes = camera_pan(seed, frames, size=size)
    names = [f"frame_{i:04d}" for i in range(frames)]
    write_scenes(out, scenes, names)
    return [out / "images" / f"{n}.png" for n in names]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ovseg_core.shapes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dataset", help="N independent scenes with panoptic ground truth and captions")
    d.add_argument("out", type=Path)
    d.add_argument("--num", type=int, default=100)
    d.add_argument("--seed", type=int, default=0, help="scene i has seed SEED + i")
    d.add_argument("--size", type=int, help="square scenes of SIZE px (default 128); standard layout only")
    d.add_argument("--split", choices=["all", "seen"], default="all",
                   help="'seen': only classes that segmentation training may use")
    d.add_argument("--layout", choices=LAYOUTS, default="standard",
                   help=f"'variants': scene i gets layout variant (SEED + i) mod {len(LAYOUT_VARIANTS)}, for "
                   "evaluation only (never train on it): " + "; ".join(describe_layout(v) for v in LAYOUT_VARIANTS))
    s = sub.add_parser("stream", help="N frames of a camera panning over one wide scene")
    s.add_argument("out", type=Path)
    s.add_argument("--frames", type=int, default=40)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128)
    c = sub.add_parser("classes", help="print the classes with their split, or a vocabulary string")
    c.add_argument("--vocab", choices=["all", "seen", "unseen"], help="print an --vocab string instead")
    args = p.parse_args(argv)
    world = load_classes()
    if args.command == "classes":
        if args.vocab:
            names = {"all": world.names, "seen": world.seen(world.names), "unseen": world.unseen_of(world.names)}
            print(world.vocabulary_text(names[args.vocab]))
        else:
            for name, thing in zip(world.names, world.is_thing):
                print(f"{name:18s} {'thing' if thing else 'stuff'} {'unseen' if name in world.unseen else 'seen'}")
        return 0
    if getattr(args, "num", 1) < 1 or getattr(args, "frames", 1) < 1:
        p.error("the number of images must be at least 1")
    if args.command == "dataset" and args.layout == "variants" and args.size is not None:
        p.error("--size is for the standard layout; each layout variant has its own size")
    args.size = 128 if args.size is None else args.size
    if args.size < 32:
        p.error("--size must be at least 32 pixels")
    if args.command == "dataset":
        classes = world.seen(world.names) if args.split == "seen" else None
        scenes = [layout_scene(args.seed + i, args.layout, size=args.size, classes=classes)
                  for i in tqdm(range(args.num), desc="scenes", file=sys.stderr)]
        write_scenes(args.out, scenes, [f"{args.seed + i:08d}" for i in range(args.num)])
    else:
        write_stream(args.out, args.frames, args.seed, args.size)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
