"""Evaluates the `shapes` preset on fresh ShapesWorld scenes (seeds never used in training):

    .venv/bin/python training/eval_shapes.py --num 100 --seed 100000 --out out/shapes/eval.json

- PQ and mIoU over all 44 classes, averaged separately over seen and unseen classes,
  with the preset's Mask2Former proposals and with oracle (ground-truth) masks: the
  papers' Figure 2 analysis (how much is mask quality, how much classification);
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
    in %, averaged over each group of class indices (e.g. seen / unseen)."""
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
    return out


def _gt(scene: Scene) -> List[dict]:
    """GT segments with class indices (category ids are index + 1), none crowd."""
    return [{"id": s["id"], "category_id": s["category_id"] - 1, "iscrowd": 0} for s in scene.segments]


def evaluate_segmenter(segmenter, scenes: List[Scene], vocab: Vocabulary, groups) -> dict:
    """PQ / mIoU with predicted and oracle masks, and oracle segment accuracy."""
    k = len(vocab)
    keys = ("predicted masks", "oracle masks")
    pq = {key: PQStat(k) for key in keys}
    sem = {key: SemanticStat(k) for key in keys}
    oracle = OracleProposals()
    correct = defaultdict(list)
    unseen = load_classes().unseen
    for scene in tqdm(scenes, desc="eval", file=sys.stderr):
        gt_segments = _gt(scene)
        gt_semantic = scene.semantic_map()
        proposals = oracle([scene.masks()])
        for key, props in zip(keys, (None, proposals)):
            r = segmenter(scene.image, vocab, proposals=props)
            pq[key] += pq_image(scene.segment_map, gt_segments, r.segment_map,
                                [{"id": s.id, "category_id": s.class_index} for s in r.segments], k)
            sem[key].update(r.semantic_map, gt_semantic)
        image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            _, probs = segmenter.predict(image.to(segmenter.device), vocab, proposals)
        pred = probs[0, :, :k].argmax(-1).tolist()
        for seg, p in zip(scene.segments, pred):
            correct["unseen" if seg["class_name"] in unseen else "seen"].append(p == seg["category_id"] - 1)
            if seg["isthing"]:  # which half of "color shape" the mask token gets right
                words, said = seg["class_name"].split(" "), vocab.names[p].split(" ")
                correct["thing color"].append(vocab.is_thing[p] and said[0] == words[0])
                correct["thing shape"].append(vocab.is_thing[p] and said[-1] == words[1])
            else:
                correct["stuff"].append(p == seg["category_id"] - 1)
    result = {key: group_summary(pq[key], sem[key], vocab, groups) for key in keys}
    result["oracle segment accuracy"] = {key: 100 * float(np.mean(correct[key]))
                                         for key in ("seen", "unseen", "stuff", "thing color", "thing shape")}
    result["oracle segment accuracy"]["chance"] = 100 / k
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="shapes")
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
    index = {n: i for i, n in enumerate(vocab.names)}
    groups = {"seen": [index[n] for n in world.seen(world.names)],
              "unseen": [index[n] for n in world.unseen_of(world.names)], "all": list(range(len(vocab)))}
    overrides = {key: value for key, value in (("clip.pretrained", args.clip_weights),
                                               ("clip.input_size", args.clip_input_size)) if value} or None
    cfg = load_preset(args.preset, overrides)
    cfg.device = "cpu"
    segmenter = build_from_config(cfg)
    scenes = [generate_scene(args.seed + i, size=args.size) for i in range(args.num)]
    report = {"preset": args.preset, "clip weights": args.clip_weights or "the preset's",
              "clip input size": cfg.clip.input_size, "scenes": args.num,
              "seed": args.seed, "size": args.size}
    report.update(evaluate_segmenter(segmenter, scenes, vocab, groups))

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
    lines = [f"preset {report['preset']}, {report['scenes']} fresh scenes (seeds {report['seed']}..."
             f"{report['seed'] + report['scenes'] - 1}), {report['size']} px, vocabulary: all 44 classes",
             f"CLIP weights: {report['clip weights']}, input {report['clip input size']} px",
             f"{'masks':16s} {'split':7s} {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'mIoU':>6s} classes"]
    for key in ("predicted masks", "oracle masks"):
        for split, v in report[key].items():
            lines.append(f"{key:16s} {split:7s} {v['PQ']:6.1f} {v['SQ']:6.1f} {v['RQ']:6.1f} {v['mIoU']:6.1f} "
                         f"{v['classes']}")
    for key in ("oracle segment accuracy", "clip zero-shot accuracy", "proposal recall"):
        lines.append(f"{key}: " + ", ".join(f"{k} {v:.1f}%" for k, v in report[key].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
