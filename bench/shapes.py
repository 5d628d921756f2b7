"""SMART's inference cost on the ShapesWorld preset (``shapes``, issue 13): how much the
new modules cost at inference against the frozen mask-attention baseline, on the shipped
weights (``weights/shapes``: tiny CLIP ViT 4x128 at 128 px, Mask2Former with 24 queries).

Variants (all built from ``config/presets/shapes.yaml`` with dotted overrides):

  frozen        the preset as is: frozen mask attention (MaskCLIP), the baseline
  smart         SMART: SMA in the last block + 2-layer Distribution Adapter + learned void
                (query-projection tuning, as config/train/shapes_smart.yaml)
  sma_all       SMA in all 4 blocks (alone)
  adapter       the Distribution Adapter alone (2 layers)
  mask_pooling  FC-CLIP's mask pooling (one plain CLIP forward, features pooled per mask)
  mask_adapter  Mask-Adapter (adapter_hidden 64)
  proposals_128 the preset's classifier with Mask2Former fed at 128 px instead of the
                preset's 192 (issue 13, section 3): what the larger input costs, in (b)
  no_split      the preset's proposals not split into connected parts
                (``inference.split_components``): what the split costs, in (b)

SMART's, SMA's, the adapters' and the learned void's new modules are at their random
initialisation (no trained delta is loaded): timing does not depend on their values.
Everything else is the shipped weights.

Measured, on ShapesWorld scenes (``generate_scene(seed + i, size)``) with all 44 classes
as the vocabulary (encoded once, before any timing):

  (a) the classifier call alone, at batch 1 and batch B (default 8): the same image batch
      and the same Mask2Former proposals (computed once, by the frozen preset's
      Mask2Former) for every variant;
  (b) the whole ``segmenter(image, vocabulary)`` call on one image (Mask2Former, the
      classifier, the panoptic merge); round r uses scene r mod B for every variant.

Timing: inference mode, warm-up calls first, then rounds in which every variant is timed
once (the order rotates from round to round); one timed sample of (a) is ``calls``
back-to-back calls (calibrated once on the baseline so that a sample lasts about
``--sample-ms``), one of (b) is one call, in twice as many rounds. Times are medians over
the rounds; each variant's ratio to the frozen baseline is taken within a round and the
median (with its range) over the rounds is reported, so that background load on a shared
machine hits both alike. On the CPU every sample is also read as this process's CPU time
(``time.process_time``, all its threads) in a second table: it leaves out the time the
process waits while other processes hold the cores (on the shared 2-core machine it read
within a few % of the wall clock, so the noise there is contention for the cores' caches
and memory, not waiting). The torch thread count (left at its default unless --threads)
and the load average are printed at the start and the end.

    .venv/bin/python bench/shapes.py --threads 1     # ~1.5 min on the shared 2-core CPU
    .venv/bin/python bench/shapes.py                 # torch's default thread count
    .venv/bin/python bench/shapes.py --device cuda
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

import torch

from ovseg_core.shapes.variants import (BASELINE, PRESET, VARIANTS, build_variants, classifier_call,
                                        new_parameter_count)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def time_rounds(fns: Dict[str, Callable[[], object]], rounds: int, calls: int, device: torch.device,
                label: str, before_round: Callable[[int], None] = None) -> Dict[str, Dict[str, List[float]]]:
    """``rounds`` rounds in which every function is timed once (``calls`` back-to-back
    calls); the order rotates each round; ``before_round(r)`` runs untimed before round r.
    -> {"wall": {name: seconds per call}, "cpu": {name: this process's CPU seconds per
    call (all its threads; time spent descheduled by other processes does not count)}}."""
    names = list(fns)
    wall: Dict[str, List[float]] = {n: [] for n in names}
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        if before_round is not None:
            before_round(r)
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fns[name]()
            sync(device)
            wall[name].append((time.perf_counter() - t0) / calls)
            cpu[name].append((time.process_time() - c0) / calls)
        log(f"  {label} round {r + 1}/{rounds} (wall / cpu ms): " +
            ", ".join(f"{n} {wall[n][-1] * 1e3:.1f}/{cpu[n][-1] * 1e3:.1f}" for n in names))
    return {"wall": wall, "cpu": cpu}


def calibrate(fn: Callable[[], object], sample_s: float, device: torch.device) -> int:
    """Calls per timed sample so that one sample lasts about ``sample_s``."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return max(1, round(sample_s / max(time.perf_counter() - t0, 1e-6)))


def summarize(times: Dict[str, List[float]]) -> Dict[str, tuple]:
    """name -> (median seconds, median ratio to the baseline, min ratio, max ratio); ratios
    taken within each round."""
    base = times[BASELINE]
    out = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, base)]
        out[name] = (statistics.median(t), statistics.median(ratios), min(ratios), max(ratios))
    return out


def print_table(table: Dict[str, Dict[str, tuple]], names: Sequence[str], segmenters, title: str) -> None:
    cols = list(table)
    head1 = f"{'variant':<14} {'what':<37} {'new params':>10}" + "".join(f" | {c:^27}" for c in cols)
    head2 = f"{'':<14} {'':<37} {'':>10}" + "".join(f" | {'ms':>7} {'ratio':>6} {'range':>11} " for _ in cols)
    print(f"-- {title}")
    print(head1)
    print(head2)
    print("-" * len(head1))
    for n in names:
        row = f"{n:<14} {VARIANTS[n][0]:<37} {new_parameter_count(segmenters[n]):>10,}"
        for c in cols:
            ms, ratio, lo, hi = table[c][n]
            row += f" | {ms * 1e3:>7.2f} {ratio:>6.2f} {f'{lo:.2f}-{hi:.2f}':>11} "
        print(row)


