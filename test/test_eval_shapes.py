"""training/eval_shapes.py: the report the README's ShapesWorld numbers come from."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
import eval_shapes  # noqa: E402

from ovseg_core.build import build_from_config  # noqa: E402
from ovseg_core.config import DATA_DIR, PRESET_DIR, load_preset  # noqa: E402
from ovseg_core.weights import save_delta  # noqa: E402

GROUPS = {"all", "things", "stuff", "seen", "unseen", "seen things", "unseen things", "unseen stuff"}
ROWS = ("predicted masks", "predicted masks, random labels", "oracle masks", "oracle masks, random labels")


def _run(out_dir, *extra):
    out = Path(out_dir) / "eval.json"
    eval_shapes.main(["--num", "2", "--seed", "900000", "--threads", "1", "--out", str(out), *extra])
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The frozen `shapes` preset on two scenes (shared: an evaluation is slow on a CPU)."""
    return _run(tmp_path_factory.mktemp("shipped"))


def test_report_has_every_group_and_a_chance_row_per_mask_source(shipped):
    """One run reports things, stuff, seen, unseen and unseen things / stuff apart, each mask
    source beside its chance row over the same ground truth; the groups partition the GT."""
    for key in ROWS:
        assert set(shipped[key]) == GROUPS
    for group in GROUPS:  # the chance rows score the same scenes
        assert len({shipped[key][group]["GT segments"] for key in ROWS}) == 1
    row = shipped["predicted masks"]
    n = {g: row[g]["GT segments"] for g in GROUPS}
    assert n["all"] > 0 and n["all"] == n["things"] + n["stuff"] == n["seen"] + n["unseen"]
    assert n["unseen"] == n["unseen things"] + n["unseen stuff"]
    assert n["things"] == n["seen things"] + n["unseen things"]
    # the classifier beats random labels on the same oracle masks (stuff: 99% vs 1 in 8)
    assert shipped["oracle masks"]["all"]["TP"] > shipped["oracle masks, random labels"]["all"]["TP"]
    text = eval_shapes.format_report(shipped)
    assert "unseen things" in text and "predicted masks, random labels" in text


def test_random_labels_keep_each_segment_and_its_kind():
    """The chance prediction relabels segments (thing -> a thing class, stuff -> a stuff
    class) without moving a pixel, merges stuff segments that land on one class, and is
    reproducible from its seed."""
    is_thing = [True, True, True, False]             # three thing classes, one stuff class
    seg_map = np.array([[1, 1, 2, 2], [3, 3, 4, 4], [5, 5, 0, 0]], np.int32)
    segments = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 3}, {"id": 3, "category_id": 1},
                {"id": 4, "category_id": 3}, {"id": 5, "category_id": 2}]
    semantic = np.array([[0, 0, 3, 3], [1, 1, 3, 3], [2, 2, 3, 3]], np.int32)
    chance = eval_shapes.random_labels(seg_map, segments, semantic, is_thing, np.random.default_rng(3))
    new_map, new_segments, new_semantic = chance
    labels = {s["id"]: s["category_id"] for s in new_segments}
    assert set(labels) == {1, 2, 3, 5}
    assert labels[2] == 3 and all(labels[i] in (0, 1, 2) for i in (1, 3, 5))
    assert (new_map == np.where(seg_map == 4, 2, seg_map)).all()    # the two stuff segments merged
    assert set(np.unique(new_semantic[:, 2:])) == {3} and new_semantic[:, :2].max() <= 2
    again = eval_shapes.random_labels(seg_map, segments, semantic, is_thing, np.random.default_rng(3))
    assert again[1] == new_segments and (again[2] == new_semantic).all()
    things = [eval_shapes.random_labels(seg_map, segments, semantic, is_thing, np.random.default_rng(s))[1][0]
              ["category_id"] for s in range(60)]
    assert set(things) == {0, 1, 2}                  # uniform over the thing classes, not fixed


def test_eval_shapes_scores_a_trained_delta_with_its_run_preset(shipped, tmp_path):
    """--preset takes a run's preset.yaml and --weights its delta (the trained classifier
    is what gets scored); a delta that does not fit the preset is refused."""
    data = yaml.safe_load((PRESET_DIR / "shapes.yaml").read_text())
    data["classifier"].update(sma_layers=[-1], distribution_adapter_layers=2, learned_void=True,
                              trainable="query_projection")
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(data))
    cfg = load_preset(str(preset))
    cfg.device = "cpu"
    segmenter = build_from_config(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in segmenter.classifier.named_parameters():
            if name in segmenter.trainable:
                param.normal_(0, 1.0)                 # query projections and SMA scrambled
    delta = tmp_path / "delta.safetensors"
    save_delta(segmenter.classifier, segmenter.trainable, str(delta), cfg.name)
    trained = _run(tmp_path, "--preset", str(preset), "--weights", str(delta))
    assert trained["weights"] == str(delta) and trained["preset"] == str(preset)
    assert shipped["weights"] == "none (frozen)"
    # the scrambled delta is what got scored: far fewer oracle segments named right
    assert trained["oracle masks"]["all"]["TP"] < shipped["oracle masks"]["all"]["TP"]
    with pytest.raises(ValueError, match="do not match"):
        _run(tmp_path, "--weights", str(delta))      # the frozen preset has no SMA to load into


def test_eval_shapes_scores_another_clip_checkpoint(shipped, tmp_path, capsys):
    """--clip-weights swaps the CLIP the preset names (a training run's checkpoint) and the
    report says which one it scored; a CLIP with scrambled weights scores differently."""
    assert shipped["clip weights"] == "the preset's"
    state = load_file(str(DATA_DIR / "weights" / "shapes" / "clip.safetensors"))
    torch.manual_seed(0)
    key = "visual.proj"
    state[key] = state[key][:, torch.randperm(state[key].shape[1])]  # the image embedding scrambled
    other = tmp_path / "scrambled.safetensors"
    save_file(state, str(other))
    scrambled = _run(tmp_path, "--clip-weights", str(other), "--clip-input-size", "160")
    assert scrambled["clip weights"] == str(other) and scrambled["clip input size"] == 160
    assert scrambled["oracle segment accuracy"] != shipped["oracle segment accuracy"]
    assert "oracle segment accuracy" in capsys.readouterr().out
