"""The ShapesWorld CLIP training script: its losses, its data and the size change
between training (64 px windows) and serving (the config's 128 px)."""
import json

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file

from ovseg_core.shapes import EXTRA_HUES, load_classes
from ovseg_core.shapes import train_clip as tcs
from ovseg_core.weights import create_clip, register_clip_configs


@pytest.fixture(scope="module")
def models():
    register_clip_configs()
    torch.manual_seed(0)
    return open_clip.create_model(tcs.MODEL, force_image_size=64), open_clip.create_model(tcs.MODEL)


def test_a_64px_model_fits_the_served_128px_model(models):
    small, served = models
    state = tcs.adapt_state_dict(small.state_dict(), served)
    assert state["visual.positional_embedding"].shape == served.visual.positional_embedding.shape
    served.load_state_dict(state)
    # The position embeddings are a resize of the trained ones, not new random ones: the
    # corners of the 16 x 16 grid stay close to the corners of the 8 x 8 one.
    grid_small = small.visual.positional_embedding[1:].reshape(8, 8, -1)
    grid_big = served.visual.positional_embedding[1:].reshape(16, 16, -1)
    corner = torch.nn.functional.cosine_similarity(grid_small[0, 0], grid_big[0, 0], dim=0)
    assert corner > 0.5, corner


def test_resizing_the_patch_embedding_keeps_a_flat_patch_response(models):
    """FlexiViT-style area resize, scaled so a uniform patch gives the same embedding."""
    small, _ = models
    state = {k: v.clone() for k, v in small.state_dict().items()}
    state["visual.conv1.weight"] = torch.randn(128, 3, 16, 16)  # a patch-16 checkpoint
    adapted = tcs.adapt_state_dict(state, small)
    flat16, flat8 = torch.full((1, 3, 16, 16), 0.3), torch.full((1, 3, 8, 8), 0.3)
    out16 = torch.nn.functional.conv2d(flat16, state["visual.conv1.weight"], stride=16)
    out8 = torch.nn.functional.conv2d(flat8, adapted["visual.conv1.weight"], stride=8)
    assert torch.allclose(out16, out8, atol=1e-4)


def test_vocabulary_batch_marks_every_thing_of_its_scenes():
    world = load_classes()
    seen = [t for t in world.things if t not in world.unseen]
    rng = np.random.default_rng(3)
    images, targets = tcs.vocabulary_batch(rng, 12, 64, (10, 28), scene_share=0.5)
    assert images.shape == (12, 64, 64, 3) and targets.shape == (12, len(seen))
    assert (targets.sum(1) >= 1).all() and targets.sum(1).max() > 1  # some scenes hold several things
    # Reproducible from the generator alone (the training run's only record of its data).
    again = tcs.vocabulary_batch(np.random.default_rng(3), 12, 64, (10, 28), scene_share=0.5)
    assert np.array_equal(again[0], images) and torch.equal(again[1], targets)


def test_vocabulary_loss_prefers_the_right_names():
    world = load_classes()
    seen = [t for t in world.things if t not in world.unseen]
    torch.manual_seed(0)
    texts = [torch.nn.functional.normalize(torch.randn(n, 16), dim=-1)
             for n in (len(seen), len(world.shapes), len(world.colors))]
    targets = torch.zeros(2, len(seen))
    targets[0, 0] = targets[1, 1] = targets[1, 2] = 1
    right = torch.nn.functional.normalize(torch.stack([texts[0][0], texts[0][1] + texts[0][2]]), dim=-1)
    wrong = torch.nn.functional.normalize(torch.stack([texts[0][5], texts[0][7]]), dim=-1)
    scale = torch.tensor(20.0)
    assert tcs.vocabulary_loss(right, texts, targets, scale, 0.5) < tcs.vocabulary_loss(wrong, texts, targets, scale, 0.5)


def test_off_palette_views_show_seen_shapes_in_no_palette_color():
    """The color-free shape prior must not smuggle in a palette color (a dark blue square
    would be the unseen "blue square"): every repainted pixel is grey within 12%, and the
    label is the shape that was drawn."""
    world = load_classes()
    rng = np.random.default_rng(5)
    images, shapes = tcs.off_palette_views(rng, 24, 64, (10, 28))
    assert images.shape == (24, 64, 64, 3) and shapes.dtype == torch.long
    assert len(set(shapes.tolist())) >= 4  # several shapes, not one
    again = np.random.default_rng(5)
    for image, shape in zip(images, shapes.tolist()):
        name = str(again.choice(world.seen(world.things)))
        scene = tcs.single_object_view(again, name, size=64, radius=(10, 28))
        again.uniform(30, 235), again.uniform(-0.12, 0.12, 3)
        assert world.shapes[shape] == name.split(" ")[1]
        thing = scene.masks()[[s["isthing"] == 1 for s in scene.segments]].any(0)
        pixels = image[thing].astype(float)
        spread = pixels.max(-1) - pixels.min(-1)
        assert (spread <= 0.3 * pixels.max(-1) + 2).all(), spread.max()
        assert np.array_equal(image[~thing], scene.image[~thing])  # the background is untouched
    assert tcs.off_palette_views(rng, 0, 64, (10, 28))[0].shape == (0, 64, 64, 3)


