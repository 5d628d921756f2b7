"""Trains the tiny ShapesWorld Mask2Former class-agnostically: every ground-truth segment
(thing or stuff) is one "object" class, so the model learns to propose masks, and its
no-object probability becomes the pipeline's objectness.

    .venv/bin/python training/shapes/train_proposals_shapes.py --steps 3000 --seed 0 \
        --out weights/shapes/proposals

``--data multiscale`` draws each scene at a random size from 0.75x
to 1.75x the training size and resizes it to the training size (or to one of
``--sizes``, per step), so textures and things come at many scales, and draws 40% of the
scenes with many small things (radius 4-12 px): more small things for the proposals to
find. ``--same-color SHARE`` also draws that share of the multi-scale scenes with 2-6
things of one colour: the shipped model's misses were mostly two separate things of one
colour proposed as one mask (docs/experiments/2026-12-02-proposals-look-alikes.md), so these scenes teach it to tell
look-alikes apart by where they are. ``--no-object-weight`` sets Mask2Former's class-loss
weight on "no object" (0.1 in the paper), with which the objectness of unmatched queries
(e.g. a leftover mask over two look-alikes) is trained. Scenes stay square, in the
standard layout (the layout variants are never trained on). ``--init DIR`` starts from a
saved model's weights (fine-tuning; the optimizer and the learning-rate schedule start
afresh, so it continues a run only approximately).

Scenes hold seen classes only (ovseg_core/shapes/split.json): unseen things and stuff
never take part in segmentation training. Scene i of step s has seed
``numpy.random.default_rng([seed, s])``'s i-th draw, so the command reproduces the run.

Why its own loop and not the trainer (``ovseg_core.training``): the trainer keeps the
mask generator frozen by design (the papers never train it) and optimises the
classifier's losses; this trains Mask2Former itself with its own loss from transformers
(Hungarian matching, mask, dice and class terms), which the trainer does not compute.
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ovseg_core.modeling.proposals import Mask2FormerProposals
from ovseg_core.shapes.world import generate_scene, load_classes

# The "tiny" architecture, widened a little so it can learn ShapesWorld in CPU minutes;
# one label (object) for class-agnostic training.
ARCH = dict(backbone_config=dict(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
            feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128, encoder_layers=2,
            decoder_layers=4, num_attention_heads=4, dim_feedforward=128, num_queries=24, num_labels=1,
            train_num_points=2048)


def multiscale_scene(rng: np.random.Generator, size: int, classes, same_color: float = 0.0):
    """A seen-class scene drawn at a random scale and resized to ``size``: image [size,
    size, 3] uint8 and masks [N, size, size] bool (segments the resize erased left out).
    With probability ``same_color`` its things all have one colour."""
    source = int(rng.integers(size * 3 // 4, size * 7 // 4 + 1))
    small = rng.random() < 0.4
    num_things = (2, 8) if small else (1, 6)
    if same_color and rng.random() < same_color:   # no draw at 0: the plain multi-scale data stays bit-identical
        world = load_classes()
        color = str(rng.choice(list(world.colors)))
        classes = [c for c in classes if c in world.stuff or c.startswith(color + " ")]
        num_things = (2, 8) if small else (2, 6)
    scene = generate_scene(rng, size=source, num_things=num_things,
                           radius=(4, 12) if small else (5, 30), classes=classes)
    image = cv2.resize(scene.image, (size, size), interpolation=cv2.INTER_AREA if source > size else cv2.INTER_LINEAR)
    segment_map = cv2.resize(scene.segment_map, (size, size), interpolation=cv2.INTER_NEAREST)
    ids = np.array([s["id"] for s in scene.segments])
    masks = segment_map[None] == ids[:, None, None]
    return image, masks[masks.any((1, 2))]


def training_batch(rng: np.random.Generator, batch: int, size: int, data: str = "standard",
                   same_color: float = 0.0):
    """Seen-class scenes -> images [B, 3, H, W] in [0, 1] and per-image [N, H, W] masks."""
    seen = load_classes().seen(load_classes().names)
    if data == "multiscale":
        drawn = [multiscale_scene(rng, size, seen, same_color) for _ in range(batch)]
    else:
        drawn = [(s.image, s.masks()) for s in (generate_scene(rng, size=size, num_things=(1, 6), classes=seen)
                                                for _ in range(batch))]
    images = torch.from_numpy(np.stack([image for image, _ in drawn])).permute(0, 3, 1, 2).float() / 255.0
    return images, [torch.from_numpy(m).float() for _, m in drawn]


RECALL_GROUPS = ("thing", "stuff", "seen", "unseen", "unseen things", "small things")
SMALL_THING = 15  # px: a thing whose visible extent (bounding box, longer side) is below this is "small"


def best_match(scene, pred: torch.Tensor):
    """Ground-truth masks [G, H, W], ``pred`` as bool [Q, H, W] on the CPU, and for each
    ground-truth segment its best predicted mask's IoU and index ([G] each; 0 without
    predictions)."""
    gt = torch.from_numpy(scene.masks())
    pred = pred.to(torch.bool).cpu()
    if not len(pred):
        return gt, pred, torch.zeros(len(gt)), torch.zeros(len(gt), dtype=torch.long)
    inter = (gt[:, None] & pred[None]).flatten(2).sum(-1).float()
    union = (gt[:, None] | pred[None]).flatten(2).sum(-1).float()
    best_iou, best = (inter / union.clamp_min(1)).max(1)
    return gt, pred, best_iou, best


def add_recall_hits(hits: dict, scene, pred: torch.Tensor, iou: float = 0.5) -> dict:
    """Adds one scene to ``hits`` (group -> list of bools): whether some predicted mask
    (bool [Q, H, W] at the scene's size) covers each ground-truth segment with IoU >
    ``iou``, under its kind (thing / stuff), its split (seen / unseen) and, for unseen
    things and for small things (under ``SMALL_THING`` px across), that group too."""
    unseen = load_classes().unseen
    best = best_match(scene, pred)[2]
    for seg, b in zip(scene.segments, best.tolist()):
        hit = b > iou
        hits.setdefault("thing" if seg["isthing"] else "stuff", []).append(hit)
        hits.setdefault("unseen" if seg["class_name"] in unseen else "seen", []).append(hit)
        if seg["isthing"] and seg["class_name"] in unseen:
            hits.setdefault("unseen things", []).append(hit)
        if seg["isthing"] and max(seg["bbox"][2:]) < SMALL_THING:
            hits.setdefault("small things", []).append(hit)
    return hits


MISS_CAUSES = ("merged with a thing of its colour", "merged with another thing", "other")


def add_missed_things(causes: dict, scene, pred: torch.Tensor, iou: float = 0.5) -> dict:
    """Adds to ``causes`` (cause -> count) why each ground-truth thing that no predicted
    mask (bool [Q, H, W]) covers was missed: its best mask covers most of it together with
    another thing (IoU > ``iou`` with their union; first: one of its colour), or not."""
    gt, pred, best_iou, best = best_match(scene, pred)
    if not len(pred):
        return causes
    for i, seg in enumerate(scene.segments):
        if not seg["isthing"] or best_iou[i] > iou:
            continue
        mask = pred[best[i]]
        covers_most = (mask & gt[i]).sum() > iou * gt[i].sum()
        partners = [o for j, o in enumerate(scene.segments) if covers_most and j != i and o["isthing"]
                    and (mask & (gt[i] | gt[j])).sum() > iou * (mask | gt[i] | gt[j]).sum()]
        color = seg["class_name"].split(" ")[0]
        cause = ("other" if not partners else MISS_CAUSES[0]
                 if any(o["class_name"].split(" ")[0] == color for o in partners) else MISS_CAUSES[1])
        causes[cause] = causes.get(cause, 0) + 1
    return causes


def recall_summary(hits: dict) -> dict:
    """Group -> share of its segments hit (groups without segments left out)."""
    return {k: float(np.mean(hits[k])) for k in RECALL_GROUPS if hits.get(k)}


@torch.no_grad()
def proposal_recall(proposals: Mask2FormerProposals, num_scenes: int = 50, seed: int = 987_654, size: int = 128,
                    classes=None, iou: float = 0.5) -> dict:
    """Share of ground-truth segments (things / stuff, seen / unseen classes, unseen
    things) that some proposal covers with IoU > ``iou``, on square scenes fed as they
    are. (eval_shapes.py measures it through the segmenter's resize, on its scenes.)"""
    rng = np.random.default_rng(seed)
    hits = {}
    for _ in range(num_scenes):
        scene = generate_scene(rng, size=size, classes=classes)
        out = proposals(torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0)
        pred = torch.nn.functional.interpolate(out.masks, size=(size, size), mode="bilinear",
                                               align_corners=False)[0] > 0
        add_recall_hits(hits, scene, pred, iou)
    return recall_summary(hits)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--sizes", help="comma-separated training sizes, one drawn per step (multi-scale input); "
                                   "default: --size")
    p.add_argument("--data", choices=("standard", "multiscale"), default="standard",
                   help="standard: today's scenes; multiscale: random scales and more small things (docstring)")
    p.add_argument("--same-color", type=float, default=0.0, metavar="SHARE",
                   help="with --data multiscale: the share of scenes whose things all have one colour (docstring)")
    p.add_argument("--no-object-weight", type=float, metavar="W",
                   help="the class loss's weight on 'no object' (Mask2Former: 0.1); higher pushes unmatched "
                        "queries, e.g. one mask over two look-alikes, to a lower objectness")
    p.add_argument("--init", help="a save_pretrained Mask2Former directory whose weights to start from (fine-tuning; "
                        "optimizer and schedule start afresh)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--out", default="weights/shapes/proposals")
    p.add_argument("--checkpoint", default="out/shapes/proposals_last",
                   help="fp32 copy written at every evaluation (for inspection while training runs)")
    args = p.parse_args(argv)
    if args.same_color and args.data != "multiscale":
        p.error("--same-color needs --data multiscale")
    if not 0.0 <= args.same_color <= 1.0:
        p.error(f"--same-color is a share in [0, 1]; got {args.same_color}")
    if args.no_object_weight is not None and not args.no_object_weight > 0:
        p.error(f"--no-object-weight must be positive; got {args.no_object_weight}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.init:
        proposals = Mask2FormerProposals.from_pretrained(args.init)
        proposals.model.float()
    else:
        proposals = Mask2FormerProposals.from_arch("tiny", **copy.deepcopy(ARCH))
    sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else [args.size]
    model = proposals.model  # the wrapper keeps itself frozen; train the model inside it
    if args.no_object_weight is not None:   # the loss reads its buffer; the config records it
        model.config.no_object_weight = model.criterion.eos_coef = args.no_object_weight
        model.criterion.empty_weight[-1] = args.no_object_weight
    model.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    seen = load_classes().seen(load_classes().names)
    start = time.time()
    bar = tqdm(range(args.steps), desc="Mask2Former", mininterval=5)
    for step in bar:
        rng = np.random.default_rng([args.seed, step])
        size = sizes[int(rng.integers(len(sizes)))] if len(sizes) > 1 else sizes[0]
        images, masks = training_batch(rng, args.batch, size, args.data, args.same_color)
        pixels = (images - proposals.pixel_mean) / proposals.pixel_std
        out = model(pixel_values=pixels, mask_labels=masks,
                    class_labels=[torch.zeros(len(m), dtype=torch.long) for m in masks])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{out.loss.item():.3f}")
        if step % 20 == 0:
            logging.info("step %d loss %.4f lr %.2e elapsed %.0fs", step, out.loss.item(), sched.get_last_lr()[0],
                         time.time() - start)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            model.eval()
            recall = proposal_recall(proposals, classes=seen)
            model.train()
            logging.info("step %d proposal recall (IoU > 0.5, seen scenes): things %.3f stuff %.3f", step + 1,
                         recall["thing"], recall["stuff"])
            proposals.save_pretrained(args.checkpoint)
    model.eval()
    copy.deepcopy(model).half().save_pretrained(args.out)
    logging.info("wrote %s after %.0f s", args.out, time.time() - start)


if __name__ == "__main__":
    main()
