"""Pretrains the tiny ShapesWorld CLIP contrastively on generated image-caption pairs.

    .venv/bin/python training/shapes/train_clip_shapes.py --steps 1000 --seed 0 \
        --out weights/shapes/clip.safetensors

Images are drawn on the fly from the seed (step s draws from ``rng([seed, s])``), so a
run is reproducible from its command alone. Unseen things (ovseg_core/shapes/split.json)
never appear: CLIP must recognise them from their color and shape words, which it meets
with other partners. (``--caption-unseen`` lets the caption stage show and name them, as
web captions name the classes a segmentation dataset leaves out: issue 13's diagnostic of
the papers' setting, never shipped.)

CLIP trains on small windows (``--size``, 64 px) with things at the pixel scale of the
served 128 px scenes, and is saved at the config's size (position embeddings resized):
the same patches per object at a quarter of the cost per image.

The region stage (``--region-batch N --size 128 --init CAPTION_STAGE``) then trains the
tower as the classifier serves it: every ground-truth region of a scene through its own
mask token, scored against the names of all region classes (RegionCLIP-style region-text
pretraining; unseen things stay out here too). Without it the mask tokens name colors and
stuff but a thing's shape barely above chance.

Why its own loop and not the trainer (``ovseg_core.training``): the trainer fine-tunes a
segmenter's mask classifier against matched proposals with a frozen text tower and
cached class embeddings; this pretrains CLIP itself, both towers, contrastively on
captions of images drawn on the fly (no proposals, no matching, no panoptic loss), and
its region stage runs ground-truth masks through the encoder directly. Porting it would
mean a second objective and data path inside the trainer for one tiny model.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Optional

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ovseg_core.modeling.clip_encoder import MaskCLIPEncoder
from ovseg_core.shapes.world import (EXTRA_HUES, generate_scene, load_classes,
                                     repaint_for_training, repaint_off_palette, single_object_view)
from ovseg_core.weights import create_clip, register_clip_configs

MODEL = "ovseg-shapes-vit"  # config/clip/ovseg-shapes-vit.json
_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


def to_clip_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> CLIP-normalised float [B, 3, H, W] (as MaskClassifier.normalize)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - _MEAN) / _STD


def caption_things(with_unseen: bool = False):
    """The things the caption stage shows and names: the seen ones; ``with_unseen``: every
    thing, as a web-trained CLIP has seen the classes a segmentation dataset leaves out
    (the papers' setting; a diagnostic here, never shipped: issue 13's rule keeps unseen
    things out of everything that ships)."""
    world = load_classes()
    return list(world.things) if with_unseen else world.seen(world.things)


def training_batch(rng: np.random.Generator, batch: int, size: int, single_share: float,
                   one_color: bool = False, scene_radius=(8, 26), view_radius=(10, 28),
                   with_unseen: bool = False):
    """Scenes of the CLIP split (all but unseen things; ``with_unseen``: all), a share of
    them single-object views. ``one_color``: every thing in the batch has one (random)
    color, so that color cannot tell the captions apart and the loss must look at shapes."""
    world = load_classes()
    shown = set(caption_things(with_unseen))
    allowed = [n for n in world.names if n in shown or n in world.stuff]
    if one_color:
        color = str(rng.choice(list(world.colors)))
        allowed = [n for n in allowed if n in world.stuff or n.startswith(color + " ")]
    things = [n for n in world.things if n in allowed]
    if batch == 0:
        return np.zeros((0, size, size, 3), np.uint8), []
    max_things = 4 if size >= 128 else 3
    scenes = [single_object_view(rng, str(rng.choice(things)), size=size, radius=tuple(view_radius))
              if rng.random() < single_share else
              generate_scene(rng, size=size, num_things=(0, max_things), classes=allowed, radius=tuple(scene_radius))
              for _ in range(batch)]
    return np.stack([s.image for s in scenes]), [s.caption for s in scenes]


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, views_per_class: int = 4, seed: int = 123_456, size: int = 128,
                       radius=(10, 28)):
    """Top-1 accuracy over all things on single-object views (things at the pixel scale of
    scene things), split into seen / unseen, and how often the predicted color / shape
    alone is right (over all things; over unseen things). ``off_palette_shape``: seen
    shapes painted grey, named by the bare shape words (shape without any color cue)."""
    world = load_classes()
    names = world.things
    text = F.normalize(model.encode_text(tokenizer([f"a photo of a {n}." for n in names])), dim=-1)
    rng = np.random.default_rng(seed)
    hits = {"seen": [], "unseen": [], "color": [], "shape": [], "unseen_shape": []}
    for k, name in enumerate(names):
        views = np.stack([single_object_view(rng, name, size=size, radius=radius).image
                          for _ in range(views_per_class)])
        image = F.normalize(model.encode_image(to_clip_input(views)), dim=-1)
        pred = (image @ text.T).argmax(-1)
        hits["unseen" if name in world.unseen else "seen"].extend((pred == k).tolist())
        hits["color"].extend(names[j].split(" ")[0] == name.split(" ")[0] for j in pred.tolist())
        shape_right = [names[j].split(" ")[1] == name.split(" ")[1] for j in pred.tolist()]
        hits["shape"].extend(shape_right)
        if name in world.unseen:
            hits["unseen_shape"].extend(shape_right)
    shape_text = F.normalize(model.encode_text(tokenizer(vocabulary_prompts()[1])), dim=-1)
    views, shapes = off_palette_views(rng, views_per_class * len(world.shapes), size, radius)
    image = F.normalize(model.encode_image(to_clip_input(views)), dim=-1)
    hits["off_palette_shape"] = ((image @ shape_text.T).argmax(-1) == shapes).tolist()
    return {k: float(np.mean(v)) for k, v in hits.items()}


def hard_negative(rng: np.random.Generator, caption: str, part: Optional[str] = None,
                  with_unseen: bool = False) -> str:
    """The caption with one thing's color or shape (``part``; default either) swapped,
    NegCLIP-style: a random batch rarely holds two captions that differ only there, and
    color alone separates most captions, so shape would otherwise get little signal.
    Captions without things stay unchanged (masked out)."""
    world = load_classes()
    words = caption[:-1].split(" ")
    slots = [i for i, w in enumerate(words) if w in world.colors and i + 1 < len(words) and words[i + 1] in world.shapes]
    if not slots:
        return caption
    c = int(rng.choice(slots))
    i = c + ({"color": 0, "shape": 1}[part] if part else int(rng.integers(0, 2)))
    pool = list(world.colors) if i == c else list(world.shapes)
    # Unseen things stay out of CLIP pretraining, as negatives too (unless ``with_unseen``).
    pool = [w for w in pool if w != words[i] and (with_unseen or " ".join(
        [w, words[c + 1]] if i == c else [words[c], w]) not in world.unseen)]
    words[i] = str(rng.choice(pool))
    # Keep the articles right, or "an yellow" would give the negative away.
    words = [("an" if words[k + 1][0] in "aeiou" else "a") if w in ("a", "an") and k + 1 < len(words) else w
             for k, w in enumerate(words)]
    return " ".join(words) + "."


def contrastive_loss(image, text, captions, logit_scale, negatives=None, negative_captions=()):
    """CLIP's symmetric loss; identical captions in a batch are all positives. Hard
    negative texts, if given, are extra wrong answers for the image-to-text direction."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale * image @ text.T
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    target = same / same.sum(-1, keepdim=True)
    image_to_text = logits
    if negatives is not None:
        neg = logit_scale * image @ F.normalize(negatives, dim=-1).T
        # A "negative" equal to some batch caption is no negative: mask it out.
        valid = torch.tensor([n not in set(captions) for n in negative_captions])
        image_to_text = torch.cat([logits, neg.masked_fill(~valid[None], -1e4)], dim=1)
        target = torch.cat([target, torch.zeros_like(neg)], dim=1)
    return (F.cross_entropy(image_to_text, target) + F.cross_entropy(logits.T, target[:, :len(captions)])) / 2