def test_a_short_run_saves_weights_the_shapes_loader_takes(tmp_path):
    out = tmp_path / "clip.safetensors"
    tcs.main(["--steps", "2", "--batch", "8", "--size", "64", "--vocab-share", "0.5", "--vocab-scene-share", "0.5",
              "--factor-weight", "0.5", "--off-palette-share", "0.5", "--eval-every", "100", "--warmup", "1", "--out", str(out),
              "--checkpoint", str(tmp_path / "last.safetensors")])
    tensors = load_file(str(out))
    assert all(v.dtype == torch.float16 for v in tensors.values() if v.is_floating_point())
    clip = create_clip(tcs.MODEL, str(out), "shapes")  # the 128 px config of the preset
    assert clip.visual.positional_embedding.shape[0] == 1 + 16 * 16
    with torch.no_grad():
        assert torch.isfinite(clip.encode_image(torch.zeros(1, 3, 128, 128))).all()


def test_evaluate_scores_a_saved_checkpoint_without_training(tmp_path, capsys):
    register_clip_configs()
    torch.manual_seed(0)
    out = tmp_path / "clip.safetensors"
    tcs.save_fp16(open_clip.create_model(tcs.MODEL), out, {})
    tcs.main(["--evaluate", str(out), "--views", "1", "--out", str(tmp_path / "never.safetensors")])
    path, report = capsys.readouterr().out.strip().split(" ", 1)
    scores = json.loads(report)
    assert path == str(out) and not (tmp_path / "never.safetensors").exists()
    assert set(scores) == {"seen", "unseen", "color", "shape", "unseen_shape", "off_palette_shape"}
    assert all(0 <= v <= 100 for v in scores.values())


def test_region_batch_labels_every_ground_truth_mask():
    names = tcs.region_names()
    world = load_classes()
    images, captions, masks, labels = tcs.region_batch(np.random.default_rng(5), 6, 64)
    assert images.shape == (6, 64, 64, 3) and len(captions) == 6 and masks.shape[:2] == labels.shape
    colors = list(world.colors)
    palette = torch.nn.functional.normalize(torch.tensor([world.colors[c] for c in colors], dtype=torch.float), dim=1)
    checked = 0
    for image, image_masks, image_labels in zip(images, masks, labels):
        real = image_labels >= 0
        # Every pixel belongs to exactly one real region; padding masks are empty.
        assert torch.equal((image_masks[real] > 0).sum(0), torch.ones(64, 64, dtype=torch.long))
        assert (image_masks[~real] < 0).all()
        # Each thing's label belongs to its mask: most of its pixels have the label's hue.
        for mask, k in zip(image_masks[real], image_labels[real].tolist()):
            if k < len(world.seen(world.things)):
                pixels = torch.nn.functional.normalize(torch.from_numpy(image[mask.numpy() > 0]).float(), dim=1)
                votes = (pixels @ palette.T).argmax(1)
                assert colors[int(votes.mode().values)] == names[k].split(" ")[0], names[k]
                checked += 1
    assert checked >= 6
    # Unseen things never appear in CLIP pretraining, as regions neither.
    assert not set(names) & set(world.unseen_of(world.things))


def test_region_loss_prefers_the_right_names():
    torch.manual_seed(0)
    texts = [torch.nn.functional.normalize(torch.randn(n, 16), dim=-1) for n in (len(tcs.region_names()), 6, 6)]
    labels = torch.tensor([[0, 31, -1]])  # a thing, a stuff region, padding
    right = torch.stack([texts[0][0], texts[0][31], texts[0][5]])[None]
    wrong = torch.stack([texts[0][3], texts[0][30], texts[0][0]])[None]
    scale = torch.tensor(20.0)
    assert tcs.region_loss(right, labels, texts, scale, 0.5) < tcs.region_loss(wrong, labels, texts, scale, 0.5)
    # Padding does not count: changing its embedding leaves the loss unchanged.
    moved = right.clone()
    moved[0, 2] = texts[0][9]
    assert torch.isclose(tcs.region_loss(right, labels, texts, scale, 0.5),
                         tcs.region_loss(moved, labels, texts, scale, 0.5))


