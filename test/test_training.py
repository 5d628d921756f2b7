"""The trainer (issue 12) on the CPU with small configurations of the real architectures.

Recipes here train on generated ShapesWorld scenes (no dataset download), with the
tiny CLIP and either the tiny random Mask2Former or the shapes preset's trained one.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from ovseg_core.build import build_segmenter
from ovseg_core.shapes.world import load_classes
from ovseg_core.training.loop import RunDirError, Trainer
from ovseg_core.training.recipe import load_recipe
from ovseg_core.training import cli as train_script

REPO = Path(__file__).resolve().parent.parent

# Tiny CLIP (random) and tiny Mask2Former (random): the cheapest real stack.
TINY = {"preset": "tiny", "model": {"classifier.learned_void": True, "device": "cpu"},
        "method": "smart", "seed": 0,
        "data": {"dataset": "shapes", "crop_size": 64, "shapes_size": 64, "scale_range": [0.75, 1.25],
                 "num_workers": 0, "shapes_num_scenes": 64},
        "optim": {"lr": 1e-3, "batch_size": 4, "max_iters": 4, "warmup_iters": 1},
        "checkpoint_every": 2, "log_every": 1}


def write_recipe(tmp_path: Path, base: dict, **changes) -> Path:
    recipe = yaml.safe_load(yaml.safe_dump(base))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = recipe
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / f"recipe_{abs(hash(str(sorted(changes.items())))) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def trainer(tmp_path, recipe_path, name="run", **kwargs) -> Trainer:
    return Trainer(load_recipe(str(recipe_path)), tmp_path / "runs" / name, device="cpu", progress=False,
                   **kwargs)


def test_overfitting_a_few_scenes_raises_pq_well_above_the_untrained_model(tmp_path):
    """Two fixed ShapesWorld scenes, no augmentation; the shapes preset's trained proposals
    and a random tiny CLIP whose whole image tower trains (+ SMA, adapter, void): the loss
    falls and PQ on those scenes (the validator the trainer uses) rises well above the
    untrained model's."""
    recipe = dict(TINY, preset="shapes", model={
        "clip.model": "ovseg-tiny-vit", "clip.pretrained": None, "clip.input_size": 128,
        "classifier.sma_layers": [-1], "classifier.distribution_adapter_layers": 2,
        "classifier.learned_void": True, "classifier.trainable": "full_clip", "device": "cpu"})
    path = write_recipe(tmp_path, recipe, data__crop_size=128, data__shapes_size=128, data__scale_range=[1.0, 1.0],
                        data__flip=False, data__shapes_num_scenes=2, data__shapes_seed=500,
                        optim__batch_size=2, optim__max_iters=40, optim__lr=3e-3, optim__warmup_iters=3,
                        optim__grad_clip=1.0,
                        checkpoint_every=1000, log_every=1)
    from ovseg_core.datasets import load_dataset
    from ovseg_core.shapes.__main__ import write_scenes
    from ovseg_core.shapes.world import generate_scene
    scenes = [generate_scene(500 + i, size=128, classes=load_classes().seen(load_classes().names)) for i in range(2)]
    write_scenes(tmp_path / "val", scenes, [f"{i}" for i in range(2)])  # exactly the training scenes
    validate = train_script.dataset_validator(lambda: load_dataset("panoptic_folder", tmp_path / "val"), 2)
    t = trainer(tmp_path, path, validate=validate)
    before = t.run_validation()
    t.fit()
    after = [json_line for json_line in (tmp_path / "runs" / "run" / "validation.jsonl").read_text().splitlines()]
    final = yaml.safe_load(after[-1])
    losses = np.loadtxt(tmp_path / "runs" / "run" / "metrics.csv", delimiter=",", skiprows=1, usecols=1)
    assert losses[-10:].mean() < 0.5 * losses[:5].mean(), losses
    assert final["PQ_All"] > before["PQ_All"] + 20, (before, final)


