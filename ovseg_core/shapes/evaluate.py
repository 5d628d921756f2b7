"""Evaluates a ShapesWorld preset (and a trained delta) on fresh scenes (seeds never used
in training or selection):

    .venv/bin/python training/shapes/eval_shapes.py --num 100 --seed 777000 --out out/shapes/eval.json
    .venv/bin/python training/shapes/eval_shapes.py --num 100 --seed 777000 \
        --preset runs/NAME/preset.yaml --weights runs/NAME/delta.safetensors

Every number is reported for each of ``--layouts`` (default both): ``standard`` (scene i
is ``generate_scene(SEED + i, size=SIZE)``) and ``variants`` (scene i is
``variant_scene(SEED + i)``: the same seed's classes in one of ShapesWorld's
``LAYOUT_VARIANTS``, other sizes, aspect ratios, thing sizes, outlines, stuff partitions,
noise and JPEG; never used in training), each layout as its own table and side by side:

- PQ and mIoU over all 44 classes, averaged separately over class groups (all, things,
  stuff, seen, unseen, and unseen things and unseen stuff alone: the two unseen stuff
  classes would otherwise hide how unseen things do), with the preset's Mask2Former
  proposals, with those proposals and a perfect classifier ("predicted masks, oracle
  classes": each proposal gets the class of the ground-truth segment it overlaps most,
  then the pipeline's panoptic merge, as ``ovseg evaluate --classes oracle``) and
  with oracle (ground-truth) masks and our classifier: the papers' Figure 2 analysis (how
  much is mask quality, how much classification);
- a chance row for the predicted and the oracle masks: the same masks with random labels
  of the same kind (a thing segment gets a random thing class, a stuff segment a random
  stuff class; seeded by the scene), scored by the same code, so every number has its
  floor beside it;
- oracle segment accuracy (the class CLIP gives each ground-truth segment) against
  chance (1 / number of classes), and for things, all and seen and unseen ones apart,
  how often its color and its shape alone are right (chance 1/6 each);
- proposal recall on the same scenes: share of ground-truth segments some proposal
  (resized back from the mask generator's input as the pipeline does) covers with IoU >
  0.5, with small things (under 15 px across) apart; and how many of them the panoptic
  merge keeps: share of ground-truth segments that a segment of the "oracle classes"
  result covers with IoU > 0.5 (a covered thing can still lose its pixels to a duplicate
  proposal or to stuff);
- CLIP's zero-shot accuracy on single-object views, seen vs unseen things (one number,
  not per layout).

The JSON (``--out``) holds each layout's report under its name (``report["variants"]``)
and, as before, the standard layout's keys at the top level (``report["oracle masks"]``).

PQ follows panopticapi (a match is same class and IoU > 0.5; PQ per class, averaged
over classes with any TP, FP or FN); mIoU is over classes present in the ground truth.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ovseg_core.build import build_from_config
from ovseg_core.config import ClassifierConfig, load_preset, parse_overrides, resolve_path
from ovseg_core.modeling.classifiers import GeometricEnsemble
from ovseg_core.shapes.probe import probe, summarize as summarize_probe
from ovseg_core.evaluation import OracleClassifier, PQStat, SemanticStat, pq_image
from ovseg_core.modeling.proposals import OracleProposals
from ovseg_core.resize import crop_resize
from ovseg_core.segmenter import class_probabilities
from ovseg_core.shapes.world import (LAYOUT_VARIANTS, LAYOUTS, Scene, describe_layout, layout_scene,
                                     load_classes)
from ovseg_core.structures import MaskProposals
from ovseg_core.vocabulary import Vocabulary
from ovseg_core.weights import create_clip
from ovseg_core.shapes.train_clip import MODEL, zero_shot_accuracy
from ovseg_core.shapes.train_proposals import (MISS_CAUSES, RECALL_GROUPS, add_missed_things, add_recall_hits,
                                    recall_summary)


def group_summary(pq: PQStat, sem: SemanticStat, vocab: Vocabulary,
                  groups: Dict[str, Sequence[int]]) -> Dict[str, Dict[str, float]]:
    """PQ, SQ, RQ (over classes with TP + FP + FN > 0) and mIoU (over classes in the GT),
    in %, averaged over each group of class indices (e.g. seen / unseen); and the group's
    counts: GT segments, and how many of them a segment of the right class matched (TP)."""
    per_pq = pq.summary(vocab.names, vocab.is_thing)["per_class"]
    per_iou = sem.summary(vocab.names)["per_class"]
    out = {}
    for name, idx in groups.items():
        counted = [per_pq[vocab.names[i]] for i in idx if per_pq[vocab.names[i]]["present"]]
        ious = [per_iou[vocab.names[i]]["iou"] for i in idx if per_iou[vocab.names[i]]["iou"] is not None]
        out[name] = {key.upper(): 100 * float(np.mean([c[key] for c in counted])) if counted else float("nan")
                     for key in ("pq", "sq", "rq")}
        out[name]["mIoU"] = 100 * float(np.mean(ious)) if ious else float("nan")
        out[name]["classes"] = len(counted)
        out[name]["TP"] = int(sum(per_pq[vocab.names[i]]["tp"] for i in idx))
        out[name]["GT segments"] = int(sum(per_pq[vocab.names[i]]["tp"] + per_pq[vocab.names[i]]["fn"]
                                           for i in idx))
    return out


def random_labels(segment_map: np.ndarray, segments, semantic: np.ndarray, is_thing: Sequence[bool],
                  rng: np.random.Generator):
    """The chance prediction for one image: the same segments, each with a random class of
    its kind (thing or stuff), drawn uniformly from the vocabulary. Stuff segments that
    land on one class are merged into one segment, as the panoptic merge does. The
    semantic map keeps its regions: each predicted class is mapped to a random class of
    its kind. Returns (segment map, [{"id", "category_id"}], semantic map)."""
    is_thing = np.asarray(is_thing, bool)
    things, stuff = np.flatnonzero(is_thing), np.flatnonzero(~is_thing)
    draw = lambda thing: int(rng.choice(things if thing else stuff))  # noqa: E731
    lut = np.zeros(int(segment_map.max(initial=0)) + 1, np.int32)
    out, stuff_ids = [], {}
    for seg in segments:
        label = draw(bool(is_thing[seg["category_id"]]))
        if not is_thing[label] and label in stuff_ids:
            lut[seg["id"]] = stuff_ids[label]
            continue
        lut[seg["id"]] = seg["id"]
        if not is_thing[label]:
            stuff_ids[label] = seg["id"]
        out.append({"id": seg["id"], "category_id": label})
    class_map = np.array([draw(t) for t in is_thing], np.int32)
    return lut[segment_map], out, class_map[semantic]


def _gt(scene: Scene) -> List[dict]:
    """GT segments with class indices (category ids are index + 1), none crowd."""
    return [{"id": s["id"], "category_id": s["category_id"] - 1, "iscrowd": 0} for s in scene.segments]


CHANCE = ", random labels"       # suffix of the chance row of each mask row
ORACLE_CLASSES = "predicted masks, oracle classes"
ROWS = ("predicted masks", "predicted masks" + CHANCE, ORACLE_CLASSES, "oracle masks", "oracle masks" + CHANCE)


@torch.no_grad()
def oracle_class_result(segmenter, image: torch.Tensor, scene: Scene, vocab: Vocabulary):
    """The mask generator's proposals for ``image`` ([1, 3, H, W] in [0, 1]) with a perfect
    classifier (SMART/FISA Figure 2; ``ovseg evaluate --classes oracle``): each
    proposal gets the class of the ground-truth segment it overlaps most (void if none)
    at its own objectness, then the pipeline's panoptic merge. Returns the proposals'
    mask logits on the image [Q, H, W] (for recall) and the PanopticResult."""
    layout = segmenter.layout(image.to(segmenter.device))
    proposals = segmenter.propose(layout)
    valid = layout.proposal_valid[0]
    size = scene.segment_map.shape
    masks = crop_resize(proposals.masks[0].float(), valid, size)
    position = np.zeros(int(scene.segment_map.max()) + 1, np.int64)     # segment id -> its index + 1
    for j, s in enumerate(scene.segments):
        position[s["id"]] = j + 1
    classifier = OracleClassifier(len(vocab))
    classifier.targets = [(position[scene.segment_map], [s["category_id"] - 1 for s in scene.segments])]
    logits = classifier(None, MaskProposals(masks[None], proposals.objectness), None)
    probs = class_probabilities(logits, proposals.objectness, len(vocab))[0]
    # the pipeline's own post-processing (crop to the image, panoptic merge, semantic map)
    return masks, segmenter._postprocess(probs, proposals.masks[0], valid, size, vocab, None)


def evaluate_segmenter(segmenter, scenes: List[Scene], vocab: Vocabulary, groups, seed: int = 0,
                       desc: str = "eval") -> dict:
    """PQ / mIoU with predicted masks (beside the same masks with oracle classes) and
    oracle masks, each mask source beside its chance row (the same segments with random
    labels of the same kind; scene i draws them from seed [seed, i]); oracle segment
    accuracy; proposal recall. Scenes may differ in size."""
    k = len(vocab)
    pq = {key: PQStat(k) for key in ROWS}
    sem = {key: SemanticStat(k) for key in ROWS}
    oracle = OracleProposals()
    correct = defaultdict(list)
    hits, kept, missed = {}, {}, {}
    unseen = load_classes().unseen
    for i, scene in enumerate(tqdm(scenes, desc=desc, file=sys.stderr)):
        gt_segments = _gt(scene)
        gt_semantic = scene.semantic_map()
        proposals = oracle([scene.masks()])
        rng = np.random.default_rng([seed, i])
        image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():   # one classifier pass on the oracle masks: their row and the accuracy below
            _, probs = segmenter.predict(image.to(segmenter.device), vocab, proposals)
        oracle_result = segmenter._postprocess(probs[0], proposals.masks[0], (1.0, 1.0), scene.segment_map.shape,
                                               vocab, None)
        for key, r in (("predicted masks", segmenter(scene.image, vocab)), ("oracle masks", oracle_result)):
            segments = [{"id": s.id, "category_id": s.class_index} for s in r.segments]
            pq[key] += pq_image(scene.segment_map, gt_segments, r.segment_map, segments, k)
            sem[key].update(r.semantic_map, gt_semantic)
            chance_map, chance_segments, chance_semantic = random_labels(
                r.segment_map, segments, r.semantic_map, vocab.is_thing, rng)
            pq[key + CHANCE] += pq_image(scene.segment_map, gt_segments, chance_map, chance_segments, k)
            sem[key + CHANCE].update(chance_semantic, gt_semantic)
        masks, r = oracle_class_result(segmenter, image, scene, vocab)
        add_recall_hits(hits, scene, masks > 0)
        add_missed_things(missed, scene, masks > 0)
        ids = torch.tensor([s.id for s in r.segments], dtype=torch.int64)
        add_recall_hits(kept, scene, torch.from_numpy(r.segment_map.astype(np.int64))[None] == ids[:, None, None])
        segments = [{"id": s.id, "category_id": s.class_index} for s in r.segments]
        pq[ORACLE_CLASSES] += pq_image(scene.segment_map, gt_segments, r.segment_map, segments, k)
        sem[ORACLE_CLASSES].update(r.semantic_map, gt_semantic)
        pred = probs[0, :, :k].argmax(-1).tolist()
        for seg, p in zip(scene.segments, pred):
            right = p == seg["category_id"] - 1
            split = "unseen" if seg["class_name"] in unseen else "seen"
            correct[split].append(right)
            if seg["isthing"]:
                correct[f"{split} things"].append(right)
                # which half of "color shape" the mask token gets right
                words, said = seg["class_name"].split(" "), vocab.names[p].split(" ")
                color, shape = vocab.is_thing[p] and said[0] == words[0], vocab.is_thing[p] and said[-1] == words[1]
                for key in ("thing", f"{split} thing"):
                    correct[f"{key} color"].append(color)
                    correct[f"{key} shape"].append(shape)
            else:
                correct["stuff"].append(right)
    result = {key: group_summary(pq[key], sem[key], vocab, groups) for key in ROWS}
    result["oracle segment accuracy"] = {key: 100 * float(np.mean(correct[key])) if correct[key] else float("nan")
                                         for key in ("seen", "unseen", "seen things", "unseen things", "stuff",
                                                     "thing color", "thing shape", "seen thing color",
                                                     "seen thing shape", "unseen thing color", "unseen thing shape")}
    result["oracle segment accuracy"]["chance"] = 100 / k
    result["oracle segment accuracy"]["chance color / shape"] = 100 / len(load_classes().colors)
    result["proposal recall"] = {key: 100 * v for key, v in recall_summary(hits).items()}
    result["kept by the merge"] = {key: 100 * v for key, v in recall_summary(kept).items()}
    result["recall segments"] = {key: len(hits[key]) for key in recall_summary(hits)}  # each share's denominator
    result["missed things"] = {key: missed.get(key, 0) for key in MISS_CAUSES}
    return result


def class_groups(world, vocab: Vocabulary) -> Dict[str, List[int]]:
    """Class indices of each reported group; unseen things and unseen stuff apart."""
    index = {n: i for i, n in enumerate(vocab.names)}
    unseen = set(world.unseen_of(world.names))
    things = set(world.things)
    pick = lambda keep: [index[n] for n in world.names if keep(n)]  # noqa: E731
    return {"all": pick(lambda n: True), "things": pick(lambda n: n in things),
            "stuff": pick(lambda n: n not in things), "seen": pick(lambda n: n not in unseen),
            "unseen": pick(lambda n: n in unseen),
            "seen things": pick(lambda n: n in things and n not in unseen),
            "unseen things": pick(lambda n: n in things and n in unseen),
            "unseen stuff": pick(lambda n: n not in things and n in unseen)}


def parse_layouts(text: str) -> List[str]:
    layouts = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in layouts if t not in LAYOUTS]
    if not layouts or bad or len(set(layouts)) != len(layouts):
        raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list of {', '.join(LAYOUTS)}, "
                                         f"each at most once")
    return layouts


PROBE_OFFSET = 50_000     # the probe's seeds start here past --seed


def parse_ensemble(text: str) -> Tuple[float, float]:
    try:
        alpha, beta = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ALPHA,BETA, e.g. 0.4,0.8") from None
    if not (0 <= alpha <= 1 and 0 <= beta <= 1):
        raise argparse.ArgumentTypeError(f"{text!r}: ALPHA and BETA are weights in [0, 1]")
    return alpha, beta


def add_frozen_half(segmenter, cfg, world, alpha: float, beta: float) -> None:
    """Wraps the segmenter's (trained) classifier in a geometric ensemble whose second half
    is the frozen mask-attention classifier on the same base CLIP, and names ShapesWorld's
    seen classes as the in-vocabulary ones. Built apart, so a trained delta loads into the
    first half under its own names."""
    frozen = copy.deepcopy(cfg)
    frozen.weights = None
    frozen.classifier = ClassifierConfig(type="mask_attention")
    second = build_from_config(frozen).classifier
    segmenter.classifier = GeometricEnsemble(segmenter.classifier, second, alpha, beta).eval()
    segmenter.seen_classes = frozenset(world.seen(world.names))


def parse_radius(text: str) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want LO,HI in px, e.g. 4,7") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"{text!r}: want 0 < LO <= HI")
    return lo, hi


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="shapes", help="a preset name or YAML path (a training run's "
                   "runs/NAME/preset.yaml)")
    p.add_argument("--weights", help="a trained delta (a run's runs/NAME/delta.safetensors) on top of the preset")
    p.add_argument("--num", type=int, default=100, help="fresh scenes per layout")
    p.add_argument("--seed", type=int, default=100_000, help="scene i has seed SEED + i")
    p.add_argument("--size", type=int, default=128, help="the standard layout's scene size (variants have theirs)")
    p.add_argument("--radius", metavar="LO,HI", type=parse_radius,
                   help="the standard layout's thing circumradius range in px instead of 8,26 (e.g. 4,7: "
                        "things under 15 px across, for small-thing recall)")
    p.add_argument("--layouts", type=parse_layouts, default=list(LAYOUTS),
                   help="comma-separated: standard (generate_scene at --size), variants (ShapesWorld's "
                   "LAYOUT_VARIANTS, scene i in variant (SEED + i) mod %d); default: both" % len(LAYOUT_VARIANTS))
    p.add_argument("--clip-weights", help="a CLIP checkpoint to evaluate instead of the preset's (e.g. a "
                   "training run's --checkpoint)")
    p.add_argument("--clip-input-size", type=int, help="the classifier's CLIP input size instead of the preset's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset key (classifier.type=mask_pooling); values are YAML")
    p.add_argument("--ensemble", metavar="ALPHA,BETA", type=parse_ensemble,
                   help="FC-CLIP's geometric ensemble of the (trained) classifier with the frozen "
                   "mask-attention classifier on the same CLIP, ShapesWorld's seen classes as in-vocabulary "
                   "(FC-CLIP: 0.4,0.8)")
    p.add_argument("--probe", type=int, default=120, metavar="N",
                   help="the unseen-thing probe (ovseg_core.shapes.probe): N scenes with one unseen thing each, "
                   "seeds SEED + 50000 + i; 0: skip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="out/shapes/eval.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    world = load_classes()
    vocab = Vocabulary.parse(world.vocabulary_text())
    groups = class_groups(world, vocab)
    overrides = {key: value for key, value in (("clip.pretrained", args.clip_weights),
                                               ("clip.input_size", args.clip_input_size)) if value}
    try:
        overrides.update(parse_overrides(args.set))
    except ValueError as err:
        p.error(str(err))
    cfg = load_preset(args.preset, overrides or None)
    cfg.device = "cpu"
    if args.weights:
        cfg.weights = args.weights
    segmenter = build_from_config(cfg)
    if args.ensemble:
        add_frozen_half(segmenter, cfg, world, *args.ensemble)
    report = {"preset": args.preset, "weights": cfg.weights or "none (frozen)", "overrides": args.set,
              "ensemble": args.ensemble,
              "clip weights": args.clip_weights or "the preset's",
              "clip input size": cfg.clip.input_size, "scenes": args.num,
              "seed": args.seed, "size": args.size, "layouts": args.layouts}
    if args.radius:
        report["radius"] = list(args.radius)
    for layout in args.layouts:
        began = time.time()
        options = {"radius": args.radius} if args.radius and layout == "standard" else {}
        scenes = [layout_scene(args.seed + i, layout, size=args.size, **options) for i in range(args.num)]
        section = {"scenes": args.num, "seed": args.seed}
        if layout == "standard":
            section["size"] = args.size
        else:
            section["variants"] = [describe_layout(v) for v in LAYOUT_VARIANTS]
        section.update(evaluate_segmenter(segmenter, scenes, vocab, groups, seed=args.seed, desc=f"eval {layout}"))
        section["seconds"] = round(time.time() - began)
        report[layout] = section
    if "standard" in report:    # its keys at the top level too, as before the layouts
        report.update({key: value for key, value in report["standard"].items() if key != "seconds"})

    if args.probe:
        seeds = range(args.seed + PROBE_OFFSET, args.seed + PROBE_OFFSET + args.probe)
        report["unseen thing probe"] = {"seeds": [seeds.start, seeds.stop - 1],
                                        **summarize_probe(probe(segmenter, tqdm(seeds, desc="probe", file=sys.stderr)))}
    clip = create_clip(MODEL, resolve_path(cfg.clip.pretrained), args.preset)
    import open_clip
    report["clip zero-shot accuracy"] = {k: 100 * v for k, v in zero_shot_accuracy(
        clip, open_clip.get_tokenizer(MODEL), views_per_class=20, seed=args.seed).items()}
    report["clip zero-shot accuracy"]["chance"] = 100 / len(world.things)
    report["clip zero-shot accuracy"]["chance color / shape"] = 100 / len(world.colors)
    report["seconds"] = round(time.time() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(format_report(report))


COLOR_SHAPE = ("thing color", "thing shape", "seen thing color", "seen thing shape", "unseen thing color",
               "unseen thing shape", "chance color / shape")


def _layout_section(name: str, section: dict) -> List[str]:
    """One layout's table: PQ (then SQ, RQ, mIoU) per class group, one row per mask
    source, then matches, oracle accuracy and proposal recall."""
    first, last = section["seed"], section["seed"] + section["scenes"] - 1
    if "variants" in section:
        head = [f"== {name}: {section['scenes']} fresh scenes (seeds {first}...{last}); scene i in variant "
                f"i mod {len(section['variants'])}:"]
        head += [f"   {i} {v}" for i, v in enumerate(section["variants"])]
    else:
        head = [f"== {name}: {section['scenes']} fresh scenes (seeds {first}...{last}), {section['size']} px"]
    lines = head
    rows = [key for key in ROWS if key in section]
    groups = list(section[rows[0]])
    for metric in ("PQ", "SQ", "RQ", "mIoU"):
        lines.append(f"{metric:33s} " + " ".join(f"{g:>13s}" for g in groups))
        for key in rows:
            lines.append(f"{'  ' + key:33s} " + " ".join(f"{section[key][g][metric]:13.1f}" for g in groups))
    lines.append("GT segments matched with the right class (TP / GT)")
    for key in rows:
        lines.append(f"{'  ' + key:33s} " + " ".join(
            f"{section[key][g]['TP']:>6d}/{section[key][g]['GT segments']:<6d}" for g in groups))
    lines.append(f"{'classes counted in PQ':33s} " + " ".join(f"{section[rows[0]][g]['classes']:13d}"
                                                              for g in groups))
    accuracy = section["oracle segment accuracy"]
    lines.append("oracle segment accuracy: " + ", ".join(f"{k} {v:.1f}%" for k, v in accuracy.items()
                                                         if k not in COLOR_SHAPE))
    if "seen thing color" in accuracy:
        lines.append("oracle thing color / shape right: " + ", ".join(
            f"{who} {accuracy[key + ' color']:.1f}% / {accuracy[key + ' shape']:.1f}%"
            for who, key in (("all things", "thing"), ("seen things", "seen thing"),
                             ("unseen things", "unseen thing"))) + f", chance {accuracy['chance color / shape']:.1f}%")
    else:   # a report from before the split by seen / unseen
        lines.append("oracle thing color / shape right: " + ", ".join(
            f"{k} {accuracy[k]:.1f}%" for k in ("thing color", "thing shape") if k in accuracy))
    if "proposal recall" in section:
        lines.append("proposal recall (IoU > 0.5): " + ", ".join(f"{k} {v:.1f}%"
                                                                 for k, v in section["proposal recall"].items()))
    if "missed things" in section:
        lines.append(f"things no proposal covers ({sum(section['missed things'].values())} of "
                     f"{section['recall segments']['thing']}), by their best proposal: " + ", ".join(
                         f"{k} {v}" for k, v in section["missed things"].items()))
    if "kept by the merge" in section:
        lines.append("kept by the merge (a segment of the oracle-class result, IoU > 0.5): " + ", ".join(
            f"{k} {v:.1f}%" for k, v in section["kept by the merge"].items()))
    return lines


def _side_by_side(report: dict, layouts: Sequence[str]) -> List[str]:
    """The layouts as columns: PQ (all, things, stuff, unseen things) and mIoU per mask
    row, oracle accuracy and proposal recall."""
    pq_cols = (("PQ", "all"), ("PQ", "things"), ("PQ", "stuff"), ("PQ", "unseen things"), ("mIoU", "all"))
    names = ("PQ all", "things", "stuff", "unseen th", "mIoU")
    width = 10 * len(names)
    lines = [f"{'layouts side by side':33s} " + " | ".join(f"{name:^{width}s}" for name in layouts),
             f"{'':33s} " + " | ".join("".join(f"{n:>10s}" for n in names) for _ in layouts)]
    for key in ROWS:
        if all(key in report[name] for name in layouts):
            lines.append(f"{'  ' + key:33s} " + " | ".join(
                "".join(f"{report[name][key][g][m]:10.1f}" for m, g in pq_cols) for name in layouts))
    acc = {"seen things": "seen th", "unseen things": "unseen th", "stuff": "stuff", "thing color": "color",
           "thing shape": "shape"}
    lines.append(f"{'oracle segment accuracy, %':33s} " + " | ".join(
        "".join(f"{n:>10s}" for n in acc.values()) for _ in layouts))
    lines.append(f"{'':33s} " + " | ".join("".join(f"{report[name]['oracle segment accuracy'][k]:10.1f}"
                                                   for k in acc) for name in layouts))
    rec = RECALL_GROUPS
    for key in ("proposal recall", "kept by the merge"):
        if all(key in report[name] for name in layouts):
            lines.append(f"{key + ', %':33s} " + " | ".join(
                "".join(f"{n.replace('things', 'th'):>10s}" for n in rec) for _ in layouts))
            lines.append(f"{'':33s} " + " | ".join("".join(f"{report[name][key].get(k, float('nan')):10.1f}"
                                                           for k in rec) for name in layouts))
    return lines


def format_report(report: dict) -> str:
    """Per layout: PQ (then SQ, RQ, mIoU) per class group, one row per mask source (each
    followed by its chance row), oracle accuracy and recall; then the layouts side by side."""
    lines = [f"preset {report['preset']}, weights: {report['weights']}, vocabulary: all 44 classes",
             f"CLIP weights: {report['clip weights']}, input {report['clip input size']} px"]
    layouts = [name for name in report.get("layouts", ()) if isinstance(report.get(name), dict)]
    sections = [(name, report[name]) for name in layouts] or [("standard", report)]  # older reports: top level
    for name, section in sections:
        lines += [""] + _layout_section(name, section)
    if len(sections) > 1:
        lines += [""] + _side_by_side(report, layouts)
    lines += ["", "clip zero-shot accuracy: " + ", ".join(f"{k} {v:.1f}%"
                                                          for k, v in report["clip zero-shot accuracy"].items())]
    if "unseen thing probe" in report:
        pr = report["unseen thing probe"]
        lines.append(f"unseen-thing probe ({pr['scenes']} scenes, seeds {pr['seeds'][0]}...{pr['seeds'][1]}, one unseen "
                     f"thing each): named right at IoU > 0.5 {pr['hits']}/{pr['scenes']} = {100 * pr['hit rate']:.1f}% "
                     f"(chance {100 * pr['chance hit rate']:.1f}%), found {100 * pr['found rate']:.1f}%, of the found "
                     f"color right {100 * pr['color right of found']:.1f}%, shape right "
                     f"{100 * pr['shape right of found']:.1f}%")
    lines.append(f"{report['seconds']} s" + "".join(f", {name} {report[name]['seconds']} s" for name in layouts))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
