"""The shipped ShapesWorld weights (`shapes` preset) segment and label what was drawn.

Tolerance: the drawn red circle counts as found when the predicted segment that overlaps
it most matches it with IoU > 0.5 (the criterion PQ uses for a true positive); it counts
as labeled when that segment is also called "red circle". The CLIP names a thing's shape
through the mask tokens about two times in three (docs/shapesworld.md, Results), so
the exact label is asserted as a rate over 20 fresh scenes, not scene by scene. The
scenes are generated from seeds the models never trained on.
"""

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ovseg_core import build_segmenter
from ovseg_core.config import DATA_DIR
from ovseg_core.modeling.proposals import OracleProposals
from ovseg_core.shapes import generate_scene, load_classes
from ovseg_core.shapes.probe import probe, summarize

WEIGHTS = DATA_DIR / "weights" / "shapes"


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return build_segmenter("shapes", device="cpu")


@pytest.fixture(scope="module")
def vocabulary():
    return load_classes().vocabulary_text()


def _scene(spec):
    return generate_scene(spec["seed"], size=128, things=spec["things"], stuff=spec["stuff"], radius=(14, 24))


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def _segment_on_red_circle(segmenter, vocabulary, spec):
    """The predicted segment that overlaps the drawn red circle most, its IoU with the
    circle, and every segment's overlap (for the failure message)."""
    scene = _scene(spec)
    truth = scene.segment_map == scene.segment_of("red circle")["id"]
    result = segmenter(scene.image, vocabulary)
    overlaps = {s.id: (result.segment_map[truth] == s.id).sum() for s in result.segments}
    best = max(result.segments, key=lambda s: overlaps[s.id])
    return best, _iou(result.segment_map == best.id, truth), [(s.class_name, int(overlaps[s.id]))
                                                              for s in result.segments]


def _red_circle_scene(seed: int) -> dict:
    """A red circle, two other things (any of the other 35, so some share its color or its
    shape) and two stuff classes, all drawn from ``seed``."""
    world = load_classes()
    rng = np.random.default_rng(seed)
    others = [t for t in world.things if t != "red circle"]
    return dict(seed=seed, things=["red circle"] + [str(t) for t in rng.choice(others, 2, replace=False)],
                stuff=[str(s) for s in rng.choice(world.stuff, 2, replace=False)])


RED_CIRCLE_SEEDS = range(500_100, 500_120)


@pytest.fixture(scope="module")
def red_circles(segmenter, vocabulary):
    """(label, IoU) of the segment on the drawn red circle in each of 20 fresh scenes."""
    found = [_segment_on_red_circle(segmenter, vocabulary, _red_circle_scene(seed)) for seed in RED_CIRCLE_SEEDS]
    return [(best.class_name, float(iou)) for best, iou, _ in found]


def test_the_drawn_red_circle_is_found_and_its_color_named(red_circles):
    """At least 12 of 20: the proposals cover 70% of things (IoU > 0.5) and the mask tokens
    name 99% of things' colors (docs/shapesworld.md), so about 14 of 20 are expected."""
    hits = [name.startswith("red ") and iou > 0.5 for name, iou in red_circles]
    assert sum(hits) >= 12, red_circles


def test_the_drawn_red_circle_is_labeled_red_circle(red_circles):
    """At least half of the 20. A classifier that got the color right and guessed the shape
    (1 in 6) would reach 10 of 20 with probability 0.06%; the CLIP shipped before the
    region stage labeled 1 of these 20 right."""
    hits = [name == "red circle" and iou > 0.5 for name, iou in red_circles]
    assert sum(hits) >= 10, red_circles


def _oracle_predictions(segmenter, vocabulary, seeds):
    """(true, predicted) class names of every ground-truth segment, classified by the
    shipped CLIP through oracle (ground-truth) masks."""
    names = load_classes().names
    pairs = []
    for seed in seeds:
        scene = generate_scene(seed, size=128)
        image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0
        _, probs = segmenter.predict(image, vocabulary, OracleProposals()([scene.masks()]))
        predicted = probs[0, :, :-1].argmax(-1).tolist()
        pairs += [(s["class_name"], names[p]) for s, p in zip(scene.segments, predicted)]
    return pairs


ORACLE_SEEDS = range(600_000, 600_012)


@pytest.fixture(scope="module")
def oracle_things_and_stuff(segmenter, vocabulary):
    world = load_classes()
    pairs = _oracle_predictions(segmenter, vocabulary, ORACLE_SEEDS)
    return [(t, p) for t, p in pairs if t in world.things], [(t, p) for t, p in pairs if t in world.stuff]


def test_oracle_masks_get_their_colors_and_stuff(oracle_things_and_stuff):
    """Over 100 scenes (eval_shapes) the mask tokens name a thing's color 99% of the
    time (chance 1/6) and the stuff class 99% (chance 1/8); the bounds leave more
    than two standard deviations for the ~37 things and ~24 stuff regions of these 12 scenes."""
    things, stuff = oracle_things_and_stuff
    assert np.mean([p.split(" ")[0] == t.split(" ")[0] for t, p in things]) >= 0.9, things
    assert np.mean([p == t for t, p in stuff]) >= 0.9, stuff


def test_oracle_masks_get_their_shapes(oracle_things_and_stuff):
    """Over 100 scenes the mask tokens name a thing's shape 66% of the time (chance
    1/6); the bound is two standard deviations below that for ~37 things, and still far
    above chance."""
    world = load_classes()
    things, _ = oracle_things_and_stuff
    assert np.mean([p in world.things and p.split(" ")[1] == t.split(" ")[1] for t, p in things]) >= 0.5, \
        things


