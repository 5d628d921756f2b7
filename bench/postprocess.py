"""Post-processing (panoptic merge + semantic map) of one camera frame, new vs reference.

One 1920x1080 image, 100 proposals given at Mask2Former's 1/4 resolution (480x270),
a 20-class vocabulary (16 things, 4 stuff). Prints, measured in one run:

  time       `postprocess` (banded, at the proposals' resolution) and `reference_postprocess`
             (every proposal resized to the image first, the merge as it was); target: new <= 1 s
             on this 2-core CPU, and their ratio; again with 1 torch thread (on a shared
             machine torch's threads wait on each other, 1 thread shows the work itself)
  memory     peak added by one call above what the process held before it (the inputs, the
             model): RSS high-water mark on the CPU (plus tracemalloc's peak, which sees numpy
             but not torch's allocator), `torch.cuda.max_memory_allocated` on CUDA; each
             method in a fresh process so that one's peak cannot hide the other's;
             target: new <= 200 MB
  identical  segment map, segments and semantic map of the two, compared bit for bit

The proposals are 100 rotated ellipses of 0.03% to 1% of the image (logit +8 at the centre,
0 on the rim, falling on outside), 80 of them with a class score above the 0.8 object
threshold (66 segments survive the merge).
Times are medians of round-robin rounds (numerator and denominator alike see the load of a
shared machine); the load average is printed.

    .venv/bin/python bench/postprocess.py [--repeats 3] [--device cuda] [--size 1080x1920]
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import statistics
import time
import tracemalloc

import numpy as np
import torch

QUERIES, KEPT, CLASSES = 100, 80, 20


def proposals(height: int, width: int, seed: int = 0):
    """Class probabilities [Q, K + 1] and mask logits [Q, h, w] at 1/4 of the image."""
    g = torch.Generator().manual_seed(seed)
    h, w = math.ceil(height / 4), math.ceil(width / 4)
    ys = torch.linspace(0, 1, h)[:, None]
    xs = torch.linspace(0, 1, w)[None, :]
    u = torch.rand(QUERIES, 5, generator=g)
    area = torch.exp(math.log(0.0003) + u[:, 0] * (math.log(0.01) - math.log(0.0003)))
    aspect = torch.exp((u[:, 1] - 0.5) * 2 * math.log(3))
    ry, rx = torch.sqrt(area * aspect / math.pi), torch.sqrt(area / aspect / math.pi) * h / w
    masks = []
    for i in range(QUERIES):
        dy, dx = ys - u[i, 2], xs - u[i, 3]
        c, s = math.cos(u[i, 4] * math.pi), math.sin(u[i, 4] * math.pi)
        a, b = (c * dx + s * dy) / rx[i], (-s * dx + c * dy) / ry[i]
        masks.append(8.0 * (1.0 - (a * a + b * b).sqrt()))
    logits = torch.randn(QUERIES, CLASSES + 1, generator=g)
    top = logits[:, :CLASSES].argmax(-1)
    logits[torch.arange(QUERIES), top] += torch.where(torch.arange(QUERIES) < KEPT, 8.0, 1.0)
    return logits.softmax(-1), torch.stack(masks)


def _call(which: str, probs, masks, size):
    from ovseg_core.postprocess import postprocess, reference_postprocess
    fn = postprocess if which == "new" else reference_postprocess
    names = [f"class {i}" for i in range(CLASSES)]
    return fn(probs, masks, (1.0, 1.0), size, names, [i < CLASSES - 4 for i in range(CLASSES)])   # 4 stuff classes


def _status_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process (the high-water mark of its own address space: unlike
    getrusage's ru_maxrss it does not inherit the parent's peak across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _memory_child(which: str, size, device: str, queue) -> None:
    """In a fresh process: peak memory one call adds (bytes) by RSS, tracemalloc, CUDA."""
    probs, masks = proposals(*size)
    probs, masks = probs.to(device), masks.to(device)
    _call(which, probs[:4], masks[:4, :40, :40], (160, 160))      # load the kernels first
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:      # reset VmHWM to the current RSS
        f.write("5")
    before = _status_bytes("VmRSS")
    tracemalloc.start()
    _call(which, probs, masks, size)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = _status_bytes("VmHWM")
    cuda = torch.cuda.max_memory_allocated() - cuda_before if device.startswith("cuda") else None
    queue.put((max(0, peak - before), traced, cuda))


def peak_memory(which: str, size, device: str):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(which, size, device, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="1080x1920", help="image HxW")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    probs, masks = proposals(*size)
    probs, masks = probs.to(args.device), masks.to(args.device)
    print(f"image {size[0]}x{size[1]}, {QUERIES} proposals at {masks.shape[1]}x{masks.shape[2]}, {CLASSES} classes, "
          f"device {args.device}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")

    mem = {which: peak_memory(which, size, args.device) for which in ("new", "reference")}
    new, ref = _call("new", probs, masks, size), _call("reference", probs, masks, size)
    identical = (np.array_equal(new[0], ref[0]) and new[1] == ref[1] and np.array_equal(new[2], ref[2]))
    print(f"identical: {identical} ({len(ref[1])} segments)")

    threads = torch.get_num_threads()
    for label, count in ((f"{threads} threads", threads), ("1 thread", 1)):
        if args.device.startswith("cuda") and count != threads:
            continue
        torch.set_num_threads(count)     # 1 thread: the CPU work itself, whatever else loads the cores
        times = {"new": [], "reference": []}
        for _ in range(args.repeats):
            for which in times:
                sync(args.device)
                start = time.perf_counter()
                _call(which, probs, masks, size)
                sync(args.device)
                times[which].append(time.perf_counter() - start)
        ratios = [r / n for r, n in zip(times["reference"], times["new"])]
        t_new, t_ref = statistics.median(times["new"]), statistics.median(times["reference"])
        print(f"time ({label}): new {t_new:.3f} s, reference {t_ref:.3f} s, reference / new "
              f"{statistics.median(ratios):.1f}x (rounds {min(ratios):.1f}-{max(ratios):.1f})"
              + (f"; target new <= 1 s: {'PASS' if t_new <= 1 else 'MISS'}" if count == threads else ""), flush=True)
    torch.set_num_threads(threads)

    for which, (rss, traced, cuda) in mem.items():
        cuda_txt = f", CUDA max allocated {cuda / 2**20:.0f} MB" if cuda is not None else ""
        print(f"memory {which}: peak RSS +{rss / 2**20:.0f} MB, tracemalloc peak {traced / 2**20:.1f} MB{cuda_txt}")
    key = 2 if args.device.startswith("cuda") else 0
    added = mem["new"][key]
    print(f"memory reference / new {mem['reference'][key] / max(added, 1):.1f}x; "
          f"target new <= 200 MB: {'PASS' if added <= 200 * 2**20 else 'MISS'}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
