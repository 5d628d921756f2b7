"""Several 1920x1080 cameras in one batched call vs one call per camera, measured in one run.

For each preset (tiny: random weights; shapes: the ShapesWorld models trained here) and
each camera count N (2 and 4): the time of `segmenter([frame_1, ..., frame_N], vocabulary)`
and of N calls `segmenter(frame_i, vocabulary)` one after the other, on the same frames
(tiny: random pixels; shapes: ShapesWorld scenes drawn at 1920x1080), and their ratio
(sequential / batched; target >= 1.3 for two cameras). The pixels where batched and
one-by-one results differ are counted: the post-processing is exact whatever the threads,
but a batched forward of the models may round differently from a forward of one image
(the shapes Mask2Former's mask logits differ by up to 2e-5), which can move a pixel.

At this resolution almost all of a call is post-processing (the merge and the semantic
map at 1920x1080), which is per image; the batched call post-processes its images side by
side, one torch thread each (`Segmenter._postprocess_batch`), the one-by-one calls each use
all of torch's threads. Times are medians over rounds that call batched and one-by-one
alternately (each ratio within a round; the median and range of the rounds are printed),
after one warm-up of each; the load average is printed.

    .venv/bin/python bench/cameras.py [--presets tiny,shapes] [--cameras 2,4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from ovseg_core.build import build_segmenter

HEIGHT, WIDTH = 1080, 1920
VOCABULARY = "car; person, pedestrian; bicycle; road [stuff]; building [stuff]; sky [stuff]"


def frames(preset: str, count: int):
    if preset == "shapes":
        from ovseg_core.shapes.world import generate_scene, load_classes
        scenes = [generate_scene(seed, size=(HEIGHT, WIDTH), radius=(80, 260)) for seed in range(count)]
        return [s.image for s in scenes], load_classes().vocabulary_text()
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)], VOCABULARY


def differing_pixels(a, b) -> int:
    """Pixels whose segment id or semantic class differ between two lists of results."""
    return sum(int(((x.segment_map != y.segment_map) | (x.semantic_map != y.semantic_map)).sum())
               for x, y in zip(a, b))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,shapes")
    parser.add_argument("--cameras", default="2,4")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.cameras.split(",")]
    print(f"{WIDTH}x{HEIGHT} cameras, cpu, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for preset in args.presets.split(","):
        torch.manual_seed(0)
        segmenter = build_segmenter(preset, device="cpu")
        images, vocabulary = frames(preset, max(counts))
        segmenter.encode_vocabulary(vocabulary)
        for n in counts:
            cams = images[:n]
            batched = segmenter(cams, vocabulary)                 # warm-up, and the check
            alone = [segmenter(im, vocabulary) for im in cams]
            differing = differing_pixels(batched, alone)
            t_batched, t_alone = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                segmenter(cams, vocabulary)
                t_batched.append(time.perf_counter() - start)
                start = time.perf_counter()
                for im in cams:
                    segmenter(im, vocabulary)
                t_alone.append(time.perf_counter() - start)
            ratios = [a / b for a, b in zip(t_alone, t_batched)]
            ratio = statistics.median(ratios)
            verdict = ("PASS" if ratio >= 1.3 else "MISS") if n == 2 else "reported"
            print(f"{preset:6s} {n} cameras: batched {statistics.median(t_batched):.2f} s, one by one "
                  f"{statistics.median(t_alone):.2f} s, ratio {ratio:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}) "
                  f"target >= 1.3: {verdict}; pixels differing from one by one: {differing}", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
