"""``ovseg-bag`` throughput against the pipeline on the same frames in memory.

Prints, measured in one run, the ratio

    (frames/s of ``ovseg_ros.bag.process_bag`` on a bag) / (frames/s of
    ``segmenter(frames, vocabulary)`` on the already decoded frames, same batches)

with the target >= 0.9. The bag run includes everything the tool does per frame:
reading and decoding the messages, the results' serialization, the per-batch commit to
the resume state, copying every input message to the output bag and the final rename.
The segmenter is built once and shared (model building is not part of frames/s).

The bag holds N raw rgb8 frames (random pixels; timing does not depend on the values)
of H x W on one topic, written in the storage under test. The in-memory reference runs
interleaved with the tool, batch by batch, on the frames the tool has just decoded (see
``Interleaved``), so that background load on a shared machine hits both alike; each
round is one whole ``process_bag`` run, the first a warm-up, and the median ratio over
rounds is reported with its range. The info column is the tool's time per frame
outside the segmenter (reading, decoding, serializing, committing, writing).

    .venv/bin/python bench/bag.py                       # tiny preset, 480x640, 48 frames, sqlite3 and mcap
    .venv/bin/python bench/bag.py --preset vitb16_swint --random-weights --frames 8
    .venv/bin/python bench/bag.py --device cuda --preset vitb16_swint --random-weights
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ovseg_ros.bag import process_bag
from ovseg_ros.interfaces import rosbags_typestore

TARGET = 0.9
TOPIC = "/camera/image_raw"
VOCABULARY = "car; person; bicycle; road [stuff]; sidewalk [stuff]; building [stuff]; sky [stuff]; tree"


def write_bag(path: Path, storage: str, frames: list) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = rosbags_typestore()
    t = ts.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conn = w.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
        for i, image in enumerate(frames):
            ns = 1_700_000_000_000_000_000 + i * 50_000_000
            header = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id="camera")
            h, w_ = image.shape[:2]
            msg = t["sensor_msgs/msg/Image"](header=header, height=h, width=w_, encoding="rgb8", is_bigendian=0,
                                             step=w_ * 3, data=image.ravel())
            w.write(conn, ns, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Interleaved:
    """Stands in for the segmenter inside ``process_bag``. Each batch the tool asks for is
    segmented for the tool, and, right before or after (alternating), once more as the
    in-memory reference on the very same decoded frames; the reference calls are timed
    and taken out of the tool's time. Both measurements thus share every second of
    background load (this machine is shared), batch by batch."""

    def __init__(self, segmenter):
        self.segmenter = segmenter
        self.reference = 0.0        # seconds of the in-memory reference calls
        self.inside = 0.0           # seconds of the tool's own segmenter calls
        self.calls = 0

    def timed(self, images, vocabulary, version) -> tuple:
        start = time.perf_counter()
        out = self.segmenter(images, vocabulary, vocabulary_version=version)
        sync(self.segmenter.device)
        return out, time.perf_counter() - start

    def __call__(self, images, vocabulary, vocabulary_version=None):
        reference_first = self.calls % 2 == 0
        self.calls += 1
        if reference_first:
            self.reference += self.timed(images, vocabulary, vocabulary_version)[1]
        out, seconds = self.timed(images, vocabulary, vocabulary_version)
        self.inside += seconds
        if not reference_first:
            self.reference += self.timed(images, vocabulary, vocabulary_version)[1]
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--random-weights", action="store_true", help="build the preset without pretrained weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--storage", nargs="+", default=["sqlite3", "mcap"], choices=["sqlite3", "mcap"])
    args = p.parse_args()
    warnings.filterwarnings("ignore")

    from ovseg_core.build import build_segmenter
    overrides = {"clip.pretrained": None, "proposals.pretrained": None} if args.random_weights else {}
    torch.manual_seed(0)
    segmenter = build_segmenter(args.preset, device=args.device, overrides=overrides)
    rng = np.random.default_rng(0)
    h, w = args.size
    frames = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(args.frames)]
    work = Path(tempfile.mkdtemp(prefix="ovseg-bench-bag-"))
    print(f"preset {args.preset} on {segmenter.device}, {len(frames)} frames of {h}x{w}, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rows = []
    try:
        for storage in args.storage:
            src = work / f"in-{storage}"
            write_bag(src, storage, frames)
            rounds = []
            for i in range(args.rounds + 1):         # the first is a warm-up
                dst = work / f"out-{storage}-{i}"
                stand_in = Interleaved(segmenter)
                start = time.perf_counter()
                summary = process_bag(src, dst, stand_in, [TOPIC], VOCABULARY, vocab_topics=[],
                                      batch_size=args.batch_size, progress=False)
                sync(segmenter.device)
                tool = time.perf_counter() - start - stand_in.reference
                shutil.rmtree(dst)
                n = summary.frames
                rounds.append((n / tool, n / stand_in.reference, stand_in.reference / tool,
                               1000 * (tool - stand_in.inside) / n))
                log(f"{storage} round {i}: ovseg-bag {n / tool:.2f} fps, in memory {n / stand_in.reference:.2f} fps"
                    f"{' (warm-up)' if i == 0 else ''}")
            rounds = rounds[1:]
            ratios = [r[2] for r in rounds]
            rows.append((storage, statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds),
                         statistics.median(ratios), min(ratios), max(ratios),
                         statistics.median(r[3] for r in rounds)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'storage':<8} {'ovseg-bag fps':>14} {'in-memory fps':>14} {'ratio':>6} {'range':>11} {'target':>7}  "
          f"result  (info) tool ms/frame outside the model")
    for storage, bag_fps, mem_fps, ratio, low, high, overhead in rows:
        print(f"{storage:<8} {bag_fps:>14.2f} {mem_fps:>14.2f} {ratio:>6.3f} {low:>5.3f}-{high:<5.3f} "
              f"{'>= ' + str(TARGET):>7}  {'PASS' if ratio >= TARGET else 'MISS':<6}  {overhead:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
