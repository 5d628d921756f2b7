"""Train a mask classifier (SMART/FISA or Mask-Adapter) from a recipe.

    ovseg train --config config/train/shapes_smart.yaml
    torchrun --nproc_per_node 8 training/train.py --config config/train/smart_vitl14_336_swinb_coco.yaml \\
        --data-root $COCO
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        training/train.py --config ... --data-root $COCO          # two nodes

Writes runs/NAME/ (NAME: --name, else the recipe's name): recipe.yaml and preset.yaml
(resolved), git.txt, trainable.txt, metrics.csv, tensorboard/, validation.jsonl,
checkpoints/ and delta.safetensors, the trained tensors that ``--weights`` of
``ovseg segment``, ``ovseg evaluate`` and the node's ``weights`` parameter take
(with ``--preset runs/NAME/preset.yaml`` when the recipe changed preset keys).
``--resume`` continues exactly where the last checkpoint left off; ``--stop-at N``
ends a run at step N (a session-sized piece), to be resumed later.
(``training/train.py`` is this module as a script, for torchrun.)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional


from ovseg_core.config import parse_overrides
from ovseg_core.training.recipe import load_recipe, recipe_names


def _parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help=f"a recipe YAML or name: {', '.join(recipe_names())}")
    p.add_argument("--data-root", help="the training dataset's folder (overrides data.root)")
    p.add_argument("--eval-root", help="the validation dataset's folder (overrides eval.root)")
    p.add_argument("--name", help="run name (default: the recipe's name)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--resume", action="store_true", help="continue the run in runs/NAME from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete runs/NAME and start again")
    p.add_argument("--device", help="auto, cpu, cuda (default: the preset's; cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--stop-at", type=int, help="stop (with a checkpoint) at this step; --resume continues")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (optim.lr=3e-4) or a preset key (model.classifier.trainable=qkv); "
                        "values are YAML")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.csv)")
    return p


def shapes_validation_set(recipe, run_dir: Path) -> Path:
    """ShapesWorld validation scenes (all classes, unseen included), written once."""
    from ovseg_core.shapes.__main__ import write_scenes
    from ovseg_core.shapes.world import generate_scene
    out = run_dir / "validation_scenes"
    if not (out / "panoptic.json").is_file():
        seeds = range(recipe.eval.shapes_seed, recipe.eval.shapes_seed + recipe.eval.limit)
        write_scenes(out, [generate_scene(s, size=recipe.eval.shapes_size) for s in seeds],
                     [f"{s:08d}" for s in seeds])
    return out


def make_validator(recipe, run_dir: Path):
    """The recipe's validation set (None without one): a reader's split, or ShapesWorld
    scenes of every class written into the run directory at the first validation."""
    if not recipe.eval.dataset:
        return None
    from ovseg_core.datasets import load_dataset
    if recipe.eval.dataset == "shapes":
        return dataset_validator(lambda: load_dataset("panoptic_folder", shapes_validation_set(recipe, run_dir)),
                                 recipe.eval.limit)
    if not recipe.eval.root:
        raise ValueError(f"recipe {recipe.name!r}: eval.root is not set; pass --eval-root DIR")
    data = load_dataset(recipe.eval.dataset, recipe.eval.root, recipe.eval.split)  # a wrong path fails at start
    return dataset_validator(lambda: data, recipe.eval.limit)


def dataset_validator(load, limit: int):
    """validate(segmenter) -> PQ (All / Things / Stuff) and mIoU, in percent, on the first
    ``limit`` images of ``load()`` at their own size, through ``ovseg evaluate``'s
    per-image code. The data is loaded at the first call (on the main process only)."""
    from ..evaluation.runner import evaluate_image, merge
    args = SimpleNamespace(min_size=0, max_size=0, masks="model", classes="model")
    loaded = {}

    def validate(segmenter) -> dict:
        if not loaded:
            loaded["data"] = load()
        data = loaded["data"]
        vocab = data.vocabulary()
        records = [evaluate_image(segmenter, data, vocab, i, args, None, None)[0]
                   for i in range(min(len(data), limit))]
        merged = merge(records, data)
        out = {}
        if data.has_panoptic:
            pq = merged["pq"].summary(data.names, data.is_thing)
            out.update({f"PQ_{k}": 100 * pq[k]["pq"] for k in ("All", "Things", "Stuff") if pq[k]["pq"] is not None})
        semantic = merged["semantic"].summary(data.names, None)
        if semantic.get("mIoU") is not None:
            out["mIoU"] = 100 * semantic["mIoU"]
        return out
    return validate


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = _parser(prog).parse_args(argv)
    from ovseg_core.training.checkpoint import checkpoints
    from ovseg_core.training.loop import RunDirError, Trainer
    try:
        overrides = parse_overrides(args.set)
        if args.data_root:
            overrides["data.root"] = args.data_root
        if args.eval_root:
            overrides["eval.root"] = args.eval_root
        recipe = load_recipe(args.config, overrides)
        run_dir = args.runs_dir / (args.name or recipe.name)
        trainer = Trainer(recipe, run_dir, resume=args.resume, overwrite=args.overwrite, device=args.device,
                          validate=make_validator(recipe, run_dir), progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RunDirError) as err:
        print(f"train: {err}", file=sys.stderr)
        return 2
    step = trainer.fit(stop_at=args.stop_at)
    if trainer.is_main:
        done = "finished" if step >= recipe.optim.max_iters else f"stopped at step {step} (resume with --resume)"
        print(f"{done}: {run_dir}/delta.safetensors ({len(checkpoints(run_dir))} checkpoint(s) kept)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