def test_the_vocabulary_decides_the_label(segmenter):
    """Open vocabulary, as a rate: the segment on the drawn red circle takes whichever red
    name the vocabulary offers, "red circle" or "red star" (an unseen thing, never in any
    training caption), beside "blue circle" (its shape, another color), "yellow star" and
    the scene's stuff. On 120 other scenes (seeds 501000-501119) both offers were taken, at
    IoU > 0.5, in 60 (50.0%; 59 before the proposals were split into connected parts):
    over these 20 that is 10.0 expected, standard deviation 2.2,
    so at least 5 (the rate minus two standard deviations, rounded down). Picking one of
    the three thing names at random would reach 5 with probability 3%. (The region-stage
    CLIP before the 1500-step continuation took both in 79 of 120 and the floor was 8:
    the shipped one more often calls the red circle "blue circle" when no red circle is
    offered, i.e. weighs shape more.)"""
    taken = []
    for seed in RED_CIRCLE_SEEDS:
        spec = _red_circle_scene(seed)
        stuff = "; ".join(f"{s} [stuff]" for s in spec["stuff"])
        named = [_segment_on_red_circle(segmenter, f"{red}; blue circle; yellow star; {stuff}", spec)[:2]
                 for red in ("red circle", "red star")]
        taken.append([(best.class_name, round(float(iou), 2)) for best, iou in named])
    both = [pair[0][0] == "red circle" and pair[1][0] == "red star" and min(pair[0][1], pair[1][1]) > 0.5
            for pair in taken]
    assert sum(both) >= 5, taken


def test_shipped_weights_are_fp16_safetensors_under_30_mb():
    files = sorted(WEIGHTS.rglob("*.safetensors"))
    assert {f.name for f in files} == {"clip.safetensors", "model.safetensors"}
    assert sum(f.stat().st_size for f in files) < 30 * 2 ** 20
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            dtypes = {handle.get_slice(k).get_dtype() for k in handle.keys()}
        assert "F16" in dtypes and "F32" not in dtypes


# Scenes with one unseen thing each (ovseg_core.shapes.probe), on seeds used nowhere else.
UNSEEN_PROBE_SEEDS = range(510_000, 510_060)


def test_unseen_things_are_found_and_named_at_their_measured_rate(segmenter, vocabulary):
    """A rate, not a scene: on 240 other probe scenes (seeds 520000-520239) the shipped
    preset named the unseen thing right at IoU > 0.5 in 79 (32.9%; chance 2.5%: the
    segment found, a thing class drawn at random). Over these 60 scenes that is 19.8
    expected, standard deviation 3.6, so at least 12 (the rate minus two standard
    deviations, rounded down); random labels reach 12 with probability 3e-8. (With the
    first Mask2Former the rate was 35 of 240 and the floor 3; with the multi-scale one,
    60 of 240 and 8; with F and the CLIP before its 1500-step continuation, 63 and 8;
    before the proposals were split into connected parts, 71 and 10.)"""
    records = probe(segmenter, UNSEEN_PROBE_SEEDS, vocabulary)
    summary = summarize(records)
    assert summary["hits"] >= 12, [(r["thing"], r["label"], round(r["iou"], 2)) for r in records]
    # the color half is what the mask tokens know best (docs/shapesworld.md): right for most found things
    assert summary["color right of found"] >= 0.8, summary


# Fresh scenes for the mask generator's rate, standard layout and layout variants, on
# seeds used nowhere else.
PROPOSAL_SEEDS = range(540_000, 540_030)
# docs/experiments/2026-12-07-proposals-connected-parts.md: fresh seeds 777000-777099,
# 293/299 and 292/302 things (model F, its proposals split into connected parts; unsplit: 260/299 and 249/302)
RATE_STANDARD, RATE_VARIANTS = 0.980, 0.967


def test_proposals_cover_things_at_their_measured_rate(segmenter):
    """A rate over many scenes: the share of ground-truth things that some proposal covers
    with IoU > 0.5 (through the preset's resize and connected-part split, as the pipeline
    serves them). On 100 fresh scenes per layout (docs/experiments, "Connected parts") the shipped
    proposals covered 98.0% of things in the standard layout and 96.7% in the variants
    (unsplit 87.0% / 82.5%; the first Mask2Former 69.2% / 57.3%); over these 30 scenes per
    layout the test wants the measured rate minus two standard deviations."""
    from ovseg_core.shapes.evaluate import oracle_class_result
    from ovseg_core.shapes.train_proposals import add_recall_hits
    from ovseg_core.shapes.world import layout_scene
    from ovseg_core.vocabulary import Vocabulary

    vocab = Vocabulary.parse(load_classes().vocabulary_text())
    for layout, rate in (("standard", RATE_STANDARD), ("variants", RATE_VARIANTS)):
        hits = {}
        for seed in PROPOSAL_SEEDS:
            scene = layout_scene(seed, layout)
            image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0
            masks, _ = oracle_class_result(segmenter, image, scene, vocab)
            add_recall_hits(hits, scene, masks > 0)
        n = len(hits["thing"])
        floor = n * rate - 2 * np.sqrt(n * rate * (1 - rate))
        assert sum(hits["thing"]) >= floor, (layout, sum(hits["thing"]), n, floor)