def vocabulary_batch(rng: np.random.Generator, n: int, size: int, radius, scene_share: float = 0.0,
                     scene_radius=(8, 26), with_unseen: bool = False):
    """``n`` images of the caption stage's things (``caption_things``: the seen ones, or
    with ``with_unseen`` all) and, per image, which of them it shows ([n, len(things)]
    0/1). Most are single-object views (circumradius in ``radius``); a ``scene_share``
    are scenes of one to three things anywhere on several stuff regions, so that the
    things' names are also learned where they are small, off-centre and among others
    (what a mask token meets in a scene)."""
    world = load_classes()
    named = caption_things(with_unseen)
    allowed = named + list(world.stuff)
    images, targets = [], torch.zeros(n, len(named))
    for i in range(n):
        scene = (generate_scene(rng, size=size, num_things=(1, 3), classes=allowed, radius=tuple(scene_radius))
                 if rng.random() < scene_share else None)
        # A single view also stands in for a scene whose things were all rejected for occlusion.
        if scene is None or not any(s["isthing"] for s in scene.segments):
            scene = single_object_view(rng, str(rng.choice(named)), size=size, radius=tuple(radius))
        images.append(scene.image)
        for s in scene.segments:
            if s["isthing"]:
                targets[i, named.index(s["class_name"])] = 1.0
    return np.stack(images), targets