def main(argv: Sequence[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="variants to time (the frozen baseline is always added)")
    ap.add_argument("--batch", type=int, default=8,
                    help="scenes: the batch of (a), the images of (b) (default 8)")
    ap.add_argument("--size", type=int, default=128, help="scene size in px (default 128, the preset's)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timed rounds of (a) (default 15; cuda 30); (b) gets twice as many")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls per function (default 2; cuda 5)")
    ap.add_argument("--sample-ms", type=float, default=None,
                    help="target length of one timed sample of (a), in ms (default 150; cuda 20)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--seed", type=int, default=0, help="scene i is generate_scene(seed + i) (default 0)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda asked for but CUDA is not available")
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (30 if cuda else 15)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    sample_s = (args.sample_ms or (20 if cuda else 150)) / 1e3
    names = [BASELINE] + [n for n in args.variants if n != BASELINE]

    from ovseg_core.segmenter import image_to_tensor
    from ovseg_core.shapes.world import generate_scene, load_classes
    from ovseg_core.structures import MaskProposals
    from ovseg_core.text import EmbeddingCache
    from ovseg_core.vocabulary import Vocabulary

    load_start = load_average()
    log(f"{PRESET} on {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{load_start:.2f}; variants {names}; batch {args.batch}, {rounds} rounds ((b): {2 * rounds}), "
        f"warm-up {warmup}")
    torch.manual_seed(args.seed)
    with contextlib.suppress(Exception):  # transformers' per-build "Loading weights" bars
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    segmenters = build_variants(names, str(device), EmbeddingCache())  # one cache: the text is encoded once
    log(f"built {len(names)} variants in {time.perf_counter() - t0:.1f} s")
    vocab = Vocabulary.parse(load_classes().vocabulary_text())
    scenes = [generate_scene(args.seed + i, size=args.size) for i in range(args.batch)]
    images = [s.image for s in scenes]
    tensors = [image_to_tensor(im, device) for im in images]
    base = segmenters[BASELINE]

    tables = {"wall": {}, "cpu": {}}
    with torch.inference_mode():
        t0 = time.perf_counter()
        for seg in segmenters.values():
            seg.encode_vocabulary(vocab)
        log(f"vocabulary ({len(vocab)} classes) ready in {time.perf_counter() - t0:.1f} s")
        # The proposals, once, from the baseline (every variant has the same ones).
        layout = base.layout(tensors)
        proposals = base.propose(layout)
        one = MaskProposals(proposals.masks[:1], proposals.objectness[:1])
        num_queries = proposals.masks.shape[1]      # after the connected-part split: the batch's most

        for label, batch, props in (("(a) batch 1", tensors[:1], one),
                                    (f"(a) batch {args.batch}", tensors, proposals)):
            fns = {n: classifier_call(s, batch, props, vocab) for n, s in segmenters.items()}
            for fn in fns.values():
                for _ in range(warmup):
                    fn()
            calls = calibrate(fns[BASELINE], sample_s, device)
            log(f"{label}: {calls} call(s) per sample")
            for clock, times in time_rounds(fns, rounds, calls, device, label).items():
                tables[clock][label] = summarize(times)

        # (b): one image a round, the same for every variant; the rounds cycle through the scenes.
        scene = {"i": 0}
        fns = {n: (lambda s=s: s(images[scene["i"]], vocab)) for n, s in segmenters.items()}
        for fn in fns.values():
            for i in range(warmup):
                scene["i"] = i % len(images)
                fn()
        label = "(b) pipeline"
        timed = time_rounds(fns, 2 * rounds, 1, device, label,
                            before_round=lambda r: scene.__setitem__("i", r % len(images)))
        for clock, times in timed.items():
            tables[clock][label] = summarize(times)

    # ---- the table ---------------------------------------------------------------------
    load_end = load_average()
    dev_name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{PRESET} (CLIP {base.clip_size[0]}x{base.clip_size[1]}, {num_queries} proposals per image in (a)), "
          f"{len(vocab)} classes, {args.batch} scenes of {args.size} px "
          f"(seeds {args.seed}-{args.seed + args.batch - 1}), "
          f"{dev_name}, precision {base.amp_dtype or 'fp32'}; median of {rounds} rounds ((b): {2 * rounds}); "
          f"load average {load_start:.2f} at start, {load_end:.2f} at end")
    clocks = ("wall", "cpu") if not cuda else ("wall",)   # CPU time says nothing of a GPU's work
    for clock in clocks:
        print_table(tables[clock], names, segmenters,
                    "wall clock" if clock == "wall" else
                    "CPU time of this process (time.process_time: all its threads; time other processes "
                    "hold the cores does not count)")
    print("ms: median over the rounds (per call); ratio: median (range: min-max) of the "
          f"variant / {BASELINE} ratios taken within each round.\n(a) the classifier alone on the same images "
          "and Mask2Former proposals; (b) segmenter(image, vocabulary) on one image, Mask2Former and the "
          "panoptic merge included.\nNew modules (SMA, Distribution Adapter, learned void, Mask-Adapter "
          "head) at their random initialisation: timing does not depend on their values.")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
