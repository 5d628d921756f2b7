"""ovseg_core.shapes.evaluate (training/shapes/eval_shapes.py): the report the ShapesWorld
numbers of docs/shapesworld.md come from."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from ovseg_core.build import build_from_config
from ovseg_core.config import DATA_DIR, PRESET_DIR, load_preset
from ovseg_core.shapes import evaluate as eval_shapes
from ovseg_core.weights import save_delta

GROUPS = {"all", "things", "stuff", "seen", "unseen", "seen things", "unseen things", "unseen stuff"}
ROWS = ("predicted masks", "predicted masks, random labels", "predicted masks, oracle classes", "oracle masks",
        "oracle masks, random labels")
LAYOUTS = ("standard", "variants")


def _run(out_dir, *extra):
    out = Path(out_dir) / "eval.json"
    # a short probe (the default 120 scenes is for the published numbers)
    eval_shapes.main(["--num", "3", "--seed", "900000", "--threads", "1", "--probe", "6", "--out", str(out), *extra])
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The frozen `shapes` preset on three scenes per layout, standard and variants (shared:
    an evaluation is slow on a CPU)."""
    return _run(tmp_path_factory.mktemp("shipped"))


def test_report_has_every_group_and_a_chance_row_per_mask_source(shipped):
    """One run reports, for the standard layout and the layout variants each, things, stuff,
    seen, unseen and unseen things / stuff apart, each mask source beside its chance row
    and predicted masks beside them with oracle classes, over the same ground truth; the
    groups partition the GT. The standard layout's keys stay at the top level."""
    assert shipped["layouts"] == list(LAYOUTS)
    for layout in LAYOUTS:
        section = shipped[layout]
        for key in ROWS:
            assert set(section[key]) == GROUPS
        for group in GROUPS:  # the chance and oracle-class rows score the same scenes
            assert len({section[key][group]["GT segments"] for key in ROWS}) == 1
        row = section["predicted masks"]
        n = {g: row[g]["GT segments"] for g in GROUPS}
        assert n["all"] > 0 and n["all"] == n["things"] + n["stuff"] == n["seen"] + n["unseen"]
        assert n["unseen"] == n["unseen things"] + n["unseen stuff"]
        assert n["things"] == n["seen things"] + n["unseen things"]
        # the classifier beats random labels on the same oracle masks (stuff: 99% vs 1 in 8)
        assert section["oracle masks"]["all"]["TP"] > section["oracle masks, random labels"]["all"]["TP"]
        assert set(section["proposal recall"]) >= {"thing", "stuff", "seen", "unseen"}
        assert set(section["kept by the merge"]) == set(section["proposal recall"])
        missed = round(section["recall segments"]["thing"] * (1 - section["proposal recall"]["thing"] / 100))
        assert sum(section["missed things"].values()) == missed
    for key in (*ROWS, "oracle segment accuracy", "proposal recall", "size"):
        assert shipped[key] == shipped["standard"][key]
    assert shipped["variants"]["variants"][1] == "256x144, vertical stuff bands, thick outline"
    assert shipped["standard"]["predicted masks"] != shipped["variants"]["predicted masks"]
    probe = shipped["unseen thing probe"]   # scenes with one unseen thing each, past the evaluated seeds
    assert probe["scenes"] == 6 and probe["seeds"] == [950_000, 950_005]
    assert 0 <= probe["hits"] <= 6 and probe["chance hit rate"] == probe["found rate"] / 36
    text = eval_shapes.format_report(shipped)
    for words in ("unseen things", "predicted masks, random labels", "predicted masks, oracle classes",
                  "== variants", "layouts side by side", "seen things", "proposal recall", "unseen-thing probe",
                  "things no proposal covers"):
        assert words in text


def test_oracle_color_and_shape_accuracy_split_by_seen_and_unseen_things(shipped):
    """Oracle-mask color / shape accuracy is reported for seen and unseen things apart; the
    two, weighted by their segment counts, make the figure over all things."""
    for layout in LAYOUTS:
        acc, gt = shipped[layout]["oracle segment accuracy"], shipped[layout]["oracle masks"]
        n_seen, n_unseen = gt["seen things"]["GT segments"], gt["unseen things"]["GT segments"]
        for half in ("color", "shape"):
            parts = [(n, acc[f"{who} thing {half}"]) for n, who in ((n_seen, "seen"), (n_unseen, "unseen")) if n]
            assert sum(n * a for n, a in parts) == pytest.approx(acc[f"thing {half}"] * (n_seen + n_unseen))
        assert acc["chance color / shape"] == pytest.approx(100 / 6)


