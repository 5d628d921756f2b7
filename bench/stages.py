"""Where a frame's time goes in the library, stage by stage (the breakdown `ovseg segment
--profile` prints), to compare with the node's own per-stage numbers.

For each preset (tiny: random weights; shapes: the ShapesWorld models) and each frame size,
N frames (one camera, one call per frame, after a warm-up call) are segmented and the
median and 95th percentile of each stage are printed: preprocess (conversion, resizing for
both models), vocabulary (cached text embeddings), proposals (Mask2Former), classifier
(CLIP mask classification), merge (panoptic merge + semantic map). On CUDA the stages are
timed with CUDA events (`ovseg_core.profiling.StageTimer`).

    .venv/bin/python bench/stages.py [--presets tiny,shapes] [--sizes 480x640,1080x1920] [--frames 5]
        [--device cuda]
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from ovseg_core.build import build_segmenter
from ovseg_core.profiling import stage_table

VOCABULARY = "car; person, pedestrian; bicycle; road [stuff]; building [stuff]; sky [stuff]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,shapes")
    parser.add_argument("--sizes", default="480x640,1080x1920", help="frame sizes HxW")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(f"device {args.device}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for preset in args.presets.split(","):
        torch.manual_seed(0)
        segmenter = build_segmenter(preset, device=args.device)
        vocabulary = VOCABULARY
        if preset == "shapes":
            from ovseg_core.shapes.world import load_classes
            vocabulary = load_classes().vocabulary_text()
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.split("x"))
            rng = np.random.default_rng(0)
            images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.frames + 1)]
            timings = []
            for image in images:
                segmenter(image, vocabulary)
                timings.append(segmenter.last_timings)
            print(f"\n{preset}, {w}x{h}, {args.frames} frames after a warm-up:")
            print(stage_table(timings[1:]))
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
