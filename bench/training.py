"""Training speed benchmark: the real trainer (``ovseg_core.training.Trainer``) on presets
built offline with random weights, on generated ShapesWorld crops.

Per preset it prints iterations/s and images/s (median over the timed steps, after
warm-up steps), peak memory (CUDA: max allocated; CPU: the process's peak RSS), the
frozen mask generator's share of a step (timed inside each step) and the trainable
parameters next to the papers' 26M. On a GPU it also runs the paper preset
(``smart_vitl14_336_swinb``, 896 px CLIP, 1024 px crops) and extrapolates 25k iterations
at batch 16 to GPU hours, against the papers' 45 GPU hours (SMART sec. 4.1).

    .venv/bin/python bench/training.py                      # CPU: tiny + vitb16_swint (448 px)
    .venv/bin/python bench/training.py --device cuda        # + the paper preset, full sizes
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from ovseg_core.training.loop import Trainer
from ovseg_core.training.recipe import Recipe, _build, validate
from ovseg_core.trainable import describe_trainable

PAPER_TRAINABLE = 26e6
PAPER_GPU_HOURS = 45.0  # 25k iterations, batch 16 (SMART, implementation details)


def recipe_for(preset: str, crop: int, clip_size: int, batch: int, steps: int, proposal_model: str) -> Recipe:
    data = {"name": f"bench_{preset}", "preset": preset, "method": "smart", "seed": 0,
            "data": {"dataset": "shapes", "crop_size": crop, "shapes_size": 128, "num_workers": 0,
                     "scale_range": [1.0, 1.0]},
            "optim": {"batch_size": batch, "max_iters": steps, "warmup_iters": 1},
            "checkpoint_every": 10 ** 9, "log_every": 10 ** 9}
    recipe = _build(Recipe, data, "bench")
    recipe.model = {"clip.pretrained": None, "proposals.pretrained": None, "proposals.model": proposal_model,
                    "clip.input_size": clip_size, "proposals.input_size": crop, "classifier.learned_void": True}
    validate(recipe, "bench")
    return recipe


def run(preset: str, crop: int, clip_size: int, batch: int, warmup: int, steps: int, device: str,
        proposal_model: str) -> dict:
    recipe = recipe_for(preset, crop, clip_size, batch, warmup + steps, proposal_model)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        trainer = Trainer(recipe, Path(tmp) / "run", device=device, progress=False)
        params = sum(r["parameters"] for r in describe_trainable(trainer.classifier, trainer.names).values())
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        trainer.recipe.log_every = 1  # every step's time, mask-generator share and memory go to metrics.csv
        trainer.fit()
        with open(Path(tmp) / "run" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    times = [float(r["seconds"]) for r in rows]
    shares = [float(r["proposal_share"]) for r in rows[warmup:]]
    peak = max(float(r["peak_memory_mb"]) for r in rows)
    sec = statistics.median(times[warmup:])
    return {"preset": preset, "crop": crop, "clip": clip_size, "batch": batch, "it_s": 1 / sec,
            "img_s": batch / sec, "sec": sec, "peak_mb": peak, "share": statistics.median(shares),
            "params": params}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=None, help="timed steps per preset (default: 5 CPU, 20 GPU)")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    steps = args.steps or (20 if gpu else 5)
    configs = [("tiny", 128, 128, 4, "tiny"),
               ("vitb16_swint", 1024 if gpu else 448, 896 if gpu else 448, 16 if gpu else 1, "swin-tiny")]
    if gpu:
        configs.append(("smart_vitl14_336_swinb", 1024, 896, 8, "swin-base"))
    rows = [run(preset, crop, clip, batch, 2, steps, args.device, model)
            for preset, crop, clip, batch, model in configs]
    print(f"{'preset':<24} {'crop':>5} {'clip':>5} {'batch':>5} {'it/s':>7} {'img/s':>7} {'peak MB':>9} "
          f"{'M2F share':>9} {'trainable':>12}  vs papers' 26M")
    for r in rows:
        print(f"{r['preset']:<24} {r['crop']:>5} {r['clip']:>5} {r['batch']:>5} {r['it_s']:>7.3f} {r['img_s']:>7.2f} "
              f"{r['peak_mb']:>9,.0f} {r['share']:>9.2f} {r['params']:>12,}  {r['params'] / PAPER_TRAINABLE:.2f}x")
    from ovseg_core.config import load_preset
    from ovseg_core.build import build_from_config
    cfg = load_preset("smart_vitl14_336_swinb", {"clip.pretrained": None, "proposals.pretrained": None,
                                                  "proposals.model": "tiny", "device": "cpu"})
    seg = build_from_config(cfg)
    paper = sum(r["parameters"] for r in describe_trainable(seg.classifier, seg.trainable).values())
    print(f"paper preset smart_vitl14_336_swinb trains {paper:,} parameters ({paper / PAPER_TRAINABLE:.2f}x the "
          f"papers' 26M)")
    for r in rows:
        if r["preset"] == "smart_vitl14_336_swinb":
            hours = 25000 * (16 / r["batch"]) * r["sec"] / 3600
            print(f"25k iterations at batch 16 on this GPU: {hours:.1f} GPU hours vs the papers' {PAPER_GPU_HOURS:.0f} "
                  f"(ratio {hours / PAPER_GPU_HOURS:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
