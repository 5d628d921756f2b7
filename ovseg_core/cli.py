"""``ovseg segment IMAGES... --vocab "car; road [stuff]" --preset NAME --out DIR``
(``ovseg train``, ``ovseg evaluate``, ``ovseg params`` and ``ovseg labelspace export`` beside it).

Writes per image an overlay PNG and a COCO-panoptic PNG, one ``panoptic.json`` for all,
and prints a table of segments. A file that cannot be read is reported and skipped;
the others are still written (exit status 1 tells that something was skipped).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
from tqdm import tqdm

from .config import RUNTIMES, preset_names
from .panoptic_io import categories, panoptic_annotation, write_panoptic_json, write_panoptic_png
from .profiling import stage_table
from .structures import PanopticResult
from .visualize import DEFAULT_MIN_SIZE, overlay
from .vocabulary import Vocabulary


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 HxWx3; raises ValueError naming the file if it cannot be decoded."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image (corrupt, or a format OpenCV cannot decode)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def segment_table(name: str, result: PanopticResult) -> str:
    lines = [f"{name}: {len(result.segments)} segment(s)",
             f"  {'id':>4}  {'class':<24} {'score':>6} {'thing':>5} {'area':>8}  bbox (x, y, w, h)"]
    for s in result.segments:
        lines.append(f"  {s.id:>4}  {s.class_name[:24]:<24} {s.score:>6.3f} {str(s.is_thing):>5} "
                     f"{s.area:>8}  {tuple(s.bbox)}")
    return "\n".join(lines)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model options every command that segments shares (see :func:`model_from_args`)."""
    p.add_argument("--preset", default="tiny", help=f"model preset: {', '.join(preset_names())} or a YAML path")
    p.add_argument("--weights", help="our trained delta (safetensors) on top of the preset")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the preset's)")
    p.add_argument("--object-threshold", type=float, help="object_mask_threshold (default: the preset's)")
    p.add_argument("--overlap-threshold", type=float, help="overlap_threshold (default: the preset's)")
    p.add_argument("--random-weights", action="store_true",
                   help="build the preset's architecture without its pretrained weights (offline trials)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the random initialisation of weights a preset does not load (reproducible runs)")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="what runs the networks (default: the preset's); onnxruntime needs --onnx-dir")
    p.add_argument("--onnx-dir", help="an `ovseg export` folder (with --runtime onnxruntime)")


def model_from_args(args: argparse.Namespace):
    """(Segmenter, the preset overrides used) from :func:`add_model_arguments`' options;
    raises ValueError/FileNotFoundError with the loader's message on a bad preset or file."""
    overrides = {}
    if args.object_threshold is not None:
        overrides["inference.object_mask_threshold"] = args.object_threshold
    if args.overlap_threshold is not None:
        overrides["inference.overlap_threshold"] = args.overlap_threshold
    if args.random_weights:
        overrides.update({"clip.pretrained": None, "proposals.pretrained": None})
    if getattr(args, "runtime", None):
        overrides["runtime"] = args.runtime
    if getattr(args, "onnx_dir", None):
        overrides["onnx.dir"] = args.onnx_dir
    import torch  # heavy imports only once the cheap argument checks passed
    from .build import build_segmenter
    torch.manual_seed(args.seed)
    return build_segmenter(args.preset, weights=args.weights, device=args.device, overrides=overrides), overrides


DELEGATED_HELP = {"train": "train a mask classifier from a recipe (ovseg train --help)",
                  "evaluate": "a preset over a dataset split: PQ, mIoU (ovseg evaluate --help)",
                  "export": "ONNX models (+ TensorRT engines) of a preset for deployment (ovseg export --help)"}


