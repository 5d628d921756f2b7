"""Benchmark runner: a preset over a dataset split -> PQ, mIoU (and mask accuracy).

    ovseg evaluate --dataset mapillary_vistas_v1.2 --root PATH --preset NAME \\
        [--weights F] [--limit N] [--masks model|oracle] [--classes model|oracle]
    torchrun --nproc_per_node 2 training/evaluate.py ...     # shards; same numbers

(``training/evaluate.py`` is this module as a script, for torchrun.)

Each image is resized with the papers' test-time rule (detectron2's ResizeShortestEdge:
Mapillary shorter side 1024 and longer at most 2560, the others 800 / 1333), segmented
with the dataset's class list as vocabulary, and its segment and semantic maps are
brought back to the ground truth's size (nearest) for scoring at full resolution.
``--masks oracle`` replaces the mask generator by the ground-truth segments and
``--classes oracle`` the classifier by a perfect one (SMART/FISA Figure 2); with oracle
masks and the model's classifier, the mask classification accuracy on GT masks
(Mask-Adapter Table 3) is reported too.

Writes into --out: results.json, results.md (the papers' Table 1 columns), per_class.csv
and overlays/ (the first --overlays images). Every file of the split is checked (headers
only) before the model is built; an image whose files are missing, corrupt or of
another size than the image, or whose panoptic JSON areas disagree with its PNG, is
skipped with a one-line reason naming the file, listed under ``skipped_images`` in
results.json and results.md, and the run exits with status 1.

Under torchrun each process takes every WORLD_SIZE-th image; the statistics are
gathered and summed in dataset order, so the numbers equal a single-process run's.
"""
from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from ovseg_core.config import preset_names
from ovseg_core.datasets import DATASETS, EvalDataset, load_dataset
from ovseg_core.datasets.base import load_metadata, prompt_words
from ovseg_core.evaluation import (MaskAccuracy, OracleClassifier, PQStat, SemanticStat,
                                   pq_prediction, resize_labels)
from ovseg_core.evaluation.panoptic import format_table
from ovseg_core.modeling.proposals import OracleProposals
from ovseg_core.training.distributed import init_distributed, local_rank
from ovseg_core.panoptic_io import InputError, dump_json, write_text_atomic
from ovseg_core.visualize import overlay

# (shorter side, longer side at most) of the papers' test-time resizing
TEST_SIZES = {"mapillary": (1024, 2560), "default": (800, 1333)}
# The papers' Table 1 columns, in order: (dataset, metric)
TABLE1 = [("coco_panoptic", "PQ"), ("coco_panoptic", "mIoU"), ("ade20k_150", "PQ"), ("ade20k_150", "mIoU"),
          ("mapillary_vistas_v1.2", "PQ"), ("mapillary_vistas_v1.2", "mIoU"), ("ade20k_847", "mIoU"),
          ("pascal_context_59", "mIoU"), ("pascal_context_459", "mIoU")]
TABLE1_HEADS = ["COCO PQ", "COCO mIoU", "ADE150 PQ", "ADE150 mIoU", "Mapillary PQ", "Mapillary mIoU",
                "ADE847 mIoU", "PC59 mIoU", "PC459 mIoU"]


def test_size(height: int, width: int, short: int, max_long: int) -> Tuple[int, int]:
    """detectron2's ResizeShortestEdge.get_output_shape; short 0 keeps the size."""
    if short <= 0:
        return height, width
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > max_long:
        scale = max_long / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