def off_palette_views(rng: np.random.Generator, n: int, size: int, radius):
    """``n`` single-object views of seen-class shapes repainted in greys and faint tints
    (channels within 12% of a grey level: no palette hue), shading and outline kept, and
    each one's shape index. Scored against the bare shape words only, they teach a shape
    that no color predicts: the compositional prior real CLIP gets from the web (it has
    seen stars of every color), while no palette color on a new shape, so no unseen
    thing, is ever shown."""
    world = load_classes()
    seen = world.seen(world.things)
    images, shapes = [], []
    for _ in range(n):
        name = str(rng.choice(seen))
        scene = single_object_view(rng, name, size=size, radius=tuple(radius))
        thing = scene.masks()[[s["isthing"] == 1 for s in scene.segments]].any(0)
        images.append(repaint_off_palette(rng, scene.image, thing, name.split(" ")[0]))
        shapes.append(world.shapes.index(name.split(" ")[1]))
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), torch.zeros(0, dtype=torch.long)
    return np.stack(images), torch.tensor(shapes, dtype=torch.long)


def vocabulary_prompts(with_unseen: bool = False):
    """Texts of the full-vocabulary loss: every seen thing (``with_unseen``: every thing),
    then every shape and every color alone (no unseen thing is ever written otherwise)."""
    world = load_classes()
    return ([f"a photo of a {t}." for t in caption_things(with_unseen)], [f"a photo of a {s}." for s in world.shapes],
            [f"a photo of a {c} thing." for c in world.colors])


def vocabulary_loss(image, texts, targets, logit_scale, factor_weight: float, with_unseen: bool = False):
    """Image-to-text cross-entropy of the vocabulary images against the texts of all the
    caption stage's things (``caption_things``; every confusable caption present, so shape
    must be looked at; the things an image shows share its target), plus, weighted by
    ``factor_weight``, against the bare shape and color words."""
    world = load_classes()
    named = caption_things(with_unseen)
    things, shapes, colors = texts

    def soft_ce(logits, target):
        return F.cross_entropy(logits, target / target.sum(-1, keepdim=True))

    loss = soft_ce(logit_scale * image @ things.T, targets)
    if factor_weight > 0:
        shape_of = torch.tensor([[float(t.split(" ")[1] == s) for s in world.shapes] for t in named])
        color_of = torch.tensor([[float(t.split(" ")[0] == c) for c in world.colors] for t in named])
        loss = loss + factor_weight * (soft_ce(logit_scale * image @ shapes.T, (targets @ shape_of).clamp(max=1))
                                       + soft_ce(logit_scale * image @ colors.T, (targets @ color_of).clamp(max=1)))
    return loss


def region_names(extra_hues: bool = False):
    """The classes a region may show in CLIP pretraining: seen things, then every stuff
    class (unseen stuff is in CLIP's data, unseen things never are; split.json); with
    ``extra_hues``, then every shape in every extra hue (``EXTRA_HUES``: "pink star")."""
    world = load_classes()
    extra = [f"{h} {s}" for h in EXTRA_HUES for s in world.shapes] if extra_hues else []
    return world.seen(world.things) + list(world.stuff) + extra