def test_oracle_classes_on_perfect_masks_score_full_marks():
    """With a mask generator that proposes the ground-truth segments, "predicted masks,
    oracle classes" names every segment right (PQ 100) and recall is 100%: the row scores
    the mask generator alone."""
    from ovseg_core.shapes import generate_scene, load_classes
    from ovseg_core.structures import MaskProposals
    from ovseg_core.vocabulary import Vocabulary

    scenes = [generate_scene(900000 + i) for i in range(2)]
    by_image = {scene.image.tobytes(): scene for scene in scenes}

    class GroundTruthProposals(torch.nn.Module):
        pixel_mean = None

        def forward(self, batch):
            image = (batch[0].permute(1, 2, 0) * 255).round().byte().numpy()
            masks = torch.from_numpy(by_image[image.tobytes()].masks())
            return MaskProposals(masks=torch.where(masks, 20.0, -20.0)[None], objectness=torch.ones(1, len(masks)))

    cfg = load_preset("shapes")
    cfg.device = "cpu"
    cfg.proposals.input_size = 128  # the scenes' own size: the stand-in finds each image by its bytes
    segmenter = build_from_config(cfg)
    segmenter.proposals = GroundTruthProposals()
    world = load_classes()
    vocab = Vocabulary.parse(world.vocabulary_text())
    result = eval_shapes.evaluate_segmenter(segmenter, scenes, vocab, eval_shapes.class_groups(world, vocab))
    row = result["predicted masks, oracle classes"]["all"]
    assert row["PQ"] == pytest.approx(100) and row["TP"] == row["GT segments"] == sum(len(s.segments) for s in scenes)
    assert result["predicted masks, oracle classes"]["all"]["mIoU"] == pytest.approx(100)
    assert all(v == 100 for v in result["proposal recall"].values())
    assert result["kept by the merge"] == result["proposal recall"]


def test_layouts_option():
    assert eval_shapes.parse_layouts("variants") == ["variants"]
    assert eval_shapes.parse_layouts("standard, variants") == ["standard", "variants"]
    for bad in ("", "standard,standard", "squashed"):
        with pytest.raises(Exception, match="standard, variants"):
            eval_shapes.parse_layouts(bad)
    assert eval_shapes.parse_radius("4,7") == (4.0, 7.0)
    for bad in ("4", "7,4", "0,3", "a,b"):
        with pytest.raises(Exception, match="LO"):
            eval_shapes.parse_radius(bad)


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
    trained = _run(tmp_path, "--preset", str(preset), "--weights", str(delta), "--layouts", "standard")
    assert trained["weights"] == str(delta) and trained["preset"] == str(preset)
    assert shipped["weights"] == "none (frozen)"
    # the scrambled delta is what got scored: far fewer oracle segments named right
    assert trained["oracle masks"]["all"]["TP"] < shipped["oracle masks"]["all"]["TP"]
    with pytest.raises(ValueError, match="do not match"):
        _run(tmp_path, "--weights", str(delta), "--layouts", "standard")   # the frozen preset has no SMA


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
    scrambled = _run(tmp_path, "--clip-weights", str(other), "--clip-input-size", "160", "--layouts", "standard")
    assert scrambled["clip weights"] == str(other) and scrambled["clip input size"] == 160
    assert scrambled["oracle segment accuracy"] != shipped["oracle segment accuracy"]
    assert "oracle segment accuracy" in capsys.readouterr().out


def test_ensemble_wraps_the_trained_classifier_with_frozen_clip_on_seen_classes():
    """--ensemble: FC-CLIP's geometric ensemble of the preset's classifier (here with SMA and a
    learned void) and the frozen mask-attention one; ShapesWorld's seen classes are the
    in-vocabulary ones, so unseen classes lean on frozen CLIP (beta)."""
    from ovseg_core.modeling.classifiers import GeometricEnsemble, MaskAttentionClassifier
    from ovseg_core.shapes.world import generate_scene, load_classes
    from ovseg_core.vocabulary import Vocabulary

    world = load_classes()
    cfg = load_preset("shapes", {"classifier.sma_layers": [-1], "classifier.learned_void": True})
    cfg.device = "cpu"
    segmenter = build_from_config(cfg)
    trained = segmenter.classifier
    eval_shapes.add_frozen_half(segmenter, cfg, world, 0.4, 0.8)
    ensemble = segmenter.classifier
    assert isinstance(ensemble, GeometricEnsemble) and ensemble.first is trained
    assert isinstance(ensemble.second, MaskAttentionClassifier) and ensemble.second.void_embedding is None
    assert not ensemble.second.encoder.sma_layers and trained.encoder.sma_layers
    vocab = Vocabulary.parse(world.vocabulary_text())
    seen = segmenter.seen_mask(vocab)
    assert int(seen.sum()) == len(world.names) - len(world.unseen)
    assert not seen[vocab.names.index("red star")]
    scene = generate_scene(900_000)
    _, probs = segmenter.predict(torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255, vocab)
    assert probs.shape[-1] == len(vocab) + 1 and torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-4)