def _delegate(command: str, argv: List[str]) -> int:
    """`ovseg train`, `ovseg evaluate` and `ovseg export` are the trainer's, the benchmark
    runner's and the exporter's own command lines (the first two also run by torchrun as
    training/train.py, training/evaluate.py)."""
    if command == "train":
        from .training.cli import main as run
    elif command == "export":
        from .export.cli import main as run
    else:
        from .evaluation.runner import main as run
    return run(argv, prog=f"ovseg {command}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovseg", description="Open-vocabulary panoptic segmentation")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("segment", help="segment images with a vocabulary")
    s.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    s.add_argument("--vocab", required=True,
                   help='classes separated by ";", synonyms by ",", "[stuff]" marks stuff: '
                        '"car; road [stuff]; person,child"')
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--batch-size", type=int, default=1, help="images per forward")
    add_model_arguments(s)
    s.add_argument("--quiet", action="store_true", help="do not print the segment tables")
    s.add_argument("--profile", action="store_true",
                   help="print each call's time per stage (preprocess, vocabulary, proposals, classifier, "
                        "merge) and their median / 95th percentile at the end")
    s.add_argument("--overlay-size", type=int, default=DEFAULT_MIN_SIZE,
                   help="draw overlays of smaller images upscaled to this longer side in pixels, so "
                        "the labels are legible (default %(default)s; 0: at the image's size)")
    # Delegated whole to their own parsers (main() hands them the rest of the line); listed
    # here so that `ovseg --help` shows them.
    for name, help_text in DELEGATED_HELP.items():
        sub.add_parser(name, help=help_text, add_help=False)
    c = sub.add_parser("params", help="count what a preset's trainable policy trains")
    c.add_argument("--preset", default="smart_vitl14_336_swinb")
    c.add_argument("--trainable", help="another policy than the preset's (ovseg_core.trainable.POLICIES)")
    c.add_argument("--lora-rank", type=int, help="LoRA rank, with --trainable lora")
    ls = sub.add_parser("labelspace", help="write a label-space file's ids for a mapper (Hydra)")
    e = ls.add_subparsers(dest="action", required=True).add_parser(
        "export", help="Hydra's label-space YAML or the colormap CSV (docs/mapping.md)")
    e.add_argument("file", type=Path, help="a label-space YAML (the node's label_space parameter)")
    e.add_argument("--format", choices=("hydra", "csv"), required=True,
                   help="hydra: label-space YAML; csv: colormap name,red,green,blue,alpha,id")
    e.add_argument("--out", type=Path, required=True, help="file to write")
    for name, what in (("dynamic", "moving classes (Hydra's dynamic_labels)"),
                       ("objects", "classes Hydra makes object nodes of (object_labels)"),
                       ("surfaces", "classes Hydra puts surface places on (surface_places_labels)")):
        e.add_argument(f"--{name}", default="", help=f"comma-separated label names: {what}")
    e.add_argument("--fill-gaps", action="store_true",
                   help="accept sparse ids: list the missing ones as invalid placeholders (default: refuse)")
    return p