def region_batch(rng: np.random.Generator, n: int, size: int, scene_radius=(8, 26), num_things=(1, 5),
                 off_palette_share: float = 0.0, extra_hue_share: float = 0.0):
    """``n`` scenes of the CLIP split, their ground-truth masks as logits [n, Q, H, W]
    (padded with empty masks) and each mask's index in ``region_names(extra_hue_share > 0)``
    (-1: padding). With ``off_palette_share`` each thing is, with that probability,
    repainted off the palette, its caption phrase loses the color word and its label
    becomes ``len(names) + shape index``: a region named by shape alone. With
    ``extra_hue_share`` a thing not so repainted is, with that probability, repainted in a
    random extra hue and named by it, in its label and its caption phrase ("a pink star")
    (``repaint_for_training``, as SMART's training data)."""
    names = region_names(extra_hue_share > 0)
    shapes = load_classes().shapes
    scenes = [generate_scene(rng, size=size, classes=region_names(), radius=tuple(scene_radius),
                             num_things=tuple(num_things)) for _ in range(n)]
    q = max(len(s.segments) for s in scenes)
    masks = torch.full((n, q, size, size), -10.0)
    labels = torch.full((n, q), -1, dtype=torch.long)
    images, captions = [], []

    def rename(caption, color, shape, new_color):
        return re.sub(rf"\b(an?) ((?:small |large )?){color} {shape}\b",
                      lambda m: ("an " if (m[2] or new_color or shape)[0] in "aeiou" else "a ") + m[2]
                      + (f"{new_color} " if new_color else "") + shape, caption, count=1)

    for i, scene in enumerate(scenes):
        image, caption = scene.image, scene.caption
        masks[i, :len(scene.segments)] = torch.from_numpy(scene.masks()).float() * 20 - 10
        for j, seg in enumerate(scene.segments):
            labels[i, j] = names.index(seg["class_name"])
            if not seg["isthing"]:
                continue
            color, shape = seg["class_name"].split(" ")
            image, name = repaint_for_training(rng, image, scene.segment_map == seg["id"], seg["class_name"],
                                               off_palette_share, extra_hue_share)
            if name == shape:                                # grey: named by its shape alone
                caption = rename(caption, color, shape, "")
                labels[i, j] = len(names) + shapes.index(shape)
            elif name != seg["class_name"]:                  # an extra hue
                caption = rename(caption, color, shape, name.split(" ")[0])
                labels[i, j] = names.index(name)
        images.append(image)
        captions.append(caption)
    return np.stack(images), captions, masks, labels


def region_prompts(extra_hues: bool = False):
    """Texts of the region loss: every region class, then every shape and every color alone
    (with ``extra_hues``, the extra hues' classes and color words too)."""
    world = load_classes()
    colors = list(world.colors) + (list(EXTRA_HUES) if extra_hues else [])
    return ([f"a photo of a {n}." for n in region_names(extra_hues)], [f"a photo of a {s}." for s in world.shapes],
            [f"a photo of a {c} thing." for c in colors])


def region_loss(regions, labels, texts, logit_scale, factor_weight: float):
    """Cross-entropy of each region's mask-token embedding against the prompts of every
    region class, plus (weighted) for things against the bare shape and color words, the
    factors an unseen thing is recognised by. regions [B, Q, E] normalised, labels [B, Q]
    (``region_batch``'s: a label past the region classes is an off-palette thing, scored
    against the shape words alone, at full weight: its shape is all it is named by).
    ``texts`` are ``region_prompts()``'s embeddings; their sizes say whether the extra
    hues are in."""
    world = load_classes()
    classes, shapes, colors = texts
    names = region_names(len(classes) > len(region_names()))
    color_words = list(world.colors) + list(EXTRA_HUES)
    keep = labels >= 0
    regions, labels = regions[keep], labels[keep]
    named = labels < len(names)
    loss = F.cross_entropy(logit_scale * regions[named] @ classes.T, labels[named]) if named.any() \
        else regions.sum() * 0.0
    grey = ~named
    if grey.any():
        loss = loss + F.cross_entropy(logit_scale * regions[grey] @ shapes.T, labels[grey] - len(names))
    if factor_weight > 0:
        thing_of = torch.tensor([n.split(" ")[-1] in world.shapes for n in names])  # a stuff name is no shape
        is_thing = named & thing_of[labels.clamp(max=len(names) - 1)]
        if is_thing.any():
            parts = [names[k].split(" ") for k in labels[is_thing].tolist()]
            shape = torch.tensor([world.shapes.index(s) for _, s in parts])
            color = torch.tensor([color_words.index(c) for c, _ in parts])
            things = regions[is_thing]
            loss = loss + factor_weight * (F.cross_entropy(logit_scale * things @ shapes.T, shape)
                                           + F.cross_entropy(logit_scale * things @ colors.T, color))
    return loss


