"""The shipped ShapesWorld weights (`shapes` preset) segment and label what was drawn.

Tolerance: the drawn red circle counts as found when the predicted segment that overlaps
it most matches it with IoU > 0.5 (the criterion PQ uses for a true positive) and names
its color. The scenes are generated from seeds the models never trained on.

Caveat (README, ShapesWorld results): the shipped CLIP names colors and stuff through
the frozen mask-attention classifier, but a thing's shape there only about as often as
chance (on whole single-object views it does better than chance). So the tests that need
the shape, "red circle" exactly, are strict xfails: they fail (to be flipped) once a
CLIP or classifier that names shapes in scenes is shipped.
"""

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ovseg_core import build_segmenter
from ovseg_core.config import DATA_DIR
from ovseg_core.modeling.proposals import OracleProposals
from ovseg_core.shapes import generate_scene, load_classes

WEIGHTS = DATA_DIR / "weights" / "shapes"
# Red circle among other things that share its color or its shape, on two stuff classes.
SCENES = [dict(seed=500_001, things=["red circle", "blue circle", "red square"], stuff=["grass", "sky"]),
          dict(seed=500_002, things=["red circle", "yellow star", "purple hexagon"], stuff=["road", "sand"])]


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


@pytest.mark.parametrize("spec", SCENES, ids=["grass-sky", "road-sand"])
def test_the_drawn_red_circle_is_found_and_its_color_named(segmenter, vocabulary, spec):
    best, iou, table = _segment_on_red_circle(segmenter, vocabulary, spec)
    assert best.is_thing and best.class_name.startswith("red ") and iou > 0.5, table


SHAPES_AT_CHANCE = pytest.mark.xfail(
    strict=True, reason="through the frozen mask-attention classifier the shipped CLIP names a thing's shape "
                        "about as often as chance (README, ShapesWorld results)")


@SHAPES_AT_CHANCE
@pytest.mark.parametrize("spec", SCENES, ids=["grass-sky", "road-sand"])
def test_the_drawn_red_circle_is_labeled_red_circle(segmenter, vocabulary, spec):
    best, iou, table = _segment_on_red_circle(segmenter, vocabulary, spec)
    assert best.class_name == "red circle" and iou > 0.5, table


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


def test_oracle_masks_get_their_colors_and_stuff(segmenter, vocabulary):
    """What the shipped CLIP names through mask tokens: colors and stuff. Over 100 scenes
    (eval_shapes) it names a thing's color 86% of the time (chance 1/6) and the stuff
    class 79% (chance 1/8); the bounds leave about two standard deviations for the ~37
    things and ~24 stuff regions of these 12 scenes."""
    world = load_classes()
    pairs = _oracle_predictions(segmenter, vocabulary, ORACLE_SEEDS)
    things = [(t, p) for t, p in pairs if t in world.things]
    stuff = [(t, p) for t, p in pairs if t in world.stuff]
    color = np.mean([p.split(" ")[0] == t.split(" ")[0] for t, p in things])
    assert color >= 0.7, things
    assert np.mean([p == t for t, p in stuff]) >= 0.6, stuff


@SHAPES_AT_CHANCE
def test_oracle_masks_get_their_shapes(segmenter, vocabulary):
    world = load_classes()
    things = [(t, p) for t, p in _oracle_predictions(segmenter, vocabulary, ORACLE_SEEDS) if t in world.things]
    assert np.mean([p in world.things and p.split(" ")[1] == t.split(" ")[1] for t, p in things]) >= 0.5


def test_the_vocabulary_decides_the_label(segmenter):
    """Open vocabulary: the red thing takes whichever red name the vocabulary offers,
    including "red star", an unseen thing (never in any training caption)."""
    labels = [_segment_on_red_circle(segmenter, f"{red}; blue circle; yellow star; grass [stuff]; sky [stuff]",
                                     SCENES[0])[0].class_name for red in ("red circle", "red star")]
    assert labels == ["red circle", "red star"], labels


def test_shipped_weights_are_fp16_safetensors_under_30_mb():
    files = sorted(WEIGHTS.rglob("*.safetensors"))
    assert {f.name for f in files} == {"clip.safetensors", "model.safetensors"}
    assert sum(f.stat().st_size for f in files) < 30 * 2 ** 20
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            dtypes = {handle.get_slice(k).get_dtype() for k in handle.keys()}
        assert "F16" in dtypes and "F32" not in dtypes