def test_eval_shapes_refuses_a_bad_override():
    with pytest.raises(SystemExit):
        eval_shapes.main(["--num", "1", "--set", "classifier.type"])
    with pytest.raises(SystemExit):
        eval_shapes.main(["--num", "1", "--ensemble", "0.4"])


def test_diagnose_shapes_reports_text_and_mask_token_factors(tmp_path, capsys):
    """ovseg_core.shapes.diagnose (training/shapes/diagnose_shapes.py): the text tower's
    shape separation and compositionality, and the mask tokens' nearest shape / color words, seen and unseen things apart."""
    from ovseg_core.shapes import diagnose as diagnose_shapes
    out = tmp_path / "diag.json"
    diagnose_shapes.main(["--num", "2", "--seed", "900000", "--threads", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    text = report["text"]
    assert -1 <= text["cos red circle / red square"] <= 1 and 0 <= text["analogy right"] <= 6
    assert set(text["analogy nearest"]) == {"red star", "orange hexagon", "yellow cross", "green circle",
                                            "blue square", "purple triangle"}
    tokens = report["mask tokens, oracle masks"]
    probe = tokens.pop("linear shape probe")
    assert set(tokens) == {"seen things", "unseen things"}
    assert sum(row["things"] for row in tokens.values()) > 0
    assert all(0 <= row[k] <= 100 for row in tokens.values() for k in ("class", "shape word", "color word"))
    assert sum(probe["things"].values()) == sum(row["things"] for row in tokens.values())
    for name in ("as is", "centred within color"):
        assert all(v is None or 0 <= v <= 100 for v in probe[name].values())
    printed = capsys.readouterr().out
    assert "analogy right for" in printed and "linear shape probe" in printed


def test_the_shape_probe_learns_a_color_prior_that_centring_removes():
    """Synthetic mask embeddings = a color direction + a shape direction, seen things a
    Latin square short of one shape per color (as ShapesWorld's split): the probe fitted
    as is reads the color and misses unseen things; centred within color it names them."""
    from ovseg_core.shapes import diagnose as diagnose_shapes
    torch.manual_seed(0)
    colors, shapes = torch.randn(6, 32) * 3, torch.randn(6, 32)
    data = []
    for _ in range(40):
        for c in range(6):
            for s in range(6):
                data.append((colors[c] + shapes[s] + 0.3 * torch.randn(32), s, c, s == (c + 3) % 6))
    probe = diagnose_shapes.shape_probe(data)
    assert probe["centred within color"]["held-out seen"] > 90
    assert probe["centred within color"]["unseen"] > 90
    assert probe["centred within color"]["unseen"] > probe["as is"]["unseen"]


def test_shapes_table_renders_a_report_in_both_modes(shipped, tmp_path, capsys):
    """ovseg_core.shapes.table (training/shapes/shapes_table.py) turns eval_shapes reports
    into the tables of docs/: one row per report (and its chance row), a column group per layout; --proposals counts
    the missed things with the report's own numbers."""
    from ovseg_core.shapes import table as shapes_table
    path = tmp_path / "r.json"
    path.write_text(json.dumps(shipped))
    assert shapes_table.main([f"frozen={path}"]) == 0
    text = capsys.readouterr().out
    assert "| frozen |" in text and "chance" in text and "**variants**" in text
    assert shapes_table.main(["--proposals", f"a={path}", f"b={path}"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| a |")]
    missed = shipped["standard"]["missed things"]
    assert len(rows) == 1 and f" {sum(missed.values())} ({missed['merged with a thing of its colour']}) " in rows[0]
    with pytest.raises(SystemExit):
        shapes_table.main(["no-equals-sign"])