def repainted_regions(**share):
    """12 region-stage scenes drawn with ``share`` (off_palette_share / extra_hue_share)
    against the same scenes drawn plainly (the scenes are drawn before any repainting):
    after checking that every region kept its label and its pixels, each scene's captions
    (plain, changed) and its repainted regions as (plain label, new label, mean RGB)."""
    images, captions, masks, labels = tcs.region_batch(np.random.default_rng(8), 12, 64, **share)
    plain_images, plain_captions, _, plain_labels = tcs.region_batch(np.random.default_rng(8), 12, 64)
    out = []
    for i in range(12):
        repainted = []
        for mask, label, before in zip(masks[i] > 0, labels[i].tolist(), plain_labels[i].tolist()):
            pixels = mask.numpy()
            if label == before:
                assert np.array_equal(images[i][pixels], plain_images[i][pixels])
            else:
                repainted.append((before, label, images[i][pixels].astype(np.float32).mean(0)))
        out.append((plain_captions[i], captions[i], repainted))
    return out


def test_region_batch_names_off_palette_things_by_shape_alone():
    names, world = tcs.region_names(), load_classes()
    palette = np.array(list(world.colors.values()), np.float32)
    grey = 0
    for plain_caption, caption, repainted in repainted_regions(off_palette_share=0.5):
        removed = []
        for before, label, rgb in repainted:
            assert label >= len(names)                              # past the region classes: a shape
            grey += 1
            color, shape = names[before].split(" ")
            assert shape == world.shapes[label - len(names)]
            assert np.abs(palette - rgb).sum(1).min() > 60          # no palette color is drawn
            removed.append(color)
        # each repainted thing's phrase lost its color word, and nothing else changed
        assert set(plain_caption.split()) - set(caption.split()) <= set(removed) | {"an"}  # an orange -> a
        assert len(plain_caption.split()) - len(caption.split()) == len(removed)
    assert grey > 5


def test_an_off_palette_region_is_scored_against_the_shape_words_only():
    torch.manual_seed(0)
    texts = [torch.nn.functional.normalize(torch.randn(n, 16), dim=-1) for n in (len(tcs.region_names()), 6, 6)]
    star = len(tcs.region_names()) + load_classes().shapes.index("star")
    labels = torch.tensor([[star]])
    right = texts[1][load_classes().shapes.index("star")][None, None]
    wrong = texts[1][0][None, None]
    scale = torch.tensor(20.0)
    assert tcs.region_loss(right, labels, texts, scale, 0.5) < tcs.region_loss(wrong, labels, texts, scale, 0.5)
    # no class prompt enters its loss: moving the class prompts leaves it unchanged
    moved = [torch.randn_like(texts[0]), texts[1], texts[2]]
    assert torch.isclose(tcs.region_loss(right, labels, texts, scale, 0.5),
                         tcs.region_loss(right, labels, moved, scale, 0.5))


def test_region_batch_names_extra_hue_things_by_their_hue():
    plain_names, names, world = tcs.region_names(), tcs.region_names(True), load_classes()
    assert names[:len(plain_names)] == plain_names and len(names) == len(plain_names) + 18
    palette = np.array(list(world.colors.values()), np.float32)
    hued = 0
    for plain_caption, caption, repainted in repainted_regions(extra_hue_share=0.5):
        for before, label, rgb in repainted:
            assert label >= len(plain_names)                        # an extra-hue class
            hued += 1
            hue, shape = names[label].split(" ")
            color, shape_before = names[before].split(" ")
            assert shape == shape_before and hue in EXTRA_HUES
            # the thing now has its hue (shaded), and no palette color
            assert np.abs(palette - rgb).sum(1).min() > 40, (names[label], rgb)
            assert np.abs(np.array(list(EXTRA_HUES.values())) - rgb).sum(1).argmin() == list(EXTRA_HUES).index(hue)
            assert f"{hue} {shape}" in caption and f"{hue} {shape}" not in plain_caption
    assert hued > 5
    # no unseen thing is a region class, and no extra-hue name is one of the world's classes
    assert not set(names) & set(world.unseen_of(world.things))
    assert not set(names[len(plain_names):]) & set(world.names)


def test_an_extra_hue_region_is_scored_against_its_class_its_shape_and_its_hue():
    torch.manual_seed(0)
    names = tcs.region_names(True)
    texts = [torch.nn.functional.normalize(torch.randn(n, 16), dim=-1) for n in map(len, tcs.region_prompts(True))]
    assert len(texts[2]) == 9                                 # 6 palette colors + 3 extra hues
    k = names.index("teal star")
    labels = torch.tensor([[k]])
    right = texts[0][k][None, None]
    wrong = texts[0][names.index("teal cross")][None, None]
    scale = torch.tensor(20.0)
    assert tcs.region_loss(right, labels, texts, scale, 0.5) < tcs.region_loss(wrong, labels, texts, scale, 0.5)
    # the factor loss reads the shape word "star" and the color word "teal"
    star, teal = load_classes().shapes.index("star"), 6 + list(EXTRA_HUES).index("teal")
    for group, index in ((1, star), (2, teal)):
        other = [t.clone() for t in texts]
        other[group][index] = -texts[0][k]                   # the right word now points away from the region
        assert tcs.region_loss(right, labels, texts, scale, 0.5) < tcs.region_loss(right, labels, other, scale, 0.5)


