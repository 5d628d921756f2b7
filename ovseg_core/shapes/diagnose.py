"""Why unseen things are hard: the text tower and the mask tokens taken apart.

    .venv/bin/python training/shapes/diagnose_shapes.py --num 150 --seed 300000 \\
        [--preset P --weights W --clip-weights C]

Text tower (the vocabulary's class embeddings, as the classifier uses them):
- cosine similarity of same-color things ("red circle" vs "red square", "red hexagon")
  and of same-shape things: can the frozen text tower tell shapes apart at all?
- compositionality: the mean cosine of shape-difference vectors across colors
  (e.g. E[red star] - E[red circle] vs E[yellow star] - E[yellow circle]); and the analogy
  test: is E[c s'] + E[c' s] - E[c' s'] (seen things only) nearest to E[c s] among all 36
  things, for each unseen thing c s?

Mask tokens (oracle masks on the scenes of seeds SEED..SEED+NUM-1): for seen and for
unseen things apart, how often the mask embedding's nearest bare *shape word* ("star")
and *color word* ("red") is right (chance 1/6), beside the accuracy over the 44 classes.
A tower that knows shapes compositionally gets the shape word as right for unseen things
as for seen ones; one that learned "red things are circles, squares, ..." from the seen
classes alone does worse than chance on unseen things.

Linear shape probe: what a readout trained on the seen things alone can learn from the
mask embeddings (``shape_probe``), on them as they are and centred within each color.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ovseg_core.build import build_from_config
from ovseg_core.config import load_preset
from ovseg_core.modeling.proposals import OracleProposals
from ovseg_core.shapes.world import generate_scene, load_classes
from ovseg_core.vocabulary import Vocabulary


def text_report(segmenter, world) -> dict:
    vocab = Vocabulary.parse("; ".join(world.things))
    _, text = segmenter.encode_vocabulary(vocab)
    emb = {n: text.embeddings[i].float() for i, n in enumerate(vocab.names)}
    colors, shapes = list(world.colors), list(world.shapes)
    cos = lambda a, b: float(F.cosine_similarity(a, b, dim=0))  # noqa: E731
    same_color = [cos(emb[f"{c} {a}"], emb[f"{c} {b}"]) for c in colors for a, b in itertools.combinations(shapes, 2)]
    same_shape = [cos(emb[f"{a} {s}"], emb[f"{b} {s}"]) for s in shapes for a, b in itertools.combinations(colors, 2)]
    diffs = []
    for s1, s2 in itertools.combinations(shapes, 2):
        for c1, c2 in itertools.combinations(colors, 2):
            diffs.append(cos(emb[f"{c1} {s1}"] - emb[f"{c1} {s2}"], emb[f"{c2} {s1}"] - emb[f"{c2} {s2}"]))
    analogies = {}
    for name in (t for t in world.things if t in world.unseen):
        c, s = name.split(" ")
        estimate = torch.zeros_like(emb[name])
        for c2, s2 in itertools.product(colors, shapes):
            parts = (f"{c} {s2}", f"{c2} {s}", f"{c2} {s2}")
            if c2 != c and s2 != s and not any(p in world.unseen for p in parts):
                estimate += emb[parts[0]] + emb[parts[1]] - emb[parts[2]]
        analogies[name] = max(world.things, key=lambda t: cos(estimate, emb[t]))
    return {"cos red circle / red square": cos(emb["red circle"], emb["red square"]),
            "cos red circle / red hexagon": cos(emb["red circle"], emb["red hexagon"]),
            "mean cos same color, other shape": float(np.mean(same_color)),
            "mean cos same shape, other color": float(np.mean(same_shape)),
            "mean cos of shape differences across colors": float(np.mean(diffs)),
            "analogy nearest": analogies,
            "analogy right": sum(k == v for k, v in analogies.items())}


@torch.no_grad()
def mask_token_report(segmenter, world, seeds) -> dict:
    vocab = Vocabulary.parse(world.vocabulary_text())
    names = vocab.names
    _, shape_words = segmenter.encode_vocabulary(Vocabulary.parse("; ".join(world.shapes)))
    _, color_words = segmenter.encode_vocabulary(Vocabulary.parse("; ".join(world.colors)))
    hits, counts = Counter(), Counter()
    probe_data = []                                  # (feature, shape, color, unseen) per thing
    for seed in tqdm(seeds, desc="oracle masks", file=sys.stderr):
        scene = generate_scene(seed, size=128)
        image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0
        _, (logits, features) = segmenter.logits(image.to(segmenter.device), vocab,
                                                 OracleProposals()([scene.masks()]), return_embeddings=True)
        for seg, logit, feature in zip(scene.segments, logits[0], features[0]):
            if not seg["isthing"]:
                continue
            group = "unseen things" if seg["class_name"] in world.unseen else "seen things"
            color, shape = seg["class_name"].split(" ")
            said = names[int(logit[:len(names)].argmax())].split(" ")
            counts[group] += 1
            hits[group, "class"] += " ".join(said) == seg["class_name"]
            hits[group, "shape (of the class)"] += said[-1] == shape
            hits[group, "shape word"] += world.shapes[int((feature @ shape_words.embeddings.T).argmax())] == shape
            hits[group, "color word"] += list(world.colors)[int((feature @ color_words.embeddings.T).argmax())] == color
            probe_data.append((feature.float(), world.shapes.index(shape), list(world.colors).index(color),
                               seg["class_name"] in world.unseen))
    report = {group: {"things": counts[group], **{key: 100 * hits[group, key] / max(1, counts[group])
                                                 for key in ("class", "shape (of the class)", "shape word",
                                                             "color word")}}
              for group in ("seen things", "unseen things")}
    report["linear shape probe"] = shape_probe(probe_data)
    return report


def shape_probe(data, weight_decay: float = 0.01, seed: int = 0) -> dict:
    """What any readout trained on the seen classes learns: a linear softmax probe for the
    shape, fitted on the mask embeddings of 80% of the seen things (the rest held out),
    scored on held-out seen things and on unseen ones (percent; None when there are none).
    Fitted twice: on the embeddings as they are, and centred within each color (minus the
    mean of the training things of that color: the color offset removed, the shape left).
    Seen things show each color with five shapes only, so the first probe can learn "a red
    thing is no star"; the second cannot lean on the color."""
    if not data:
        return {}
    x = torch.stack([d[0] for d in data])
    shape, color, unseen = (torch.tensor([d[k] for d in data]) for k in (1, 2, 3))
    seen = torch.nonzero(~unseen).flatten()
    seen = seen[torch.randperm(len(seen), generator=torch.Generator().manual_seed(seed))]
    train, held = seen[:int(0.8 * len(seen))], seen[int(0.8 * len(seen)):]
    out = {"things": {"train": len(train), "held-out seen": len(held), "unseen": int(unseen.sum())}}
    centred = x.clone()
    for c in color.unique():
        mine = train[color[train] == c]
        if len(mine):
            centred[color == c] -= x[mine].mean(0)
    for name, feats in (("as is", x), ("centred within color", centred)):
        feats = feats / (feats[train].std(0) + 1e-6)
        w = torch.zeros(feats.shape[1], 6, requires_grad=True)
        b = torch.zeros(6, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(feats[train] @ w + b, shape[train]) + weight_decay * (w ** 2).sum()
            loss.backward()
            return loss

        if len(train):
            opt.step(closure)
        with torch.no_grad():
            right = (feats @ w + b).argmax(-1) == shape
        score = lambda idx: 100 * float(right[idx].float().mean()) if len(idx) else None  # noqa: E731
        out[name] = {"held-out seen": score(held), "unseen": score(torch.nonzero(unseen).flatten())}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="shapes")
    p.add_argument("--weights", help="a trained delta on top of the preset")
    p.add_argument("--clip-weights", help="a CLIP checkpoint instead of the preset's")
    p.add_argument("--num", type=int, default=150)
    p.add_argument("--seed", type=int, default=300_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the report as JSON here too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_preset(args.preset, {"clip.pretrained": args.clip_weights} if args.clip_weights else None)
    cfg.device = "cpu"
    cfg.weights = args.weights or cfg.weights
    segmenter = build_from_config(cfg)
    world = load_classes()
    report = {"preset": args.preset, "weights": cfg.weights, "clip weights": args.clip_weights or "the preset's",
              "seeds": [args.seed, args.seed + args.num - 1], "text": text_report(segmenter, world),
              "mask tokens, oracle masks": mask_token_report(segmenter, world, range(args.seed, args.seed + args.num))}
    text = report["text"]
    print(f"text tower: cos(red circle, red square) {text['cos red circle / red square']:.3f}, "
          f"cos(red circle, red hexagon) {text['cos red circle / red hexagon']:.3f}; mean cos same color "
          f"{text['mean cos same color, other shape']:.3f}, same shape {text['mean cos same shape, other color']:.3f}; "
          f"shape differences agree across colors: mean cos {text['mean cos of shape differences across colors']:.3f}; "
          f"analogy right for {text['analogy right']}/6 unseen things")
    tokens = report["mask tokens, oracle masks"]
    for group in ("seen things", "unseen things"):
        row = tokens[group]
        print(f"mask tokens, {group} ({row['things']}): class {row['class']:.1f}%, shape of the class "
              f"{row['shape (of the class)']:.1f}%, nearest shape word {row['shape word']:.1f}%, nearest color word "
              f"{row['color word']:.1f}% (chance 16.7%)")
    probe = tokens["linear shape probe"]
    pct = lambda v: "-" if v is None else f"{v:.1f}%"  # noqa: E731
    for name in ("as is", "centred within color"):
        if name in probe:
            print(f"linear shape probe on the mask embeddings, trained on seen things ({probe['things']['train']}), "
                  f"{name}: held-out seen {pct(probe[name]['held-out seen'])}, unseen {pct(probe[name]['unseen'])}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