def test_query_projection_tuning_leaves_every_frozen_tensor_bit_identical(tmp_path):
    path = write_recipe(tmp_path, TINY, optim__weight_decay=0.05, optim__max_iters=3,
                        model={"classifier.learned_void": True, "classifier.trainable": "query_projection",
                               "device": "cpu"})
    t = trainer(tmp_path, path)
    trained = set(t.names)
    assert trained and all(".q_proj." in n or ".sma." in n or "distribution_adapter" in n or
                           n == "void_embedding" for n in trained), sorted(trained)
    modules = {"classifier": t.classifier, "text": t.segmenter.text_encoder.model, "proposals": t.segmenter.proposals}
    before = {f"{m}.{k}": v.clone() for m, mod in modules.items() for k, v in mod.state_dict().items()}
    t.fit()
    after = {f"{m}.{k}": v for m, mod in modules.items() for k, v in mod.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"classifier.{n}" for n in trained if not torch.equal(before[f"classifier.{n}"],
                                                                                after[f"classifier.{n}"])}
    assert any(".q_proj.weight" in k for k in changed), "the query projections did not move"
    frozen = [k for k in before if k.removeprefix("classifier.") not in trained]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_stopped_and_resumed_training_equals_an_uninterrupted_run(tmp_path):
    path = write_recipe(tmp_path, TINY, optim__max_iters=4, checkpoint_every=2)
    trainer(tmp_path, path, name="straight").fit()
    first = trainer(tmp_path, path, name="split")
    assert first.fit(stop_at=2) == 2
    del first
    resumed = trainer(tmp_path, path, name="split", resume=True)
    assert resumed.step == 2
    resumed.fit()
    a = load_file(tmp_path / "runs" / "straight" / "delta.safetensors")
    b = load_file(tmp_path / "runs" / "split" / "delta.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "runs" / "split" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_one_step_on_two_gloo_processes_equals_one_process_with_the_whole_batch(tmp_path):
    path = write_recipe(tmp_path, TINY, optim__max_iters=1, optim__grad_clip=0.0, optim__lr=1e-4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [str(REPO / "training" / "train.py"), "--config", str(path), "--runs-dir", str(tmp_path / "runs"),
              "--device", "cpu", "--no-progress"]
    subprocess.run([sys.executable, *common, "--name", "one"], check=True, env=env, timeout=600)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(29500 + os.getpid() % 1000), *common, "--name", "two"], check=True, env=env, timeout=600)
    one = load_file(tmp_path / "runs" / "one" / "delta.safetensors")
    two = load_file(tmp_path / "runs" / "two" / "delta.safetensors")
    init = trainer(tmp_path, path, name="init").classifier.state_dict()
    moved = [k for k in one if not torch.equal(one[k], init[k])]
    assert moved, "the step changed nothing"
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=0, atol=1e-7), (k, (one[k] - two[k]).abs().max())


# The shapes preset (trained CLIP and Mask2Former) made a SMART model: real proposals, so
# segments exist and a delta visibly changes them.
SHAPES_SMART = dict(TINY, preset="shapes", model={
    "classifier.sma_layers": [-1], "classifier.distribution_adapter_layers": 2, "classifier.learned_void": True,
    "classifier.trainable": "query_projection", "device": "cpu"},
    data=dict(TINY["data"], crop_size=128, shapes_size=128))


def test_a_trained_delta_loads_into_the_segmenter_and_the_cli_and_changes_their_output(tmp_path):
    from PIL import Image
    from ovseg_core.shapes.world import generate_scene
    path = write_recipe(tmp_path, SHAPES_SMART, optim__max_iters=2, optim__lr=1e-2)
    trainer(tmp_path, path).fit()
    run = tmp_path / "runs" / "run"
    image = generate_scene(777, size=128).image
    vocab = load_classes().vocabulary_text()
    plain = build_segmenter(str(run / "preset.yaml"), device="cpu")
    tuned = build_segmenter(str(run / "preset.yaml"), weights=str(run / "delta.safetensors"), device="cpu")
    ours = {name: [(s.class_index + 1, s.area, round(s.score, 3)) for s in seg(image, vocab).segments]
            for name, seg in (("plain", plain), ("tuned", tuned))}
    assert ours["plain"] and ours["tuned"] and ours["plain"] != ours["tuned"]
    # the same delta through `ovseg segment --weights` gives the tuned segments
    Image.fromarray(image).save(tmp_path / "frame.png")
    subprocess.run([sys.executable, "-m", "ovseg_core.cli", "segment", str(tmp_path / "frame.png"),
                    "--preset", str(run / "preset.yaml"), "--vocab", vocab, "--out", str(tmp_path / "cli"),
                    "--device", "cpu", "--weights", str(run / "delta.safetensors")], check=True, timeout=300)
    written = yaml.safe_load((tmp_path / "cli" / "panoptic.json").read_text())["annotations"][0]["segments_info"]
    assert [(s["category_id"], s["area"], round(s["score"], 3)) for s in written] == ours["tuned"]


