"""Cost of the 3D outputs per camera frame: `backproject` (dense and organized) and
`objects_3d`, at 640x480 and 1920x1080, stride 1 and 2, on the CPU; and the bytes of the
PointCloud2 each cloud becomes (POINT_STEP = 24 bytes a point: x, y, z, rgba, label,
instance).

The frame is a ShapesWorld scene at that size (things of 3-17% of the width, 2% depth
holes, flying pixels on every border), its depth rendered with `render_depth`; all its
things go to `objects_3d`. The camera's rays are cached per camera and stride, so the
first frame pays for them once: printed apart ("rays, once"), with plumb-bob distortion,
the costly case. Times are medians over --repeats rounds, the load average is printed.

The share of the pipeline: the same frame through `segmenter([image], vocabulary)` of
--preset (default vitb16_swint, random weights, built offline; the ShapesWorld classes as
vocabulary), timed in the same run (--pipeline-repeats rounds); the 3D outputs' share
(backproject + objects_3d) is printed against the goal of <= 5% at stride 1.
--preset none skips it.

    .venv/bin/python bench/geometry.py [--repeats 20] [--sizes 480x640,1080x1920] [--preset tiny]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from ovseg_core.geometry import PinholeCamera, backproject, objects_3d
from ovseg_core.shapes import generate_scene
from ovseg_core.shapes.world import render_depth


def frame(h: int, w: int):
    scene = generate_scene(0, size=(h, w), radius=(w / 30, w / 12), num_things=(12, 12))
    depth, camera, _ = render_depth(scene, holes=0.02, mixed_borders=True)
    things = [s for s in scene.segments if s["isthing"]]
    return scene, depth, camera, [s["id"] for s in things], [s["category_id"] - 1 for s in things]


def median_ms(fn, repeats: int) -> float:
    fn()                                                     # warm: caches, allocator
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--sizes", default="480x640,1080x1920", help="HxW, comma-separated")
    p.add_argument("--preset", default="vitb16_swint", help="the pipeline to compare with; none: skip it")
    p.add_argument("--pipeline-repeats", type=int, default=3)
    args = p.parse_args()
    segmenter = None if args.preset == "none" else pipeline(args.preset)
    vocabulary = None
    if segmenter is not None:
        from ovseg_core.shapes import load_classes
        from ovseg_core.vocabulary import Vocabulary
        vocabulary = Vocabulary.parse(load_classes().vocabulary_text())
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; median of {args.repeats} runs")
    print(f"{'frame (WxH)':>12} {'stride':>6} {'points':>9} {'backproject':>12} {'organized':>10} "
          f"{'objects_3d':>11} {'both':>8} {'cloud MB':>9} {'organized MB':>13} {'objects':>8}")
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        scene, depth, camera, ids, classes = frame(h, w)
        labels, segments = scene.semantic_map(), scene.segment_map
        for stride in (1, 2):
            def dense():
                return backproject(depth, camera, scene.image, labels, segments, segments, stride=stride)

            def organized():
                return backproject(depth, camera, scene.image, labels, segments, segments, stride=stride,
                                   organized=True)

            def objects():
                return objects_3d(depth, camera, segments, ids, classes, stride=stride)

            t_dense, t_org, t_obj = (median_ms(f, args.repeats) for f in (dense, organized, objects))
            if stride == 1:
                t_3d = t_dense + t_obj
            cloud, full = dense(), organized()
            print(f"{w:>5}x{h:<6} {stride:>6} {len(cloud):>9,} {t_dense:>9.1f} ms {t_org:>7.1f} ms "
                  f"{t_obj:>8.1f} ms {t_dense + t_obj:>5.1f} ms {cloud.nbytes / 1e6:>9.2f} "
                  f"{full.nbytes / 1e6:>13.2f} {len(objects()):>8}")
        distorted = PinholeCamera(w, h, camera.fx, camera.fy, camera.cx, camera.cy, (-0.28, 0.07, 1e-3, -5e-4, 0.0))
        t0 = time.perf_counter()
        distorted.rays(1)
        print(f"{w:>5}x{h:<6} rays, once (plumb-bob, stride 1): {1000 * (time.perf_counter() - t0):.1f} ms")
        if segmenter is not None:
            t_pipe = median_ms(lambda: segmenter([scene.image], vocabulary), args.pipeline_repeats)
            share = t_3d / t_pipe
            print(f"{w:>5}x{h:<6} pipeline ({args.preset}) {t_pipe:,.0f} ms; 3D outputs at stride 1 "
                  f"{t_3d:.1f} ms = {100 * share:.2f}% of it (goal <= 5%: {'PASS' if share <= 0.05 else 'MISS'})")


def pipeline(preset: str):
    """``preset`` with random weights, on the CPU (timing does not depend on the values)."""
    import logging
    import warnings

    import torch

    from ovseg_core.build import build_segmenter
    warnings.filterwarnings("ignore", message=".*No pretrained weights.*")
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    return build_segmenter(preset, device="cpu", overrides={"clip.pretrained": None, "proposals.pretrained": None})


if __name__ == "__main__":
    main()