def test_the_region_stage_trains_the_served_tower_and_saves_it(tmp_path):
    """The region stage trains through MaskCLIPEncoder (split q/k/v); what it saves is
    that trained tower, in open_clip's layout, not the untouched fused copy."""
    register_clip_configs()
    torch.manual_seed(0)
    init = tmp_path / "init.safetensors"
    tcs.save_fp16(open_clip.create_model(tcs.MODEL), init, {})
    out = tmp_path / "clip.safetensors"
    tcs.main(["--steps", "2", "--size", "128", "--region-batch", "2", "--factor-weight", "0.5", "--warmup", "1",
              "--lr", "1e-3", "--init", str(init), "--eval-every", "100", "--out", str(out),
              "--checkpoint", str(tmp_path / "last.safetensors")])
    before, after = load_file(str(init)), load_file(str(out))
    key = "visual.transformer.resblocks.0.attn.in_proj_weight"
    assert not torch.equal(before[key], after[key])
    clip = create_clip(tcs.MODEL, str(out), "shapes")
    with torch.no_grad():
        assert torch.isfinite(clip.encode_image(torch.zeros(1, 3, 128, 128))).all()


def test_the_region_stage_refuses_the_caption_stage_options():
    with pytest.raises(SystemExit):
        tcs.main(["--region-batch", "2", "--vocab-share", "0.5", "--steps", "1"])
    with pytest.raises(SystemExit):
        tcs.main(["--region-batch", "2", "--caption-unseen", "--steps", "1"])


def _named_unseen(captions):
    unseen = load_classes().unseen_of(load_classes().things)
    return {u for c in captions for u in unseen if f" {u}" in c}


def test_the_caption_stage_names_unseen_things_only_when_asked():
    """Issue 13's rule by default (no unseen thing in an image, caption, negative or
    prompt); --caption-unseen is the papers' web-trained CLIP, which saw every class."""
    world = load_classes()
    unseen = set(world.unseen_of(world.things))
    rng = lambda: np.random.default_rng([4, 0])  # noqa: E731
    _, captions = tcs.training_batch(rng(), 64, 64, 0.3)
    negatives = [tcs.hard_negative(np.random.default_rng(k), c) for k, c in enumerate(captions) for _ in range(3)]
    assert not _named_unseen(captions + negatives)
    assert not unseen & set(tcs.caption_things()) and not _named_unseen(tcs.vocabulary_prompts()[0])
    _, web = tcs.training_batch(rng(), 64, 64, 0.3, with_unseen=True)
    web_negatives = [tcs.hard_negative(np.random.default_rng(k), c, with_unseen=True)
                     for k, c in enumerate(web) for _ in range(3)]
    assert _named_unseen(web) and _named_unseen(web_negatives)
    assert _named_unseen(tcs.vocabulary_prompts(True)[0]) == unseen
    images, targets = tcs.vocabulary_batch(np.random.default_rng(3), 24, 64, (10, 28), 0.5, with_unseen=True)
    assert targets.shape == (24, len(world.things))
    shown = {world.things[i] for i in targets.nonzero()[:, 1].tolist()}
    assert shown & unseen and shown - unseen


def test_a_caption_stage_run_that_names_unseen_things_says_so(tmp_path):
    out = tmp_path / "web.safetensors"
    tcs.main(["--steps", "1", "--batch", "8", "--vocab-share", "0.5", "--vocab-scene-share", "0.5",
              "--factor-weight", "0.5", "--caption-unseen", "--eval-every", "100", "--out", str(out),
              "--checkpoint", str(tmp_path / "last.safetensors")])
    from safetensors import safe_open
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["caption_unseen"] == "True"


@pytest.mark.parametrize("argv", [["--off-palette-share", "0.3"],  # no vocabulary images to take the share of
                                  ["--vocab-share", "0.5", "--off-palette-share", "1.5"]])
def test_an_off_palette_share_without_vocabulary_images_is_refused(argv, capsys):
    with pytest.raises(SystemExit):
        tcs.main(argv + ["--steps", "1"])
    assert "--off-palette-share" in capsys.readouterr().err


def test_evaluate_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tcs.main(["--evaluate", str(tmp_path / "missing.safetensors"), "--views", "1"])
    assert "missing.safetensors" in capsys.readouterr().err