def export_label_space(args: argparse.Namespace) -> int:
    """`ovseg labelspace export`: the mapper's files from the node's label-space file."""
    from .label_space import LabelSpace, export, missing_ids
    split = lambda text: [n.strip() for n in text.split(",") if n.strip()]  # noqa: E731
    try:
        space = LabelSpace.load(args.file)
        text = export(space, args.format, split(args.dynamic), split(args.objects), split(args.surfaces),
                      args.fill_gaps)
    except ValueError as err:
        print(f"ovseg labelspace: {err}", file=sys.stderr)
        return 2
    if args.format == "hydra" and not args.objects:
        print("ovseg labelspace: note: no --objects, so object_labels is empty and Hydra makes no object "
              "nodes; name the thing classes with --objects car,person,...", file=sys.stderr)
    gaps = missing_ids(space)
    if gaps:
        print(f"ovseg labelspace: warning: {len(gaps)} unused ids written as invalid placeholders "
              f"unused_ID; the mapper keeps {len(gaps) + len(space.entries())} labels per voxel. Renumber "
              f"the ids 0..{len(space.entries()) - 1} to save that memory", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({args.format})", file=sys.stderr)
    return 0


def count_params(preset: str, trainable: Optional[str] = None, lora_rank: Optional[int] = None) -> int:
    """Builds the preset's classifier with random weights and prints its trainable parts."""
    from .build import build_classifier
    from .config import load_preset, size_pair
    from .trainable import apply_trainable, describe_trainable, format_trainable
    from .weights import create_clip
    overrides = {"clip.pretrained": None}
    overrides.update({k: v for k, v in (("classifier.trainable", trainable),
                                        ("classifier.lora_rank", lora_rank)) if v is not None})
    cfg = load_preset(preset, overrides)
    clip = create_clip(cfg.clip.model, None, cfg.name)
    classifier = build_classifier(cfg.classifier, clip, clip.visual, size_pair(cfg.clip.input_size), cfg.name)
    policy = cfg.classifier.trainable
    names = apply_trainable(classifier, policy, clip, lora_rank=cfg.classifier.lora_rank)
    table = describe_trainable(classifier, names)
    rank = f", rank {cfg.classifier.lora_rank}" if policy == "lora" else ""
    print(f"preset {cfg.name} ({cfg.clip.model}, policy {policy}{rank}):")
    print(format_trainable(table))
    print(f"  {'all classifier parameters':<38} {sum(p.numel() for p in classifier.parameters()):>12,}")
    return sum(row["parameters"] for row in table.values())


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED_HELP:
        return _delegate(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "labelspace":
        return export_label_space(args)
    if args.command == "params":
        try:
            count_params(args.preset, args.trainable, args.lora_rank)
        except ValueError as err:
            print(f"ovseg: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        vocabulary = Vocabulary.parse(args.vocab)
    except ValueError as err:
        print(f"ovseg: bad --vocab: {err}", file=sys.stderr)
        return 2
    try:
        segmenter, _ = model_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"ovseg: {err}", file=sys.stderr)
        return 2

    (args.out / "panoptic").mkdir(parents=True, exist_ok=True)
    annotations, images_info, failed, timings = [], [], [], []
    batches = [args.images[i:i + args.batch_size] for i in range(0, len(args.images), args.batch_size)]
    bar = tqdm(total=len(args.images), unit="img", disable=len(args.images) < 2, file=sys.stderr)
    for batch in batches:
        loaded = []
        for path in batch:
            try:
                loaded.append((path, read_image(path)))
            except ValueError as err:
                failed.append(str(err))
                print(f"ovseg: skipped {err}", file=sys.stderr)
        if loaded:
            results = segmenter([im for _, im in loaded], vocabulary)
            if args.profile:
                timings.append(segmenter.last_timings)
                tqdm.write(f"{', '.join(path.name for path, _ in loaded)}: " + ", ".join(
                    f"{name} {seconds * 1000:.1f} ms" for name, seconds in timings[-1].items()), file=sys.stderr)
            for (path, image), result in zip(loaded, results):
                _write_outputs(args.out, path, image, result, len(images_info), annotations, images_info,
                               args.overlay_size)
                if not args.quiet:
                    tqdm.write(segment_table(path.name, result))
        bar.update(len(batch))
    bar.close()
    if args.profile and timings:
        print(stage_table(timings), file=sys.stderr)
    write_panoptic_json(str(args.out / "panoptic.json"), images_info, annotations,
                        categories(vocabulary.names, vocabulary.is_thing))
    print(f"wrote {len(images_info)} result(s) to {args.out} (overlays *_overlay.png, "
          f"panoptic/*.png, panoptic.json)", file=sys.stderr)
    if failed:
        print(f"ovseg: {len(failed)} image(s) skipped", file=sys.stderr)
    return 1 if failed else 0


def _write_outputs(out: Path, path: Path, image, result, image_id, annotations, images_info,
                   overlay_size: int = DEFAULT_MIN_SIZE):
    stem = f"{path.stem}" if not any(i["file_name"] == f"{path.stem}.png" for i in images_info) \
        else f"{path.stem}_{image_id}"
    drawn = overlay(image, result, min_size=overlay_size)
    cv2.imwrite(str(out / f"{stem}_overlay.png"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    write_panoptic_png(str(out / "panoptic" / f"{stem}.png"), result)
    images_info.append({"id": image_id, "file_name": f"{stem}.png", "height": image.shape[0],
                        "width": image.shape[1]})
    annotations.append(panoptic_annotation(image_id, f"{stem}.png", result))


if __name__ == "__main__":
    sys.exit(main())