def test_mask_adapter_warms_up_on_ground_truth_then_mixes_in_matched_proposals(tmp_path):
    recipe = dict(TINY, method="mask_adapter", model={
        "classifier.type": "mask_adapter", "classifier.sma_layers": [], "classifier.distribution_adapter_layers": 0,
        "classifier.trainable": "new_modules", "classifier.adapter_hidden": 32, "device": "cpu"})
    # the tiny random Mask2Former rarely reaches IoU 0.7: a low threshold makes pairs
    path = write_recipe(tmp_path, recipe, mask_adapter={"gt_warmup_iters": 2}, optim__max_iters=4,
                        matcher={"type": "iou", "iou_threshold": 0.05})
    t = trainer(tmp_path, path)
    assert all(".adapter." in n or n.startswith("adapter.") for n in t.names), t.names
    # the mixed steps take the proposals inference classifies (split where the preset says so)
    steps, propose = [], t.segmenter.propose
    t.segmenter.propose = lambda layout: steps.append(t.step) or propose(layout)
    t.fit()
    assert {2, 3} <= set(steps) and not {0, 1} & set(steps), steps
    text = (tmp_path / "runs" / "run" / "metrics.csv").read_text().splitlines()
    header, rows = text[0].split(","), [r.split(",") for r in text[1:]]
    cons = [r[header.index("consistency")] for r in rows]
    assert cons[:2] == ["", ""] and all(c != "" for c in cons[2:]), cons


def test_the_position_embedding_trains_after_a_validation_at_another_size(tmp_path):
    path = write_recipe(tmp_path, TINY, optim__max_iters=1, model={
        "clip.input_size": 96, "classifier.trainable": "full_clip", "device": "cpu"})
    t = trainer(tmp_path, path)
    with torch.no_grad():
        t.segmenter(np.zeros((64, 64, 3), np.uint8), "a; b")   # caches the 96 px embedding
    pos = t.classifier.encoder.positional_embedding
    before = pos.detach().clone()
    t.fit()
    assert not torch.equal(before, pos.detach()), "positional_embedding got no gradient after evaluation"


@pytest.mark.parametrize("change, message", [
    ({"optim__learning_rate": 1.0}, "unknown key"),
    ({"data__train_classes": ["red circle", "flying saucer"]}, "flying saucer"),
    ({"data__train_classes": ["red star"]}, "unseen"),
    ({"model": {"classifier.sma_layerz": [0]}}, "sma_layerz"),
    ({"method": "maskclip"}, "method"),
    ({"data__shapes_grey_share": 1.5}, "shapes_grey_share"),
    ({"data__shapes_hue_share": -0.1}, "shapes_hue_share"),
])
def test_bad_recipes_stop_at_start_naming_the_key(tmp_path, change, message):
    path = write_recipe(tmp_path, TINY, **change)
    with pytest.raises(ValueError, match=message):
        trainer(tmp_path, path)


def test_existing_runs_are_not_overwritten_and_resume_refuses_another_recipe(tmp_path):
    path = write_recipe(tmp_path, TINY, optim__max_iters=1)
    trainer(tmp_path, path).fit()
    with pytest.raises(RunDirError, match="already holds a run"):
        trainer(tmp_path, path)
    other = write_recipe(tmp_path, TINY, optim__max_iters=1, optim__lr=0.5)
    with pytest.raises(RunDirError, match="optim.lr"):
        trainer(tmp_path, other, resume=True)
    rc = train_script.main(["--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--name", "run",
                            "--device", "cpu"])
    assert rc == 2


def test_a_dataset_path_without_the_layout_stops_with_the_layout(tmp_path, capsys):
    path = write_recipe(tmp_path, TINY, data={"dataset": "coco_panoptic", "root": str(tmp_path / "nowhere")})
    rc = train_script.main(["--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"])
    assert rc == 2 and "panoptic_train2017" in capsys.readouterr().err


def test_asking_for_the_adapted_masks_runs_the_adapter_once_and_changes_no_logit(build_tiny):
    seg = build_tiny(0)
    clf = seg.classifier
    calls = []
    hook = clf.encoder.distribution_adapter.register_forward_hook(lambda *a: calls.append(1))
    from ovseg_core.structures import MaskProposals
    g = torch.Generator().manual_seed(0)
    proposals = MaskProposals(torch.randn(2, 5, 32, 32, generator=g) * 4, torch.ones(2, 5))
    images = torch.rand(2, 3, 128, 128, generator=g)
    text = seg.text_encoder.encode("red circle; sky [stuff]")
    with torch.no_grad():
        clf.encoder.distribution_adapter.conv2.weight.normal_(0, 0.5)  # not the identity
        plain = clf(images, proposals, text)
        chunks = len(calls)
        calls.clear()
        logits, adapted = clf(images, proposals, text, return_adapted_masks=True)
    hook.remove()
    assert torch.equal(plain, logits)
    assert adapted.shape[:2] == (2, 5) and len(calls) == chunks  # the adapter's chunks ran once, not twice


