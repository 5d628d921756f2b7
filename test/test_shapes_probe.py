"""The unseen-thing probe (ovseg_core.shapes.probe): its scenes and its rates."""
import numpy as np

from ovseg_core.shapes import load_classes
from ovseg_core.shapes.probe import probe, summarize, unseen_thing_scene


def test_each_probe_scene_holds_exactly_one_unseen_thing_and_all_six_take_turns():
    world = load_classes()
    targets = []
    for seed in range(510_000, 510_012):
        scene, target = unseen_thing_scene(seed)
        drawn = [s["class_name"] for s in scene.segments if s["isthing"]]
        assert target in world.unseen and drawn.count(target) == 1
        assert [n for n in drawn if n in world.unseen] == [target]
        targets.append(target)
    assert sorted(set(targets)) == sorted(t for t in world.things if t in world.unseen)


SEEDS = range(510_000, 510_006)


class _Oracle:
    """A segmenter that returns each probe scene's ground truth, some labels renamed."""

    def __init__(self, rename=None):
        self.rename = rename or {}
        self.scenes = {unseen_thing_scene(s)[0].image.tobytes(): unseen_thing_scene(s)[0] for s in SEEDS}

    def __call__(self, image, vocabulary):
        from ovseg_core.structures import PanopticResult, Segment
        scene = self.scenes[image.tobytes()]
        segments = [Segment(id=s["id"], class_index=s["category_id"] - 1,
                            class_name=self.rename.get(s["class_name"], s["class_name"]), score=1.0,
                            is_thing=bool(s["isthing"]), area=s["area"], bbox=tuple(s["bbox"]))
                    for s in scene.segments]
        return PanopticResult(segment_map=scene.segment_map, segments=segments, semantic_map=scene.semantic_map())


def test_probe_counts_a_hit_only_for_the_right_name_on_the_right_pixels():
    records = probe(_Oracle(), SEEDS)
    assert all(r["iou"] == 1.0 and r["label"] == r["thing"] for r in records)
    summary = summarize(records)
    assert summary["hit rate"] == 1.0 and summary["found rate"] == 1.0
    assert np.isclose(summary["chance hit rate"], 1 / 36)

    # every unseen thing called "red circle": found, never a hit; of the six, the red star
    # keeps its color and the green circle its shape
    summary = summarize(probe(_Oracle(rename={t: "red circle" for t in load_classes().unseen}), SEEDS))
    assert summary["hits"] == 0 and summary["found rate"] == 1.0
    assert np.isclose(summary["color right of found"], 1 / 6) and np.isclose(summary["shape right of found"], 1 / 6)
