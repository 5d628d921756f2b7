"""ovseg_core.shapes.train_proposals (training/shapes/train_proposals_shapes.py): the data
the ShapesWorld mask generator learns from, the recall it is judged by, and a run that starts from a saved model."""

import numpy as np
import pytest
import torch

from ovseg_core.modeling.proposals import Mask2FormerProposals
from ovseg_core.shapes import train_proposals as tps
from ovseg_core.shapes.world import generate_scene, load_classes


def test_multiscale_batches_partition_each_image_and_hold_small_things():
    """Multi-scale scenes are resized to the training size; their masks still partition
    the image (the resize cannot leave a pixel without a segment), come from the seed
    alone, and the mix holds things under 15 px that the standard scenes (radius >= 8)
    never draw unoccluded."""
    images, masks = tps.training_batch(np.random.default_rng([3, 0]), 16, 128, "multiscale")
    assert images.shape == (16, 3, 128, 128) and 0 <= float(images.min()) and float(images.max()) <= 1
    for m in masks:
        assert m.shape[1:] == (128, 128) and bool((m.sum(0) == 1).all()) and bool((m.flatten(1).sum(1) > 0).all())
    again = tps.training_batch(np.random.default_rng([3, 0]), 16, 128, "multiscale")
    assert torch.equal(images, again[0]) and all(torch.equal(a, b) for a, b in zip(masks, again[1]))

    def extents(m):
        ys, xs = np.nonzero(m.numpy())
        return max(ys.max() - ys.min(), xs.max() - xs.min()) + 1

    small = sum(extents(k) < tps.SMALL_THING for m in masks for k in m)
    assert small >= 5
    # the standard data is today's scenes, bit for bit
    images, masks = tps.training_batch(np.random.default_rng([0, 7]), 2, 128)
    scene = generate_scene(np.random.default_rng([0, 7]), size=128, num_things=(1, 6),
                           classes=load_classes().seen(load_classes().names))
    assert torch.equal(images[0], torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255.0)


def test_recall_counts_small_things_apart():
    """A thing under 15 px across is counted under "small things" as well as "thing"; a
    perfect prediction covers everything, an empty one nothing."""
    scene = generate_scene(5, things=["red circle", "blue square"], radius=(5, 6), stuff=["sky"])
    gt = torch.from_numpy(scene.masks())
    recall = tps.recall_summary(tps.add_recall_hits({}, scene, gt))
    assert {"thing", "stuff", "small things"} <= set(recall) and set(recall.values()) == {1.0}
    hits = tps.add_recall_hits({}, scene, torch.zeros(0, *gt.shape[1:], dtype=torch.bool))
    assert len(hits["small things"]) == 2 and not any(hits["small things"]) and not any(hits["thing"])
    big = generate_scene(5, things=["red circle"], radius=(20, 21), stuff=["sky"])
    assert "small things" not in tps.add_recall_hits({}, big, torch.from_numpy(big.masks()))


def test_missed_things_are_told_apart_by_what_their_best_proposal_covers():
    """A mask over three things of one colour, over three of different colours, and over
    none: the three causes; a covered thing is not counted."""
    names = ["red circle", "red square", "red cross", "blue star", "green circle", "purple hexagon"]
    scene = generate_scene(3, things=names, radius=(9, 10), stuff=["sky"], min_visible=0.9)
    gt = {s["class_name"]: torch.from_numpy(scene.segment_map == s["id"]) for s in scene.segments}
    assert set(gt) == {*names, "sky"}
    pred = torch.stack([gt["red circle"] | gt["red square"] | gt["red cross"],
                        gt["blue star"] | gt["green circle"] | gt["purple hexagon"], torch.zeros_like(gt["sky"])])
    assert tps.add_missed_things({}, scene, pred) == {tps.MISS_CAUSES[0]: 3, tps.MISS_CAUSES[1]: 3}
    pred = torch.stack([gt["red circle"], gt["sky"]])
    assert tps.add_missed_things({}, scene, pred) == {"other": 5}


def test_a_run_starts_from_a_saved_model(tmp_path):
    """--init fine-tunes a saved (fp16) model: the run loads it, trains in fp32 and writes a
    model that differs from where it started; --no-object-weight reaches the loss and the
    saved config."""
    tiny = dict(tps.ARCH, backbone_config=dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]),
                feature_size=32, mask_feature_size=32, hidden_dim=32, num_queries=8, train_num_points=256)
    start = Mask2FormerProposals.from_arch("tiny", **tiny)
    start.model.half().save_pretrained(tmp_path / "start")
    tps.main(["--steps", "2", "--batch", "2", "--eval-every", "100", "--data", "multiscale", "--sizes", "96,128",
              "--init", str(tmp_path / "start"), "--out", str(tmp_path / "out"),
              "--checkpoint", str(tmp_path / "last"), "--no-object-weight", "0.5"])
    before = Mask2FormerProposals.from_pretrained(tmp_path / "start").model.state_dict()
    saved = Mask2FormerProposals.from_pretrained(tmp_path / "out").model
    after = saved.state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert saved.config.no_object_weight == 0.5 and float(saved.criterion.empty_weight[-1]) == 0.5
    assert start.model.config.no_object_weight == 0.1
    with pytest.raises(SystemExit):
        tps.main(["--no-object-weight", "0", "--steps", "1"])


def test_same_color_scenes_hold_look_alikes_and_leave_the_plain_mix_alone(monkeypatch):
    """--same-color draws a share of the multi-scale scenes with things of one colour
    (the look-alikes the mask generator merged); at share 0 the multi-scale data is the
    shipped model's, bit for bit; the option is refused outside the multi-scale data."""
    world = load_classes()
    drawn = []

    def spy(*args, **kwargs):
        scene = generate_scene(*args, **kwargs)
        drawn.append([s["class_name"] for s in scene.segments if s["isthing"]])
        return scene

    monkeypatch.setattr(tps, "generate_scene", spy)
    images, masks = tps.training_batch(np.random.default_rng([3, 0]), 12, 128, "multiscale", same_color=1.0)
    assert len(drawn) == 12 and all(bool((m.sum(0) == 1).all()) for m in masks)
    colors = [{name.split(" ")[0] for name in things} for things in drawn]
    assert all(len(things) >= 2 for things in drawn) and all(len(c) == 1 for c in colors)
    assert len(set.union(*colors)) > 1 and not any(set(t) & set(world.unseen) for t in drawn)
    drawn.clear()
    tps.training_batch(np.random.default_rng([3, 0]), 12, 128, "multiscale", same_color=0.5)
    assert 0 < sum(len({n.split(" ")[0] for n in things}) == 1 and len(things) > 1 for things in drawn) < 12
    plain = tps.training_batch(np.random.default_rng([3, 0]), 4, 128, "multiscale")
    again = tps.training_batch(np.random.default_rng([3, 0]), 4, 128, "multiscale", same_color=0.0)
    assert torch.equal(plain[0], again[0]) and all(torch.equal(a, b) for a, b in zip(plain[1], again[1]))
    for bad in (["--same-color", "0.3"], ["--data", "multiscale", "--same-color", "1.5"]):
        with pytest.raises(SystemExit) as e:
            tps.main(bad + ["--steps", "1"])
        assert e.value.code == 2
