"""ONNX export and ONNX Runtime serving, measured in one run (docs/benchmarks-export.md):

1. ``shapes`` (trained weights): export time and file sizes; on N fresh ShapesWorld scenes
   (seeds 777000 + i, never used in training) PQ of PyTorch and of ONNX Runtime (CPU)
   against the ground truth, the share of pixels with the same segment label (the same
   segment id and the same semantic class in both results) and the largest classifier
   logit difference.
2. ``vitb16_swint`` at 448 px (random weights, ``--random-weights``): export time, file
   sizes, agreement on a few scenes.
3. Per stage and for the whole call, ONNX Runtime CPU / PyTorch CPU, both presets: the
   text encoder (8 classes encoded afresh), proposals, classifier, whole
   ``segmenter(image, vocabulary)`` (vocabulary cached). Round-robin rounds, medians, as
   bench/classifier.py times (background load hits both sides alike). Goal: whole call
   >= 1.5x.
4. ``--paper``: the paper preset (ViT-L/14-336 at 896 + Swin-B at 1024, random weights)
   exports without error (export time, sizes; minutes and ~20 GB of memory on a CPU).

    .venv/bin/python bench/export.py                  # N = 100, ~10 min on 2 CPU cores
    .venv/bin/python bench/export.py --num 10 --rounds 3   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch

from ovseg_core.build import build_segmenter
from ovseg_core.evaluation import PQStat, pq_image
from ovseg_core.export.onnx_export import export_segmenter
from ovseg_core.shapes.world import generate_scene, load_classes
from ovseg_core.structures import MaskProposals
from ovseg_core.text import EmbeddingCache


def round_robin(functions: Dict[str, Callable], rounds: int) -> Dict[str, float]:
    """Median seconds per function; one warm-up call each, then every function once a round."""
    for fn in functions.values():
        fn()
    times = {k: [] for k in functions}
    for _ in range(rounds):
        for key, fn in functions.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


TEXT_CLASSES = 8   # the text stage encodes this many classes afresh (14 prompts each)


def stage_functions(seg, image: np.ndarray, vocab_text: str) -> Dict[str, Callable]:
    """The stages of one call on ``image``, as the segmenter runs them."""
    fresh = "; ".join(vocab_text.split("; ")[:TEXT_CLASSES])
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    layout = seg.layout([tensor.to(seg.device)])
    vocab, text = seg.encode_vocabulary(vocab_text)
    with torch.inference_mode():
        proposals = seg.proposals(layout.proposal_batch)
    for_clip = MaskProposals(proposals.masks, proposals.objectness)

    def encode_text():   # into an empty cache of its own: the call's vocabulary stays cached
        kept, seg.text_encoder.cache = seg.text_encoder.cache, EmbeddingCache(1)
        try:
            seg.text_encoder.encode(fresh)
        finally:
            seg.text_encoder.cache = kept

    def whole():
        seg(image, vocab_text)

    def classify():
        with torch.inference_mode():
            seg.classifier(layout.clip_batch, for_clip, text, seg.seen_mask(vocab))

    def propose():
        with torch.inference_mode():
            seg.proposals(layout.proposal_batch)

    return {f"text encoder ({TEXT_CLASSES} classes)": encode_text, "proposals": propose, "classifier": classify,
            "whole call": lambda: (seg.encode_vocabulary(vocab_text), whole())}


def compare_runtimes(torch_seg, ort_seg, image, vocab_text, rounds: int) -> Dict[str, Dict[str, float]]:
    ours, theirs = stage_functions(ort_seg, image, vocab_text), stage_functions(torch_seg, image, vocab_text)
    merged = {f"ort|{k}": v for k, v in ours.items()}
    merged.update({f"torch|{k}": v for k, v in theirs.items()})
    times = round_robin(merged, rounds)
    return {k: {"torch_ms": 1e3 * times[f"torch|{k}"], "ort_ms": 1e3 * times[f"ort|{k}"],
                "speedup": times[f"torch|{k}"] / times[f"ort|{k}"]} for k in ours}


def agreement(torch_seg, ort_seg, scenes, vocab_text) -> Dict[str, float]:
    """PQ of both against the ground truth, pixels with the same segment label, largest
    logit difference."""
    vocab = load_classes()
    k = len(vocab.names)
    pq = {"torch": PQStat(k), "onnxruntime": PQStat(k)}
    same, total, worst = 0, 0, 0.0
    for scene in scenes:
        a, b = torch_seg(scene.image, vocab_text), ort_seg(scene.image, vocab_text)
        gt = [{"id": s["id"], "category_id": s["category_id"] - 1, "iscrowd": 0} for s in scene.segments]
        for key, r in (("torch", a), ("onnxruntime", b)):
            pq[key] += pq_image(scene.segment_map, gt, r.segment_map,
                                [{"id": s.id, "category_id": s.class_index} for s in r.segments], k)
        same += int(((a.segment_map == b.segment_map) & (a.semantic_map == b.semantic_map)).sum())
        total += a.segment_map.size
        batch = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            lt = torch_seg.logits(batch, vocab_text)[1]
            lo = ort_seg.logits(batch, vocab_text)[1]
        worst = max(worst, float((lt - lo).abs().max()))
    summary = {key: 100 * stat.summary(vocab.names, vocab.is_thing)["All"]["pq"] for key, stat in pq.items()}
    return {"PQ torch": summary["torch"], "PQ onnxruntime": summary["onnxruntime"],
            "same segment label (% pixels)": 100 * same / total, "max |logit diff|": worst}


def export_and_compare(preset, overrides, image_size, scenes, vocab_text, rounds, folder: Path):
    torch.manual_seed(0)
    torch_seg = build_segmenter(preset, device="cpu", overrides={**overrides, "precision": "fp32"})
    manifest = export_segmenter(torch_seg, folder, image_size, log=lambda m: print(m, file=sys.stderr))
    ort_seg = build_segmenter(preset, device="cpu", overrides={**overrides, "runtime": "onnxruntime",
                                                               "onnx.dir": str(folder)})
    report = {"export_s": manifest["export_seconds"],
              "file_MB": {k: round(v["bytes"] / 1e6, 1) for k, v in manifest["files"].items()},
              "agreement": agreement(torch_seg, ort_seg, scenes, vocab_text)}
    report["speed"] = compare_runtimes(torch_seg, ort_seg, scenes[0].image, vocab_text, rounds)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=int, default=100, help="ShapesWorld scenes for the shapes preset's agreement")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds")
    p.add_argument("--vitb-scenes", type=int, default=5, help="scenes for the ViT-B/16 agreement")
    p.add_argument("--paper", action="store_true", help="also export the paper preset (random weights)")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    args = p.parse_args(argv)
    vocab_text = load_classes().vocabulary_text()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "command": " ".join(["bench/export.py"] + (argv if argv is not None else sys.argv[1:]))}
    with tempfile.TemporaryDirectory() as tmp:
        scenes = [generate_scene(777000 + i, size=128) for i in range(args.num)]
        report["shapes"] = export_and_compare("shapes", {}, None, scenes, vocab_text, args.rounds,
                                              Path(tmp) / "shapes")
        print(json.dumps(report["shapes"], indent=1), file=sys.stderr)
        vitb = {"clip.pretrained": None, "proposals.pretrained": None, "clip.input_size": 448,
                "proposals.input_size": 448}
        scenes = [generate_scene(778000 + i, size=448) for i in range(args.vitb_scenes)]
        report["vitb16_swint@448"] = export_and_compare("vitb16_swint", vitb, None, scenes, vocab_text,
                                                        args.rounds, Path(tmp) / "vitb16")
        print(json.dumps(report["vitb16_swint@448"], indent=1), file=sys.stderr)
        if args.paper:
            torch.manual_seed(0)
            seg = build_segmenter("smart_vitl14_336_swinb", device="cpu", overrides={
                "clip.pretrained": None, "proposals.pretrained": None, "precision": "fp32"})
            manifest = export_segmenter(seg, Path(tmp) / "paper", log=lambda m: print(m, file=sys.stderr))
            report["smart_vitl14_336_swinb"] = {
                "export_s": manifest["export_seconds"],
                "file_MB": {k: round(v["bytes"] / 1e6, 1) for k, v in manifest["files"].items()},
                "checks": manifest["checks"]}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
