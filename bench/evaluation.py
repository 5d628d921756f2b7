"""PQ evaluation speed: ovseg_core.evaluation.panoptic (vectorised, a process per core)
against the panopticapi-equivalent loop written plainly (ovseg_core.evaluation.reference:
one core, np.unique on uint64 pairs and Python dict loops, as panopticapi's
``pq_compute_single_core``).

Both read the same synthetic COCO-panoptic PNG + JSON files (Mapillary-sized images,
Voronoi segments, crowd regions, void, predictions with jittered boundaries and wrong
classes) and their numbers are checked equal before timing. Prints images/s and the
ratio (target >= 1.5x on 2 cores).

    .venv/bin/python bench/evaluation.py [--images 48] [--height 768] [--width 1024] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from ovseg_core.evaluation.panoptic import PQStat, pq_compute
from ovseg_core.evaluation.reference import reference_pq_compute, write_dataset


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="default: all cores")
    args = p.parse_args()
    workers = args.workers or os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        gt_json, gt_dir, pred_json, pred_dir, cats = write_dataset(tmp, args.images, args.height, args.width)
        names, things = [c["name"] for c in cats], [bool(c["isthing"]) for c in cats]
        ref = reference_pq_compute(gt_json, gt_dir, pred_json, pred_dir)
        ours = pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=workers, progress=False)
        expect = PQStat(len(cats), ref).summary(names, things)
        for group in ("All", "Things", "Stuff"):
            for k in ("pq", "sq", "rq", "n"):
                assert abs(ours[group][k] - expect[group][k]) < 1e-12, (group, k, ours[group], expect[group])
        times = {"reference": [], "ours": []}
        for _ in range(args.rounds):     # round-robin: load from others hits both alike
            t = time.perf_counter()
            reference_pq_compute(gt_json, gt_dir, pred_json, pred_dir)
            times["reference"].append(time.perf_counter() - t)
            t = time.perf_counter()
            pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=workers, progress=False)
            times["ours"].append(time.perf_counter() - t)
    ips = {k: args.images / statistics.median(v) for k, v in times.items()}
    ratio = ips["ours"] / ips["reference"]
    print(f"PQ evaluation, {args.images} images {args.height}x{args.width}, {len(cats)} categories; "
          f"numbers equal to the reference (All PQ {100 * ours['All']['pq']:.2f}); "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  reference loop (1 core)          {ips['reference']:7.2f} images/s")
    print(f"  ovseg_core ({workers} workers)            {ips['ours']:7.2f} images/s")
    print(f"  ratio {ratio:.2f}x   target >= 1.50x   {'PASS' if ratio >= 1.5 else 'MISS'}")


if __name__ == "__main__":
    main()