def test_loader_workers_do_not_change_what_a_step_sees(tmp_path):
    path0 = write_recipe(tmp_path, TINY, optim__max_iters=2, data__num_workers=0)
    path2 = write_recipe(tmp_path, TINY, optim__max_iters=2, data__num_workers=2)
    trainer(tmp_path, path0, name="w0").fit()
    trainer(tmp_path, path2, name="w2").fit()
    a = load_file(tmp_path / "runs" / "w0" / "delta.safetensors")
    b = load_file(tmp_path / "runs" / "w2" / "delta.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_preset_weights_of_another_preset_stop_the_run_at_start(tmp_path):
    path = write_recipe(tmp_path, TINY, optim__max_iters=1)
    trainer(tmp_path, path, name="tiny").fit()
    other = write_recipe(tmp_path, SHAPES_SMART, model={**SHAPES_SMART["model"],
                                                        "weights": str(tmp_path / "runs" / "tiny" / "delta.safetensors")})
    with pytest.raises(ValueError, match="do not match"):
        trainer(tmp_path, other, name="shapes")


@pytest.mark.parametrize("policy", ["query_projection", "lora"])
def test_new_modules_get_the_full_lr_and_clips_own_tensors_a_tenth(tmp_path, policy):
    """LoRA matrices are new (full lr) although they sit inside CLIP's projections."""
    path = write_recipe(tmp_path, TINY, model={"classifier.trainable": policy, "classifier.lora_rank": 2,
                                               "classifier.learned_void": True, "device": "cpu"})
    t = trainer(tmp_path, path)
    lr_of = {id(p): g["initial_lr"] for g in t.optimizer.param_groups for p in g["params"]}
    params = dict(t.classifier.named_parameters())
    clip_own = [n for n in t.names if ".q_proj." in n and ".lora_" not in n]
    assert bool(clip_own) == (policy == "query_projection")
    assert any(".lora_" in n for n in t.names) == (policy == "lora")
    for name in t.names:
        assert lr_of[id(params[name])] == pytest.approx(1e-3 * (0.1 if name in clip_own else 1.0)), name


def test_a_mask_adapter_trains_as_the_out_of_vocabulary_half_of_an_ensemble(tmp_path):
    """Mask-Adapter in place of FC-CLIP's mask pooling: the ensemble's second half trains,
    its first (frozen MaskCLIP) does not, and the delta loads into the run's ensemble."""
    recipe = dict(TINY, method="mask_adapter", model={
        "classifier.trainable": "frozen", "classifier.sma_layers": [], "classifier.distribution_adapter_layers": 0,
        "ensemble.classifier.type": "mask_adapter", "ensemble.classifier.trainable": "new_modules",
        "ensemble.classifier.adapter_hidden": 32, "ensemble.alpha": 0.7, "ensemble.beta": 0.9, "device": "cpu"})
    path = write_recipe(tmp_path, recipe, optim__max_iters=2, optim__lr=1e-2)
    t = trainer(tmp_path, path)
    assert t.trained is t.classifier.second and t.names and all(n.startswith("second.adapter.") for n in t.names)
    first = {k: v.clone() for k, v in t.classifier.first.state_dict().items()}
    t.fit()
    assert all(torch.equal(first[k], v) for k, v in t.classifier.first.state_dict().items())
    run = tmp_path / "runs" / "run"
    batch = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = build_segmenter(str(run / "preset.yaml"), device="cpu").predict(batch, "red circle; sky [stuff]")[1]
    torch.manual_seed(0)
    tuned = build_segmenter(str(run / "preset.yaml"), weights=str(run / "delta.safetensors"),
                            device="cpu").predict(batch, "red circle; sky [stuff]")[1]
    assert not torch.allclose(plain, tuned)


def test_a_method_without_a_classifier_of_its_kind_is_refused(tmp_path):
    path = write_recipe(tmp_path, TINY, method="mask_adapter")
    with pytest.raises(ValueError, match="MaskAdapterClassifier"):
        trainer(tmp_path, path)


def test_the_text_tower_trains_when_the_preset_says_so_and_its_delta_moves_the_embeddings(tmp_path):
    path = write_recipe(tmp_path, TINY, optim__max_iters=2, optim__lr=1e-2,
                        model={"text.trainable": True, "classifier.learned_void": True, "device": "cpu"})
    t = trainer(tmp_path, path)
    text_names = [n for n in t.names if n.startswith("text_tower.")]
    assert text_names and "text_tower.logit_scale" not in t.names
    t.fit()
    run = tmp_path / "runs" / "run"
    assert set(text_names) <= set(load_file(run / "delta.safetensors"))
    vocab = "red circle; sky [stuff]"
    torch.manual_seed(0)
    plain = build_segmenter(str(run / "preset.yaml"), device="cpu").text_encoder.encode(vocab).embeddings
    torch.manual_seed(0)
    tuned = build_segmenter(str(run / "preset.yaml"), weights=str(run / "delta.safetensors"),
                            device="cpu").text_encoder.encode(vocab).embeddings
    assert not torch.allclose(plain, tuned)
    frozen = trainer(tmp_path, write_recipe(tmp_path, TINY), name="frozen_text")
    assert not any(n.startswith("text_tower.") for n in frozen.names)


def repainted_things(**share):
    """The training source with ``share`` (grey_share / hue_share) against the plain one on
    the same 40 scenes: the vocabulary, and (old name, new name, mean RGB) of every thing
    renamed, after checking that the scenes are the same, nothing unseen is named, and
    every thing kept is painted as before."""
    from ovseg_core.training.data import ShapesSource, shapes_vocabulary
    from ovseg_core.training.recipe import DataConfig
    world = load_classes()
    seen, _ = shapes_vocabulary(DataConfig(dataset="shapes"), "test")
    plain, changed = ShapesSource(seen, 40, 1000, 96), ShapesSource(seen, 40, 1000, 96, **share)
    assert changed.vocabulary.names[:len(seen.names)] == seen.names
    renamed, things = [], 0
    for i in range(40):
        a, b = plain.load(i), changed.load(i)
        assert np.array_equal(a.index, b.index)      # the same scene; only paint and names differ
        for k, (ca, cb) in enumerate(zip(a.classes, b.classes)):
            name_a, name_b = seen.names[ca], changed.vocabulary.names[cb]
            assert name_b not in world.unseen
            things += name_a in world.things
            pixels = b.index == k + 1
            if name_b == name_a:
                assert np.array_equal(a.image[pixels], b.image[pixels])
            else:
                renamed.append((name_a, name_b, b.image[pixels].astype(np.float32).mean(0)))
    assert 0.3 < len(renamed) / things < 0.7
    return changed.vocabulary.names[len(seen.names):], renamed


def test_grey_things_are_named_by_their_shape_and_no_unseen_thing_is_ever_drawn():
    world = load_classes()
    extra, renamed = repainted_things(grey_share=0.5)
    assert extra == list(world.shapes)
    palette = np.array(list(world.colors.values()), np.float32)
    for name_a, name_b, rgb in renamed:
        assert name_b == name_a.split(" ")[1]                 # "red star" -> "star"
        assert rgb.max() - rgb.min() < 0.3 * rgb.mean() + 2   # grey, not a palette hue
        assert np.abs(palette - rgb).sum(1).min() > 60


def test_extra_hue_things_are_named_by_their_hue_and_no_unseen_thing_is_ever_drawn():
    from ovseg_core.shapes import EXTRA_HUES
    world = load_classes()
    extra, renamed = repainted_things(hue_share=0.5)
    assert extra == [f"{h} {s}" for h in EXTRA_HUES for s in world.shapes] and not set(extra) & set(world.names)
    palette = np.array(list(world.colors.values()), np.float32)
    for name_a, name_b, rgb in renamed:
        hue, shape = name_b.split(" ")
        assert hue in EXTRA_HUES and shape == name_a.split(" ")[1]   # "red circle" -> "teal circle"
        assert np.abs(palette - rgb).sum(1).min() > 40             # not a palette color


def test_a_run_with_grey_things_trains_on_the_seen_classes_and_the_shape_words(tmp_path):
    world = load_classes()
    t = trainer(tmp_path, write_recipe(tmp_path, TINY, optim__max_iters=2, data__shapes_grey_share=0.5))
    assert t.vocab.names[-len(world.shapes):] == list(world.shapes)
    assert not set(t.vocab.names) & set(world.unseen)
    t.fit()
    assert (tmp_path / "runs" / "run" / "delta.safetensors").is_file()