def adapt_state_dict(state: dict, model) -> dict:
    """``state`` made to fit ``model`` across image and patch sizes: position embeddings
    resized to its grid (open_clip's resize), the patch embedding resized by area
    (FlexiViT-style, scaled so a flat patch keeps its response)."""
    state = {k: v.float() for k, v in state.items()}
    open_clip.model.resize_pos_embed(state, model)
    key = "visual.conv1.weight"
    want = model.state_dict()[key].shape
    if state[key].shape != want:
        old = state[key].shape[-1]
        state[key] = F.interpolate(state[key], size=want[-2:], mode="area") * (old / want[-1]) ** 2
    return state


def evaluate_checkpoint(path: str, views: int, seed: int) -> dict:
    """A saved CLIP's zero-shot accuracy (percent, chance 1/36 for a thing, 1/6 for a
    color or shape) at the served size."""
    model = create_clip(MODEL, path, "shapes")  # the loader's checks: a missing or mismatched file
    acc = zero_shot_accuracy(model, open_clip.get_tokenizer(MODEL), views_per_class=views, seed=seed)
    return {k: round(100 * v, 1) for k, v in acc.items()}


def save_fp16(model, path: Path, meta: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in meta.items()})


def caption_step(model, tokenizer, rng: np.random.Generator, args, n_vocab: int, prompts):
    """One caption-stage loss: captions of fresh scenes (InfoNCE with hard negatives) and,
    for ``n_vocab`` images, the full-vocabulary loss. Returns the loss and the logit scale."""
    web = args.caption_unseen
    images, captions = training_batch(rng, args.batch - n_vocab, args.size, args.single_share, args.one_color,
                                      args.scene_radius, args.view_radius, web)
    negative_captions = [hard_negative(rng, c, with_unseen=web) for c in captions] + [
        hard_negative(rng, c, "shape", web) for _ in range(args.shape_negatives) for c in captions]
    if not n_vocab:
        image, text, scale = model(to_clip_input(images), tokenizer(captions + negative_captions))
        return contrastive_loss(image, text[:len(captions)], captions, scale, text[len(captions):],
                                negative_captions), scale
    n_free = int(round(n_vocab * args.off_palette_share))
    views, labels = vocabulary_batch(rng, n_vocab - n_free, args.size, args.view_radius, args.vocab_scene_share,
                                     args.scene_radius, web)
    free_views, free_shapes = off_palette_views(rng, n_free, args.size, args.view_radius)
    image = model.encode_image(to_clip_input(np.concatenate([images, views, free_views])), normalize=True)
    flat = [t for group in prompts for t in group]
    text = model.encode_text(tokenizer(captions + negative_captions + flat), normalize=True)
    scale = model.logit_scale.exp()
    n, m = len(captions), len(captions) + len(negative_captions)
    groups = torch.split(text[m:], [len(g) for g in prompts])
    loss = args.vocab_weight * vocabulary_loss(image[n:len(image) - n_free], groups, labels, scale,
                                               args.factor_weight, web)
    if n_free:
        loss = loss + args.vocab_weight * F.cross_entropy(scale * image[-n_free:] @ groups[1].T, free_shapes)
    if n:
        loss = loss + contrastive_loss(image[:n], text[:n], captions, scale, text[n:m], negative_captions)
    return loss, scale


def region_step(encoder: MaskCLIPEncoder, model, tokenizer, rng: np.random.Generator, args):
    """One region-stage loss: scenes' captions against their CLS embeddings (with hard
    negatives), and every ground-truth region's mask token against all region classes.
    Returns the loss, the logit scale and the share of regions named right."""
    images, captions, masks, labels = region_batch(rng, args.region_batch, args.size, args.scene_radius,
                                                   args.region_things, args.off_palette_share, args.extra_hue_share)
    negative_captions = [hard_negative(rng, c) for c in captions]
    x = to_clip_input(images)
    if args.input_size and args.input_size != args.size:  # as the preset's clip.input_size resizes at serving
        x = F.interpolate(x, size=(args.input_size, args.input_size), mode="bilinear", align_corners=False)
    out = encoder(x, masks)
    prompts = region_prompts(args.extra_hue_share > 0)
    text = model.encode_text(tokenizer(captions + negative_captions + [t for g in prompts for t in g]),
                             normalize=True)
    n = len(captions)
    scale = model.logit_scale.exp()
    groups = torch.split(text[2 * n:], [len(g) for g in prompts])
    regions = F.normalize(out["masks"], dim=-1)
    loss = contrastive_loss(out["image"], text[:n], captions, scale, text[n:2 * n], negative_captions) \
        + args.region_weight * region_loss(regions, labels, groups, scale, args.factor_weight)
    with torch.no_grad():
        keep = (labels >= 0) & (labels < len(groups[0]))
        accuracy = float(((regions[keep] @ groups[0].T).argmax(-1) == labels[keep]).float().mean())
    return loss, scale, accuracy


