"""Classifier speed benchmark for the ViT-B/16 SMART preset (``vitb16_swint``).

Prints ratios measured in one run, at each CLIP input size S (448 and 896 px):

  (a) SMART classifier / plain open_clip ViT-B/16 image-encoder forward at S
      (target <= 1.20 at 448, <= 1.10 at 896: the floor is the 100 extra mask tokens)
  (b) mask-cropping baseline (OVSeg-style ``mask_crop``) / SMART classifier (target >= 20)
  (c) whole pipeline ``segmenter(image, vocabulary)`` / (Mask2Former forward + plain CLIP
      forward, each at the size the pipeline fits the image to, aspect kept) (target <= 1.15)

Everything is built offline with random weights (timing does not depend on the values).
The classifiers see 100 random blob masks of varied sizes (ellipses, ~0.3% to ~45% of the
image) as logits at Mask2Former's output resolution (1/4 of its 640 px input); a
random-weight Mask2Former's own masks are degenerate (every query covers ~90% of the
image). The pipeline (c) runs the real (random-weight) Mask2Former Swin-T, 100 queries.
The vocabulary (20 classes, one prompt template) is encoded once before any timing.

Timing: inference mode, one warm-up call each (3 on CUDA), then N rounds (N = 5 at S = 448,
3 at 896; mask_crop, ~100 CLIP forwards a call: 2) in which every function is called once.
Times are medians over the rounds; each ratio is taken within a round and the median over
the rounds is reported (with its range), so that background load on a shared machine,
which comes and goes over seconds, hits numerator and denominator alike. torch's thread
count is left at its default.

    .venv/bin/python bench/classifier.py            # full: S = 448 and 896 (~7-9 min on 2 CPU cores)
    .venv/bin/python bench/classifier.py --quick    # S = 448 only, fewer repeats (~2 min)
    .venv/bin/python bench/classifier.py --device cuda
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Sequence

import torch

PRESET = "vitb16_swint"
NUM_CLASSES = 20
TEMPLATES = ("a photo of a {}.",)
TARGETS = {  # name -> (comparison, value or {size: value})
    "a": ("<=", {448: 1.20, 896: 1.10}),
    "b": (">=", 20.0),
    "c": ("<=", 1.15),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device, label: str = "") -> Dict[str, List[float]]:
    """Calls every function ``warmup`` times, then ``repeats`` rounds of one call each
    (interleaved); returns the seconds of each timed call per name."""
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
    sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
        log(f"  {label} repeat {r + 1}/{repeats}: " +
            ", ".join(f"{n} {times[n][-1] * 1e3:.0f} ms" for n in fns))
    return times


def blob_masks(num: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """[num, height, width] mask logits: rotated ellipses with log-uniform sizes (about
    0.3% to 45% of the image area), logit ~ +8 at the centre, 0 on the rim."""
    ys = torch.linspace(0, 1, height)[:, None]
    xs = torch.linspace(0, 1, width)[None, :]
    u = torch.rand(num, 6, generator=generator)
    area = torch.exp(math.log(0.003) + u[:, 0] * (math.log(0.45) - math.log(0.003)))
    aspect = torch.exp((u[:, 1] - 0.5) * 2 * math.log(3))  # 1/3 .. 3
    ry = torch.sqrt(area * aspect / math.pi)
    rx = torch.sqrt(area / aspect / math.pi)
    cy, cx, theta = u[:, 2], u[:, 3], u[:, 4] * math.pi
    out = []
    for i in range(num):
        dy, dx = ys - cy[i], xs - cx[i]
        c, s = torch.cos(theta[i]), torch.sin(theta[i])
        a, b = (c * dx + s * dy) / rx[i], (-s * dx + c * dy) / ry[i]
        out.append(8.0 * (1.0 - a * a - b * b))
    return torch.stack(out).clamp(-20, 20)


def per_round(numerators: Sequence[float], denominators: Sequence[float]) -> List[float]:
    return [n / d for n, d in zip(numerators, denominators)]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f}"


def verdict(key: str, ratio: float, size: int):
    op, target = TARGETS[key]
    if isinstance(target, dict):  # other sizes get the target of the nearest listed size
        target = target[min(target, key=lambda k: (abs(k - size), k))]
    value = target
    ok = ratio <= value if op == "<=" else ratio >= value
    return f"{op} {value:.2f}", "PASS" if ok else "MISS"


def main(argv: Sequence[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="CLIP input sizes S (default 448 896; --quick: 448)")
    ap.add_argument("--quick", action="store_true", help="S = 448 only and fewer repeats")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed rounds per size (default: 5 at S <= 448, 3 above; --quick 3; cuda 20)")
    ap.add_argument("--crop-repeats", type=int, default=None,
                    help="timed repeats of the slow mask_crop baseline (default 2, --quick 1; cuda 5)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up calls per function (default 1; cuda 3)")
    ap.add_argument("--proposals", type=int, default=100, help="number of mask proposals (default 100)")
    ap.add_argument("--image", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                    help="pipeline input image size (default 480 640)")
    ap.add_argument("--precision", default=None,
                    help="override the preset's precision (auto: bf16 autocast on CUDA, fp32 on CPU)")
    ap.add_argument("--skip", nargs="*", default=(), choices=("a", "b", "c"),
                    help="measurements to leave out ((a) is needed by (b))")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from ovseg_core.build import build_segmenter  # after argparse: --help stays fast
    from ovseg_core.segmenter import image_to_tensor
    from ovseg_core.structures import MaskProposals
    from ovseg_core.text import EmbeddingCache
    import open_clip

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda asked for but CUDA is not available")
    cuda = device.type == "cuda"
    sizes = args.sizes or ([448] if args.quick else [448, 896])
    def repeats_for(size: int) -> int:
        return args.repeats or (20 if cuda else 3 if args.quick or size > 448 else 5)
    crop_repeats = args.crop_repeats or (5 if cuda else 1 if args.quick else 2)
    warmup = max(args.warmup, 3) if cuda and args.warmup == 1 else args.warmup
    skip = set(args.skip)
    if "a" in skip:
        skip.add("b")  # (b) is relative to the SMART time that (a) measures

    warnings.filterwarnings("ignore", message=".*No pretrained weights.*")
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" warnings

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    log(f"{PRESET} on {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load:.1f}; sizes {sizes}, repeats {[repeats_for(s) for s in sizes]}, "
        f"mask_crop repeats {crop_repeats}, warm-up {warmup}")

    vocabulary = "; ".join([f"class{i}" for i in range(NUM_CLASSES // 2)] +
                           [f"stuff{i} [stuff]" for i in range(NUM_CLASSES - NUM_CLASSES // 2)])
    cache = EmbeddingCache()  # shared: the vocabulary is encoded once for every build
    base = {"clip.pretrained": None, "proposals.pretrained": None}
    if args.precision:
        base["precision"] = args.precision

    # Proposal masks at Mask2Former's output resolution for its input size.
    q = args.proposals
    masks = blob_masks(q, 160, 160, gen)[None].to(device)
    objectness = torch.rand(1, q, generator=gen).to(device)
    blobs = MaskProposals(masks=masks, objectness=objectness)
    image = torch.randint(0, 256, (*args.image, 3), generator=gen, dtype=torch.uint8).numpy()

    rows = []
    crop = None
    if "b" not in skip:
        # mask_crop classifies crops at CLIP's native 224 px whatever clip.input_size is,
        # so one build serves every S (its input is the [1, 3, S, S] image).
        t0 = time.perf_counter()
        crop = build_segmenter(PRESET, device=str(device), embedding_cache=cache, overrides={
            **base, "clip.input_size": sizes[0], "classifier.type": "mask_crop",
            "classifier.sma_layers": [], "classifier.distribution_adapter_layers": 0,
            "classifier.learned_void": False})
        crop.proposals = None  # only its classifier is used; free the Mask2Former
        log(f"built the mask_crop baseline in {time.perf_counter() - t0:.1f} s")

    for size in sizes:
        t0 = time.perf_counter()
        seg = build_segmenter(PRESET, device=str(device), embedding_cache=cache,
                              overrides={**base, "clip.input_size": size})
        plain = open_clip.create_model("ViT-B-16", pretrained=None, force_image_size=size).visual
        plain = plain.to(device).eval()
        log(f"S={size}: built in {time.perf_counter() - t0:.1f} s")
        # One prompt template instead of ViLD's 14: only the setup gets faster (14x fewer
        # text-tower forwards); the cached ClassEmbeddings have one row per class either way.
        seg.text_encoder.templates = TEMPLATES
        t0 = time.perf_counter()
        _, text = seg.encode_vocabulary(vocabulary)  # cached from here on
        log(f"S={size}: vocabulary ready in {time.perf_counter() - t0:.1f} s "
            f"({text.embeddings.shape[0]} rows)")
        x = torch.rand(1, 3, size, size, generator=gen).to(device)
        # CLIP-normalised input for the plain encoder (the classifier normalises its own).
        x_norm = seg.classifier.normalize(x)
        row = {"size": size}

        # (c)'s denominator runs both models at the sizes the pipeline serves this image:
        # fitted inside each stage's size keeping the aspect ratio (a 480x640 image is not
        # squashed to a square), the CLIP side rounded up to the patch grid.
        layout = seg.layout([image_to_tensor(image, device)])
        batch_prop = layout.proposal_batch
        clip_fit = tuple(layout.clip_batch.shape[-2:])
        plain_fit = plain if clip_fit == (size, size) else open_clip.create_model(
            "ViT-B-16", pretrained=None, force_image_size=clip_fit).visual.to(device).eval()
        x_fit = seg.classifier.normalize(layout.clip_batch)

        def run_plain():
            with seg.autocast():
                return plain(x_norm)

        def run_encoder():  # SMART's own encoder without mask tokens: same kernels as SMART
            with seg.autocast():
                return seg.classifier.encoder(x_norm)

        def run_smart():
            with seg.autocast():
                return seg.classifier(x, blobs, text)

        def run_plain_fit():
            with seg.autocast():
                return plain_fit(x_fit)

        def run_m2f():
            with seg.autocast():
                return seg.proposals(batch_prop)

        def run_pipeline():
            return seg(image, vocabulary)

        fns = {}
        if "a" not in skip or "c" not in skip:
            fns["plain"] = run_plain
        if "a" not in skip:
            fns.update(encoder=run_encoder, smart=run_smart)
        if "c" not in skip:
            fns.update(m2f=run_m2f, plain_fit=run_plain_fit, pipeline=run_pipeline)
        with torch.inference_mode():
            # (a) and (c) in one round-robin: the plain CLIP time serves both. Each ratio is
            # taken within a round (calls seconds apart), then the median over the rounds.
            t = time_round_robin(fns, repeats_for(size), warmup, device, f"S={size}")
            row.update({name: statistics.median(v) for name, v in t.items()})
            if "a" not in skip:
                row["a"] = per_round(t["smart"], t["plain"])
                row["a_enc"] = per_round(t["smart"], t["encoder"])
            if "c" not in skip:
                row["c"] = per_round(t["pipeline"], [m + p for m, p in zip(t["m2f"], t["plain_fit"])])

            if "b" not in skip:
                def run_crop():
                    with crop.autocast():
                        return crop.classifier(x, blobs, text)

                with crop.autocast():  # warm-up on a few masks only: one full call is ~100 CLIP forwards
                    crop.classifier(x, MaskProposals(blobs.masks[:, :8], blobs.objectness[:, :8]), text)
                t = time_round_robin({"smart": run_smart, "crop": run_crop}, crop_repeats, 0, device,
                                     f"S={size} mask_crop")
                row["crop"] = statistics.median(t["crop"])
                row["smart_b"] = statistics.median(t["smart"])
                row["b"] = per_round(t["crop"], t["smart"])
        rows.append(row)
        del seg, plain, plain_fit
        if cuda:
            torch.cuda.empty_cache()

    # ---- the table ---------------------------------------------------------------------
    dev_name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{PRESET}: {args.proposals} proposals (random blobs for a/b, Mask2Former Swin-T for c), "
          f"{NUM_CLASSES} classes, {dev_name}, precision {seg_precision(args.precision, cuda)}; "
          f"median of {'/'.join(str(repeats_for(s)) for s in sizes)} rounds (mask_crop: {crop_repeats}); "
          f"pipeline image {args.image[0]}x{args.image[1]}; load average {load:.1f} at start, {load_end:.1f} at end")
    header = (f"{'S':>5}  {'ratio':<34} {'num ms':>8} {'den ms':>8} {'ratio':>6} {'range':>11}  "
              f"{'target':>8}  result")
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row["size"]
        lines = []
        if "a" in row:
            lines.append(("(a) SMART / plain open_clip", row["smart"], row["plain"], row["a"], "a"))
        if "b" in row:
            lines.append(("(b) mask_crop / SMART", row["crop"], row["smart_b"], row["b"], "b"))
        if "c" in row:
            lines.append(("(c) pipeline / (M2F + plain CLIP)", row["pipeline"], row["m2f"] + row["plain_fit"],
                          row["c"], "c"))
        if "a" in row:
            lines.append(("(info) SMART / SMART w/o masks", row["smart"], row["encoder"], row["a_enc"], None))
        for name, num, den, ratios, key in lines:
            ratio = statistics.median(ratios)
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
            if key is None:
                target, result = "-", f"token floor {1 + q / ((s // 16) ** 2 + 1):.3f}"
            else:
                target, result = verdict(key, ratio, s)
            print(f"{s:>5}  {name:<34} {fmt_ms(num):>8} {fmt_ms(den):>8} {ratio:>6.2f} {spread:>11}  "
                  f"{target:>8}  {result}")
        if "c" in row:
            print(f"{'':>5}  (c) parts: M2F {fmt_ms(row['m2f'])} ms, plain CLIP at the fitted size "
                  f"{fmt_ms(row['plain_fit'])} ms")
    print("num/den ms: medians over the rounds; ratio: median (range: min-max) of the ratios taken within "
          "each round.")
    if any("a" in row for row in rows):
        print("(info): SMART over the same MaskCLIPEncoder without mask tokens (same attention kernels); token "
              "floor = 1 + Q / (patches + 1).\nopen_clip's nn.MultiheadAttention (the plain baseline) is not "
              "SDPA on CPU (bmm + softmax), so (a) and (c) can read below 1 at large S.")
    return 0


def seg_precision(precision, cuda: bool) -> str:
    if precision and precision != "auto":
        return precision
    return "auto (bf16 if supported)" if cuda else "fp32"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
