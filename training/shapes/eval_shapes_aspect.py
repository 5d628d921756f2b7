"""Squashed vs aspect-preserving inputs on non-square ShapesWorld scenes (issue 15).

Runs ``eval_shapes.evaluate_segmenter`` (PQ / mIoU with predicted and oracle masks) on the
same fresh scenes of HEIGHT x WIDTH once per resize mode (``clip.resize`` and
``proposals.resize`` set together) and prints one row per mode:

    .venv/bin/python training/shapes/eval_shapes_aspect.py --num 100 --seed 100000 --height 120 --width 160
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


from ovseg_core.shapes.evaluate import class_groups, evaluate_segmenter
from ovseg_core.build import build_segmenter
from ovseg_core.resize import RESIZE_MODES
from ovseg_core.shapes import generate_scene, load_classes
from ovseg_core.vocabulary import Vocabulary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="shapes")
    p.add_argument("--num", type=int, default=100, help="fresh scenes")
    p.add_argument("--seed", type=int, default=100_000, help="scene i has seed SEED + i")
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--input-size", type=int, help="both stages' input size instead of the preset's")
    p.add_argument("--modes", nargs="+", default=list(RESIZE_MODES), choices=RESIZE_MODES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="out/shapes/eval_aspect.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    world = load_classes()
    vocab = Vocabulary.parse(world.vocabulary_text())
    groups = class_groups(world, vocab)
    stuff = [n for n in vocab.names if n not in world.things]
    groups.update({n: [vocab.names.index(n)] for n in stuff})     # PQ per stuff class
    scenes = [generate_scene(args.seed + i, size=(args.height, args.width)) for i in range(args.num)]
    report = {}
    for mode in args.modes:
        overrides = {"clip.resize": mode, "proposals.resize": mode}
        if args.input_size:
            overrides.update({"clip.input_size": args.input_size, "proposals.input_size": args.input_size})
        start = time.time()
        segmenter = build_segmenter(args.preset, device="cpu", overrides=overrides)
        report[mode] = evaluate_segmenter(segmenter, scenes, vocab, groups, seed=args.seed)
        report[mode]["seconds"] = round(time.time() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    size = args.input_size or "the preset's"
    print(f"preset {args.preset}, {args.num} scenes {args.height}x{args.width} (seeds {args.seed}...), "
          f"input size {size}, vocabulary: all 44 classes")
    print(f"{'resize':13s} {'masks':16s} {'PQ':>6s} {'things':>6s} {'stuff':>6s} {'mIoU':>6s}   stuff PQ per class")
    for mode in args.modes:
        for masks in ("predicted masks", "oracle masks"):
            r = report[mode][masks]
            per = ", ".join(f"{n} {r[n]['PQ']:.1f}" for n in stuff if r[n]["classes"])
            print(f"{mode:13s} {masks:16s} {r['all']['PQ']:6.1f} {r['things']['PQ']:6.1f} "
                  f"{r['stuff']['PQ']:6.1f} {r['all']['mIoU']:6.1f}   {per}")
    for mode in args.modes:
        print(f"oracle segment accuracy, {mode}: " + ", ".join(
            f"{k} {v:.1f}%" for k, v in report[mode]["oracle segment accuracy"].items()))


if __name__ == "__main__":
    main()