def optimizer_step(model, params, opt, sched, loss):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))


def evaluate_and_checkpoint(model, tokenizer, args, step: int):
    model.eval()
    acc = zero_shot_accuracy(model, tokenizer, size=args.size, radius=args.view_radius)
    model.train()
    logging.info("step %d zero-shot single-object accuracy: seen %.3f unseen %.3f (color %.3f, shape "
                 "%.3f, shape of unseen things %.3f, grey shapes %.3f)", step + 1, acc["seen"], acc["unseen"],
                 acc["color"], acc["shape"], acc["unseen_shape"], acc["off_palette_shape"])
    Path(args.checkpoint).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.checkpoint)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--size", type=int, default=64, help="training image size (the saved model keeps the "
                   "config's size, with resized position embeddings)")
    p.add_argument("--scene-radius", type=float, nargs=2, default=(8, 26),
                   help="circumradius range (px) of things in scenes (generate_scene's default: the served scale)")
    p.add_argument("--view-radius", type=float, nargs=2, default=(10, 28),
                   help="circumradius range (px) of the thing in single-object views")
    p.add_argument("--single-share", type=float, default=0.3, help="share of single-object views")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--shape-negatives", type=int, default=0,
                   help="extra hard negatives per caption that swap a shape (beyond one color-or-shape swap)")
    p.add_argument("--one-color", action="store_true", help="one color per batch (a shape curriculum)")
    p.add_argument("--vocab-share", type=float, default=0.0,
                   help="share of each batch trained against the prompts of all seen things (full-vocabulary "
                        "contrastive loss) instead of captions: single-object views, and scenes (--vocab-scene-share)")
    p.add_argument("--vocab-scene-share", type=float, default=0.0,
                   help="share of those images that are scenes of 1-3 seen things (all their names are positives)")
    p.add_argument("--off-palette-share", type=float, default=0.0,
                   help="share of the vocabulary images that are seen shapes repainted off the palette, scored "
                        "against the bare shape words only (a color-free shape prior; off_palette_views); with "
                        "--region-batch: share of the scenes' things so repainted, named by shape alone")
    p.add_argument("--extra-hue-share", type=float, default=0.0,
                   help="region stage: share of the scenes' things repainted in an off-palette named hue (pink, "
                        "brown, teal: EXTRA_HUES) and named by it, every shape in every such hue (color and shape "
                        "shown varying independently; no unseen thing is drawn)")
    p.add_argument("--caption-unseen", action="store_true",
                   help="caption stage: show and name the unseen things too (images, captions, negatives, "
                        "vocabulary prompts), as a web-trained CLIP has seen what a segmentation dataset leaves "
                        "out; a diagnostic of what base CLIP training SMART needs, never shipped (issue 13)")
    p.add_argument("--vocab-weight", type=float, default=1.0, help="weight of the full-vocabulary loss")
    p.add_argument("--factor-weight", type=float, default=0.0,
                   help="weight of the extra shape-only / color-only prompt losses on those views")
    p.add_argument("--region-batch", type=int, default=0,
                   help="region stage: each step trains on this many scenes at --size instead (captions on CLS, "
                        "and every ground-truth mask through a mask token, as served, against all region classes); "
                        "--batch, --single-share and --vocab-* do not apply")
    p.add_argument("--input-size", type=int, default=None,
                   help="region stage: the CLIP input size the --size px scenes are resized to (the preset's "
                        "clip.input_size); the saved model keeps the config's size")
    p.add_argument("--region-things", type=int, nargs=2, default=(1, 5),
                   help="region stage: how many things a scene draws (before occlusion rejects some)")
    p.add_argument("--region-weight", type=float, default=1.0, help="weight of the region loss")
    p.add_argument("--init", help="continue from this checkpoint (safetensors state dict) instead of random")
    p.add_argument("--out", default="weights/shapes/clip.safetensors")
    p.add_argument("--evaluate", nargs="+", metavar="CLIP",
                   help="train nothing: print these checkpoints' zero-shot accuracy (--views per class, at the "
                        "served 128 px, seed --seed) and exit")
    p.add_argument("--views", type=int, default=25, help="--evaluate: single-object views per class")
    p.add_argument("--checkpoint", default="out/shapes/clip_last.safetensors",
                   help="fp32 copy written at every evaluation (for inspection while training runs)")
    args = p.parse_args(argv)
    if args.region_batch and args.vocab_share:
        p.error("--region-batch trains on scenes with region labels; drop --vocab-share (it is for the caption stage)")
    missing = [path for path in args.evaluate or () if not Path(path).is_file()]
    if missing:
        p.error(f"--evaluate: no checkpoint file at {', '.join(missing)}; give saved CLIP checkpoints (a run's --out)")
    if not 0 <= args.off_palette_share <= 1 or args.off_palette_share and not (args.vocab_share or args.region_batch):
        p.error("--off-palette-share is a share (0-1) of the vocabulary images (with --vocab-share) or of the "
                "region stage's things (with --region-batch)")
    if args.caption_unseen and args.region_batch:
        p.error("--caption-unseen is for the caption stage; the region stage never shows unseen things")
    if not 0 <= args.extra_hue_share <= 1 or args.extra_hue_share and not args.region_batch:
        p.error("--extra-hue-share is a share (0-1) of the region stage's things (with --region-batch)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    register_clip_configs()
    if args.evaluate:
        for path in args.evaluate:
            print(path, json.dumps(evaluate_checkpoint(path, args.views, args.seed)), flush=True)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model = open_clip.create_model(MODEL, force_image_size=args.size)
    tokenizer = open_clip.get_tokenizer(MODEL)
    if args.init:
        model.load_state_dict(adapt_state_dict(load_file(args.init), model))
    model.train()
    # The region stage trains the image tower as it is served (split q/k/v, mask tokens);
    # it shares every other module with open_clip's tower and is copied back before use.
    encoder = MaskCLIPEncoder(model.visual) if args.region_batch else None
    named = list(model.named_parameters()) if encoder is None else \
        [(n, p) for n, p in model.named_parameters() if not n.startswith("visual.")] + list(encoder.named_parameters())
    params = [p for _, p in named]
    decay = [p for n, p in named if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in named if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    start = time.time()
    bar = tqdm(range(args.steps), desc="CLIP", mininterval=5)
    n_vocab = int(round(args.batch * args.vocab_share))
    prompts = vocabulary_prompts(args.caption_unseen)
    for step in bar:
        rng = np.random.default_rng([args.seed, step])
        if encoder is not None:
            loss, scale, accuracy = region_step(encoder, model, tokenizer, rng, args)
        else:
            (loss, scale), accuracy = caption_step(model, tokenizer, rng, args, n_vocab, prompts), None
        optimizer_step(model, params, opt, sched, loss)
        shown = {"loss": f"{loss.item():.3f}", "scale": f"{scale.item():.1f}"}
        if accuracy is not None:
            shown["region_acc"] = f"{accuracy:.2f}"
        bar.set_postfix(shown)
        if step % 20 == 0:
            logging.info("step %d loss %.4f%s logit_scale %.2f lr %.2e elapsed %.0fs", step, loss.item(),
                         "" if accuracy is None else f" region accuracy {accuracy:.3f}", scale.item(),
                         sched.get_last_lr()[0], time.time() - start)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            if encoder is not None:  # the trained tower back into open_clip's layout
                model.visual.load_state_dict(encoder.open_clip_state_dict())
            evaluate_and_checkpoint(model, tokenizer, args, step)
    meta = {"model": MODEL, "steps": args.steps, "batch": args.batch, "seed": args.seed, "init": args.init,
            "train_size": args.size, "vocab_share": args.vocab_share,
            "vocab_scene_share": args.vocab_scene_share, "off_palette_share": args.off_palette_share,
            "extra_hue_share": args.extra_hue_share, "caption_unseen": args.caption_unseen,
            "factor_weight": args.factor_weight,
            "region_batch": args.region_batch, "region_weight": args.region_weight, "lr": args.lr,
            "train_seconds": round(time.time() - start)}
    served = open_clip.create_model(MODEL)
    served.load_state_dict(adapt_state_dict(model.state_dict(), served))
    save_fp16(served.eval(), Path(args.out), meta)
    logging.info("wrote %s after %.0f s", args.out, time.time() - start)


if __name__ == "__main__":
    main()