class LogitRecorder(nn.Module):
    """Wraps a classifier and keeps its last logits (mask accuracy needs the scores of
    the ground-truth masks, which the segmenter's results do not carry)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.inner = classifier
        self.logits: Optional[torch.Tensor] = None

    def forward(self, *args, **kwargs):
        self.logits = self.inner(*args, **kwargs)
        return self.logits


def _parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--root", required=True, type=Path, help="the dataset's folder (see its layout)")
    p.add_argument("--split", default="val", choices=["val", "train"])
    p.add_argument("--preset", default="tiny", help=f"model preset: {', '.join(preset_names())} or a YAML path")
    p.add_argument("--weights", help="our trained delta (safetensors) on top of the preset")
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.add_argument("--out", type=Path, help="output folder (default out/eval/DATASET_PRESET)")
    p.add_argument("--device", help="auto, cpu, cuda (default: the preset's; cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--masks", choices=["model", "oracle"], default="model",
                   help="oracle: ground-truth segments as proposals")
    p.add_argument("--classes", choices=["model", "oracle"], default="model",
                   help="oracle: each proposal gets the class of the GT segment it overlaps most")
    p.add_argument("--min-size", type=int,
                   help="test-time shorter side (default: the papers'); 0: no test-time resize (images at "
                        "their own size, the mask generator at the preset's input size)")
    p.add_argument("--max-size", type=int, help="test-time longer side at most (default: the papers')")
    p.add_argument("--seen-classes", default="preset",
                   help="training vocabulary for the seen/unseen mIoU split: 'coco' (COCO panoptic's 133 "
                        "classes), a file (one name a line), 'preset' (the preset's ensemble seen classes, "
                        "if any) or 'none'")
    p.add_argument("--overlays", type=int, default=8, help="write overlays of the first N images")
    p.add_argument("--random-weights", action="store_true",
                   help="build the preset's architecture without its pretrained weights (offline trials)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights a preset does not load (same on every rank)")
    return p


def seen_flags(arg: str, segmenter, data: EvalDataset, vocab) -> Optional[List[bool]]:
    """Per class: is it in the training vocabulary? A class counts as seen when its
    dataset name or its prompt name is (case-insensitively) a training class name."""
    if arg == "none":
        return None
    if arg == "preset":
        names = set(segmenter.seen_classes)
    elif arg == "coco":
        names = {w for c in load_metadata("coco_panoptic") for w in (c.name, *prompt_words(c))}
    else:
        path = Path(arg)
        if not path.is_file():
            raise FileNotFoundError(f"--seen-classes {arg}: no such file; give a file with one class name a "
                                    f"line, 'coco', 'preset' or 'none'")
        names = {line.split(",")[0].strip() for line in path.read_text().splitlines() if line.strip()}
    if not names:
        return None
    names = {n.casefold() for n in names}
    return [c.name.casefold() in names or v.name.casefold() in names for c, v in zip(data.classes, vocab.classes)]


def evaluate_image(segmenter, data: EvalDataset, vocab, i: int, args, recorder: LogitRecorder,
                   oracle: Optional[OracleClassifier]):
    """One image -> its statistics (and its test-size image and result for overlays)."""
    image = data.load_image(i)
    gt_size = image.shape[:2]
    short, long_ = args.min_size, args.max_size
    size = test_size(*gt_size, short, long_)
    if size != gt_size:
        image = np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    panoptic = data.load_panoptic(i) if data.has_panoptic else None
    if args.masks == "oracle" or oracle is not None:
        index, classes = data.gt_segment_index(i, panoptic)
        index = resize_labels(index, size)
    proposals = None
    if args.masks == "oracle":
        masks = index[None] == np.arange(1, len(classes) + 1)[:, None, None]
        proposals = OracleProposals(segmenter.device)([masks])
    if oracle is not None:
        oracle.targets = [(index, classes)]
    if args.masks == "model" and short > 0:
        # The papers' test-time size is the mask generator's input size.
        segmenter.proposal_size = size
    result = segmenter(image, vocab, proposals=proposals)

    record = {"index": i}
    num_classes = len(vocab)
    if data.has_panoptic:
        gt_map, gt_segments = panoptic
        sums = pq_prediction(gt_map, gt_segments, result.segment_map,
                             [{"id": s.id, "category_id": s.class_index} for s in result.segments],
                             num_classes).sums
        rows = np.nonzero(sums.any(1))[0]
        record["pq"] = (rows, sums[rows])
    if data.has_semantic:
        record["semantic"] = SemanticStat(num_classes, data.ignore_label).update(
            resize_labels(result.semantic_map, gt_size), data.load_semantic(i)).matrix
    if args.masks == "oracle" and oracle is None and classes:
        predicted = recorder.logits[0, :len(classes), :num_classes].argmax(-1).cpu().numpy()
        record["mask_accuracy"] = MaskAccuracy(num_classes).update(classes, predicted).counts
    return record, image, result


def skip_record(data: EvalDataset, i: int, err: Exception) -> dict:
    """The record of an image that could not be evaluated: one line naming the file
    (InputErrors name theirs; other errors are about the image's ground truth)."""
    if isinstance(err, InputError):
        reason = str(err)
    else:
        s = data.samples[i]
        gt = s.panoptic_path or s.semantic_path
        path = gt if gt is not None and str(err).startswith("GT") else s.image_path
        reason = f"{path}: image {s.image_id}: {err}"
    return {"index": i, "skipped": reason}


def merge(records: List[dict], data: EvalDataset) -> dict:
    """Sums records in dataset order: the same numbers however the images were split.
    Skipped images (records with a ``skipped`` reason) add nothing and are listed."""
    k = len(data.classes)
    pq, sem, acc = PQStat(k), SemanticStat(k, data.ignore_label), MaskAccuracy(k)
    for r in sorted(records, key=lambda r: r["index"]):
        if "pq" in r:
            rows, values = r["pq"]
            pq.sums[rows] += values
        if "semantic" in r:
            sem += r["semantic"]
        if "mask_accuracy" in r:
            acc += r["mask_accuracy"]
    skipped = [(r["index"], r["skipped"]) for r in sorted(records, key=lambda r: r["index"]) if "skipped" in r]
    return {"pq": pq, "semantic": sem, "mask_accuracy": acc,
            "has_mask_accuracy": any("mask_accuracy" in r for r in records), "skipped": skipped}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def write_outputs(out: Path, args, data: EvalDataset, vocab, merged: dict, seen, num_images, seconds, world):
    names = data.names
    skipped = merged.get("skipped", [])
    num_images -= len(skipped)
    results = {"dataset": args.dataset, "split": args.split, "preset": args.preset, "weights": args.weights,
               "masks": args.masks, "classes": args.classes, "num_images": num_images,
               "num_skipped": len(skipped),
               "skipped_images": [{"image_id": data.samples[i].image_id, "reason": why} for i, why in skipped],
               "test_size": [args.min_size, args.max_size], "processes": world,
               "images_per_second": num_images / seconds if seconds > 0 else None}
    if data.has_panoptic:
        results["panoptic"] = merged["pq"].summary(names, data.is_thing)
    if data.has_semantic:
        results["semantic"] = merged["semantic"].summary(names, seen)
    if merged["has_mask_accuracy"]:
        results["mask_classification"] = merged["mask_accuracy"].summary(names)
    dump_json(results, out / "results.json")

    cells = {}
    if "panoptic" in results:
        cells[(args.dataset, "PQ")] = results["panoptic"]["All"]["pq"]
    if "semantic" in results:
        cells[(args.dataset, "mIoU")] = results["semantic"]["mIoU"]
    method = " ".join([args.preset] + ([f"+ {Path(args.weights).name}"] if args.weights else []) +
                      [f"(oracle {what})" for what, mode in (("masks", args.masks), ("classes", args.classes))
                       if mode == "oracle"])
    md = [f"# {args.dataset} {args.split}, {num_images} images"
          + (f" ({len(skipped)} skipped: see the end)" if skipped else ""), "",
          "| Method | " + " | ".join(TABLE1_HEADS) + " |", "|---" * (len(TABLE1_HEADS) + 1) + "|",
          f"| {method} | " + " | ".join(_pct(cells.get(c)) if c in cells else "-" for c in TABLE1) + " |"]
    if args.dataset not in {d for d, _ in TABLE1}:
        md += ["", f"({args.dataset} is not a Table 1 column: " +
               ", ".join(f"{m} {_pct(v)}" for (_, m), v in cells.items()) + ")"]
    if "panoptic" in results:
        md += ["", "```", format_table(results["panoptic"]), "```"]
    if "semantic" in results:
        s = results["semantic"]
        md += ["", f"mIoU {_pct(s['mIoU'])}, fwIoU {_pct(s['fwIoU'])}, mACC {_pct(s['mACC'])}, pACC {_pct(s['pACC'])}"]
        if "mIoU_seen" in s:
            md += [f"seen ({s['num_seen']} classes) mIoU {_pct(s['mIoU_seen'])}, unseen ({s['num_unseen']}) "
                   f"mIoU {_pct(s['mIoU_unseen'])}, harmonic {_pct(s['hIoU'])}"]
    if "mask_classification" in results:
        m = results["mask_classification"]
        md += ["", f"mask classification on GT masks: accuracy {_pct(m['accuracy'])}, "
                   f"mean class accuracy {_pct(m['mean_class_accuracy'])} ({m['num_masks']} masks)"]
    if skipped:
        md += ["", f"Skipped {len(skipped)} image(s), not in the numbers above:"] + [f"- {why}" for _, why in skipped]
    write_text_atomic(out / "results.md", "\n".join(md) + "\n")

    with io.StringIO(newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "prompt", "isthing", "seen", "pq", "sq", "rq", "tp", "fp", "fn", "iou", "acc",
                    "gt_pixels", "mask_accuracy", "masks"])
        for k, (c, vc) in enumerate(zip(data.classes, vocab.classes)):
            pan = results.get("panoptic", {}).get("per_class", {}).get(c.name, {})
            sem = results.get("semantic", {}).get("per_class", {}).get(c.name, {})
            acc = results.get("mask_classification", {}).get("per_class", {}).get(c.name, {})
            w.writerow([c.name, vc.name, int(c.is_thing), "" if seen is None else int(seen[k])] +
                       [pan.get(k, "") if pan.get("present") else "" for k in ("pq", "sq", "rq", "tp", "fp", "fn")] +
                       ["" if sem.get(k) is None else sem.get(k) for k in ("iou", "acc", "gt_pixels")] +
                       ["" if acc.get("accuracy") is None else acc.get("accuracy"), acc.get("masks", "")])
        write_text_atomic(out / "per_class.csv", f.getvalue())
    return results


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = _parser(prog).parse_args(argv)
    family = "mapillary" if args.dataset.startswith("mapillary") else "default"
    args.min_size = TEST_SIZES[family][0] if args.min_size is None else args.min_size
    args.max_size = TEST_SIZES[family][1] if args.max_size is None else args.max_size
    try:
        data = load_dataset(args.dataset, args.root, args.split)
    except (FileNotFoundError, ValueError) as err:
        print(f"evaluate: {err}", file=sys.stderr)
        return 2
    if args.masks == "oracle" or args.classes == "oracle":
        if not data.has_panoptic and not data.has_semantic:
            print(f"evaluate: {args.dataset} has no ground truth for oracle runs", file=sys.stderr)
            return 2
    rank, world = init_distributed(args.device)
    indices = list(range(len(data)))[:args.limit]
    mine = indices[rank::world]
    records = []
    for i in mine:              # check-before-run: headers only, before the model is built
        try:
            data.check(i)
        except ValueError as err:
            records.append(skip_record(data, i, err))
            print(f"evaluate: skipping {records[-1]['skipped']}", file=sys.stderr)
    bad = {r["index"] for r in records}
    device = args.device
    if world > 1 and torch.cuda.is_available() and device in (None, "auto", "cuda"):
        device = f"cuda:{local_rank()}"
    from ovseg_core.build import build_segmenter
    overrides = {"clip.pretrained": None, "proposals.pretrained": None} if args.random_weights else {}
    torch.manual_seed(args.seed)
    try:
        segmenter = build_segmenter(args.preset, weights=args.weights, device=device, overrides=overrides)
        vocab = data.vocabulary()
        seen = seen_flags(args.seen_classes, segmenter, data, vocab)
    except (FileNotFoundError, ValueError) as err:
        print(f"evaluate: {err}", file=sys.stderr)
        return 2
    oracle = OracleClassifier(len(vocab)) if args.classes == "oracle" else None
    recorder = LogitRecorder(oracle if oracle is not None else segmenter.classifier)
    segmenter.classifier = recorder

    out = args.out or Path("out") / "eval" / f"{args.dataset}_{Path(args.preset).stem}"
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bar = tqdm([i for i in mine if i not in bad], unit="img",
               desc=f"{args.dataset}" + (f" rank {rank}/{world}" if world > 1 else ""),
               disable=rank != 0, file=sys.stderr)
    for i in bar:
        try:
            record, image, result = evaluate_image(segmenter, data, vocab, i, args, recorder, oracle)
        except (ValueError, OSError) as err:     # a file found bad only when decoded
            records.append(skip_record(data, i, err))
            bar.write(f"evaluate: skipping {records[-1]['skipped']}", file=sys.stderr)
            continue
        records.append(record)
        if i < args.overlays:
            name = re.sub(r"[^\w.-]", "_", str(data.samples[i].image_id))
            Image.fromarray(overlay(image, result)).save(out / "overlays" / f"{name}.png")
    seconds = time.perf_counter() - start
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (records, seconds))
        records = [r for part, _ in gathered for r in part]
        seconds = max(s for _, s in gathered)
    skipped = sum("skipped" in r for r in records)
    if rank == 0:
        merged = merge(records, data)
        write_outputs(out, args, data, vocab, merged, seen, len(indices), seconds, world)
        print((out / "results.md").read_text())
        print(f"wrote {out}/results.json, results.md, per_class.csv, overlays/", file=sys.stderr)
        if skipped:
            print(f"evaluate: {skipped} image(s) skipped (listed in results.json); exit status 1",
                  file=sys.stderr)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
