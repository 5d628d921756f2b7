"""Evaluates a ShapesWorld preset (and a trained delta) on fresh scenes (seeds never used
in training or selection):

    .venv/bin/python training/eval_shapes.py --num 100 --seed 777000 --out out/shapes/eval.json
    .venv/bin/python training/eval_shapes.py --num 100 --seed 777000 \
        --preset runs/NAME/preset.yaml --weights runs/NAME/delta.safetensors

- PQ and mIoU over all 44 classes, averaged separately over class groups (all, things,
  stuff, seen, unseen, and unseen things and unseen stuff alone: the two unseen stuff
  classes would otherwise hide how unseen things do), with the preset's Mask2Former
  proposals and with oracle (ground-truth) masks: the papers' Figure 2 analysis (how
  much is mask quality, how much classification);
- a chance row for each: the same masks with random labels of the same kind (a thing
  segment gets a random thing class, a stuff segment a random stuff class; seeded by the
  scene), scored by the same code, so every number has its floor beside it;
- oracle segment accuracy (the class CLIP gives each ground-truth segment) against
  chance (1 / number of classes), and for things how often its color and its shape
  alone are right (chance 1/6 each);
- CLIP's zero-shot accuracy on single-object views, seen vs unseen things;
- proposal recall: share of ground-truth segments some proposal covers with IoU > 0.5.

PQ follows panopticapi (a match is same class and IoU > 0.5; PQ per class, averaged
over classes with any TP, FP or FN); mIoU is over classes present in the ground truth.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ovseg_core.build import build_from_config  # noqa: E402
from ovseg_core.config import load_preset, resolve_path  # noqa: E402
from ovseg_core.evaluation import PQStat, SemanticStat, pq_image  # noqa: E402
from ovseg_core.modeling.proposals import OracleProposals  # noqa: E402
from ovseg_core.shapes.world import Scene, generate_scene, load_classes  # noqa: E402
from ovseg_core.vocabulary import Vocabulary  # noqa: E402
from ovseg_core.weights import create_clip  # noqa: E402
from train_clip_shapes import MODEL, zero_shot_accuracy  # noqa: E402
from train_proposals_shapes import proposal_recall  # noqa: E402


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


MASK_ROWS = ("predicted masks", "oracle masks")
CHANCE = ", random labels"       # suffix of the chance row of each mask row


def evaluate_segmenter(segmenter, scenes: List[Scene], vocab: Vocabulary, groups, seed: int = 0) -> dict:
    """PQ / mIoU with predicted and oracle masks, each beside its chance row (the same
    segments with random labels of the same kind; scene i draws them from seed [seed, i]),
    and oracle segment accuracy."""
    k = len(vocab)
    keys = tuple(key + suffix for key in MASK_ROWS for suffix in ("", CHANCE))
    pq = {key: PQStat(k) for key in keys}
    sem = {key: SemanticStat(k) for key in keys}
    oracle = OracleProposals()
    correct = defaultdict(list)
    unseen = load_classes().unseen
    for i, scene in enumerate(tqdm(scenes, desc="eval", file=sys.stderr)):
        gt_segments = _gt(scene)
        gt_semantic = scene.semantic_map()
        proposals = oracle([scene.masks()])
        rng = np.random.default_rng([seed, i])
        for key, props in zip(MASK_ROWS, (None, proposals)):
            r = segmenter(scene.image, vocab, proposals=props)
            segments = [{"id": s.id, "category_id": s.class_index} for s in r.segments]
            pq[key] += pq_image(scene.segment_map, gt_segments, r.segment_map, segments, k)
            sem[key].update(r.semantic_map, gt_semantic)
            chance_map, chance_segments, chance_semantic = random_labels(
                r.segment_map, segments, r.semantic_map, vocab.is_thing, rng)
            pq[key + CHANCE] += pq_image(scene.segment_map, gt_segments, chance_map, chance_segments, k)
            sem[key + CHANCE].update(chance_semantic, gt_semantic)
        image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            _, probs = segmenter.predict(image.to(segmenter.device), vocab, proposals)
        pred = probs[0, :, :k].argmax(-1).tolist()
        for seg, p in zip(scene.segments, pred):
            correct["unseen" if seg["class_name"] in unseen else "seen"].append(p == seg["category_id"] - 1)
            if seg["isthing"]:
                correct["unseen things" if seg["class_name"] in unseen else "seen things"].append(
                    p == seg["category_id"] - 1)
                # which half of "color shape" the mask token gets right
                words, said = seg["class_name"].split(" "), vocab.names[p].split(" ")
                correct["thing color"].append(vocab.is_thing[p] and said[0] == words[0])
                correct["thing shape"].append(vocab.is_thing[p] and said[-1] == words[1])
            else:
                correct["stuff"].append(p == seg["category_id"] - 1)
    result = {key: group_summary(pq[key], sem[key], vocab, groups) for key in keys}
    result["oracle segment accuracy"] = {key: 100 * float(np.mean(correct[key])) if correct[key] else float("nan")
                                         for key in ("seen", "unseen", "seen things", "unseen things", "stuff",
                                                     "thing color", "thing shape")}
    result["oracle segment accuracy"]["chance"] = 100 / k
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="shapes", help="a preset name or YAML path (a training run's "
                   "runs/NAME/preset.yaml)")
    p.add_argument("--weights", help="a trained delta (a run's runs/NAME/delta.safetensors) on top of the preset")
    p.add_argument("--num", type=int, default=100, help="fresh scenes")
    p.add_argument("--seed", type=int, default=100_000, help="scene i has seed SEED + i")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--clip-weights", help="a CLIP checkpoint to evaluate instead of the preset's (e.g. a "
                   "training run's --checkpoint)")
    p.add_argument("--clip-input-size", type=int, help="the classifier's CLIP input size instead of the preset's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="out/shapes/eval.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    world = load_classes()
    vocab = Vocabulary.parse(world.vocabulary_text())
    groups = class_groups(world, vocab)
    overrides = {key: value for key, value in (("clip.pretrained", args.clip_weights),
                                               ("clip.input_size", args.clip_input_size)) if value} or None
    cfg = load_preset(args.preset, overrides)
    cfg.device = "cpu"
    if args.weights:
        cfg.weights = args.weights
    segmenter = build_from_config(cfg)
    scenes = [generate_scene(args.seed + i, size=args.size) for i in range(args.num)]
    report = {"preset": args.preset, "weights": cfg.weights or "none (frozen)",
              "clip weights": args.clip_weights or "the preset's",
              "clip input size": cfg.clip.input_size, "scenes": args.num,
              "seed": args.seed, "size": args.size}
    report.update(evaluate_segmenter(segmenter, scenes, vocab, groups, seed=args.seed))

    clip = create_clip(MODEL, resolve_path(cfg.clip.pretrained), args.preset)
    import open_clip
    report["clip zero-shot accuracy"] = {k: 100 * v for k, v in zero_shot_accuracy(
        clip, open_clip.get_tokenizer(MODEL), views_per_class=20, seed=args.seed).items()}
    report["clip zero-shot accuracy"]["chance"] = 100 / len(world.things)
    report["clip zero-shot accuracy"]["chance color / shape"] = 100 / len(world.colors)
    report["proposal recall"] = {k: 100 * v for k, v in proposal_recall(
        segmenter.proposals, num_scenes=args.num, seed=args.seed, size=args.size).items()}
    report["seconds"] = round(time.time() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(format_report(report))


def format_report(report: dict) -> str:
    """PQ (then SQ, RQ, mIoU) per class group, one row per mask source, each followed by
    its chance row."""
    lines = [f"preset {report['preset']}, weights: {report['weights']}, {report['scenes']} fresh scenes "
             f"(seeds {report['seed']}...{report['seed'] + report['scenes'] - 1}), {report['size']} px, "
             f"vocabulary: all 44 classes",
             f"CLIP weights: {report['clip weights']}, input {report['clip input size']} px"]
    rows = [key for key in report if key.split(CHANCE)[0] in MASK_ROWS]
    groups = list(report[rows[0]])
    for metric in ("PQ", "SQ", "RQ", "mIoU"):
        lines.append(f"{metric:33s} " + " ".join(f"{g:>13s}" for g in groups))
        for key in rows:
            lines.append(f"{'  ' + key:33s} " + " ".join(f"{report[key][g][metric]:13.1f}" for g in groups))
    lines.append("GT segments matched with the right class (TP / GT)")
    for key in rows:
        lines.append(f"{'  ' + key:33s} " + " ".join(
            f"{report[key][g]['TP']:>6d}/{report[key][g]['GT segments']:<6d}" for g in groups))
    lines.append(f"{'classes counted in PQ':33s} " + " ".join(f"{report[rows[0]][g]['classes']:13d}"
                                                              for g in groups))
    for key in ("oracle segment accuracy", "clip zero-shot accuracy", "proposal recall"):
        lines.append(f"{key}: " + ", ".join(f"{k} {v:.1f}%" for k, v in report[key].items()))
    lines.append(f"{report['seconds']} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
