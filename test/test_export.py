"""ONNX export (ovseg export) and serving from ONNX Runtime (runtime: onnxruntime): the same
Segmenter gives the same logits and segments as PyTorch. Small configs; the 100-scene and
448-px measurements are bench/export.py's (docs/benchmarks-export.md)."""
import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'ovseg[export]'; "
                                          "make test installs it)")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'ovseg[export]')")

from ovseg_core.build import build_segmenter  # noqa: E402
from ovseg_core.config import DATA_DIR  # noqa: E402
from ovseg_core.export.cli import main as export_main  # noqa: E402
from ovseg_core.export.onnx_export import ExportMismatchError, export_segmenter  # noqa: E402
from ovseg_core.shapes.world import generate_scene, load_classes  # noqa: E402

TINY = {"inference.overlap_threshold": 0.0}   # random weights: keep every segment, so there is something to compare
SHAPES_WEIGHTS = DATA_DIR / "weights" / "shapes" / "clip.safetensors"


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """The tiny preset (seed 0) exported through the command line."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    assert export_main(["--preset", "tiny", "--out", str(out), "--seed", "0"]) == 0
    return out


def _tiny(runtime="torch", folder=None, **overrides):
    torch.manual_seed(0)
    extra = {"runtime": runtime, "onnx.dir": str(folder) if folder else None}
    return build_segmenter("tiny", device="cpu", overrides={"precision": "fp32", **TINY, **extra, **overrides})


def _scenes(n, size=128, seed=500):
    return [generate_scene(seed + i, size=size).image for i in range(n)]


def _assert_same_results(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a.segment_map == b.segment_map).mean() >= 0.995
        assert (a.semantic_map == b.semantic_map).mean() >= 0.995
        assert [s.class_name for s in a.segments] == [s.class_name for s in b.segments]


def test_export_writes_checked_models_with_dynamic_axes(tiny_export):
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["weights_sha256"] is None
    assert manifest["sizes"] == {"image": [128, 128], "proposals": [128, 128], "clip": [128, 128],
                                 "masks": [32, 32]}
    for entry in manifest["files"].values():
        onnx.checker.check_model(str(tiny_export / entry["path"]))
        assert (tiny_export / entry["path"]).stat().st_size == entry["bytes"]
    for check in manifest["checks"]["classifier"].values():
        assert check["output0"]["max_abs_diff"] <= 1e-3 * check["output0"]["scale"]
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(str(tiny_export / "classifier.onnx"), load_external_data=False).graph.input}
    assert inputs["images"] == ["batch", 3, 128, 128]
    assert inputs["masks"] == ["batch", "queries", 32, 32]
    assert inputs["text_embeddings"][0] == "synonyms" and inputs["class_table"][0] == "classes"
    assert not list(tiny_export.parent.glob(".tiny.partial-*"))   # the staging folder is gone


def test_onnxruntime_serves_the_same_logits_and_segments_as_torch(tiny_export):
    torch_seg, ort_seg = _tiny(), _tiny("onnxruntime", tiny_export)
    vocab = "car; road [stuff]; person,pedestrian; sky [stuff]; tree; dog,puppy"
    batch = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in _scenes(3)])
    props_t, logits_t = torch_seg.logits(batch, vocab)
    props_o, logits_o = ort_seg.logits(batch, vocab)
    assert torch.allclose(props_o.masks, props_t.masks, atol=1e-3)
    assert logits_o.shape == logits_t.shape == (3, 20, 6)
    assert (logits_o - logits_t).abs().max() <= 1e-3
    # the same pre- and post-processing: whole calls agree, and segments exist to compare
    images = _scenes(2, seed=900)
    ours, theirs = ort_seg(images, vocab), torch_seg(images, vocab)
    assert sum(len(r.segments) for r in theirs) > 0
    _assert_same_results(ours, theirs)
    # a new vocabulary (another number of classes) needs no re-export
    one = ort_seg(images[0], "grass [stuff]; circle")
    assert set(np.unique(one.semantic_map)) <= {0, 1}


@pytest.mark.skipif(not SHAPES_WEIGHTS.is_file(), reason="the ShapesWorld weights are not in weights/shapes")
def test_shapes_preset_through_onnxruntime_matches_torch(tmp_path):
    torch_seg = build_segmenter("shapes", device="cpu", overrides={"precision": "fp32"})
    export_segmenter(torch_seg, tmp_path / "shapes", log=lambda m: None)
    ort_seg = build_segmenter("shapes", device="cpu", overrides={"runtime": "onnxruntime",
                                                                 "onnx.dir": str(tmp_path / "shapes")})
    vocab = load_classes().vocabulary_text()
    images = [generate_scene(777000 + i, size=192).image for i in range(4)]
    theirs, ours = torch_seg(images, vocab), ort_seg(images, vocab)
    assert sum(len(r.segments) for r in theirs) >= 4
    _assert_same_results(ours, theirs)
    batch = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
    assert (ort_seg.logits(batch, vocab)[1] - torch_seg.logits(batch, vocab)[1]).abs().max() <= 1e-3


def test_an_export_that_differs_from_torch_is_refused_and_not_written(tmp_path):
    with pytest.raises(ExportMismatchError, match="differs from PyTorch"):
        export_segmenter(_tiny(), tmp_path / "bad", tolerance=1e-12, log=lambda m: None)
    assert not (tmp_path / "bad").exists() and not list(tmp_path.iterdir())


def test_an_image_size_the_export_was_not_made_for_gets_a_clear_error(tiny_export):
    ort_seg = _tiny("onnxruntime", tiny_export)
    with pytest.raises(ValueError, match=r"serves 128x128 images.*--image-size"):
        ort_seg(np.zeros((96, 128, 3), np.uint8), "car; road [stuff]")


def test_an_image_size_of_broken_patches_is_refused_at_export(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of its 16-px patches"):
        export_segmenter(_tiny(), tmp_path / "odd", image_size=(100, 128), log=lambda m: None)


def test_serving_checks_the_export_against_the_preset_and_its_delta(tiny_export, tmp_path):
    from ovseg_core.weights import save_delta
    seg = _tiny()
    delta = tmp_path / "delta.safetensors"
    save_delta(seg.classifier, seg.trainable, str(delta), "tiny")
    with pytest.raises(ValueError, match="exported with no delta.*re-export"):
        _tiny("onnxruntime", tiny_export, weights=str(delta))
    with pytest.raises(ValueError, match=r"other model settings.*classifier.sma_layers"):
        _tiny("onnxruntime", tiny_export, **{"classifier.sma_layers": []})
    with pytest.raises(ValueError, match="needs onnx.dir"):
        _tiny("onnxruntime")
    with pytest.raises(FileNotFoundError, match="not an ovseg export"):
        _tiny("onnxruntime", tmp_path)


def test_a_delta_for_another_preset_is_refused_by_export(tmp_path, capsys):
    from ovseg_core.weights import save_delta
    seg = _tiny()
    delta = tmp_path / "delta.safetensors"
    save_delta(seg.classifier, seg.trainable, str(delta), "tiny")
    code = export_main(["--preset", "tiny", "--set", "classifier.trainable=frozen", "--weights", str(delta),
                        "--out", str(tmp_path / "out")])
    assert code == 2 and "do not match preset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_onnxruntime_gets_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'ovseg\[export\]'"):
        _tiny("onnxruntime", tmp_path)


def test_an_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="runtime is 'tensorflow'; choose one of torch, onnxruntime"):
        _tiny("tensorflow")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engines need CUDA (never run on CPU-only CI)")
def test_tensorrt_engines_build_from_the_export(tiny_export, tmp_path):
    pytest.importorskip("tensorrt", reason="the tensorrt package is not installed")
    import shutil

    from ovseg_core.export.tensorrt import build_engines
    folder = tmp_path / "trt"
    shutil.copytree(tiny_export, folder)
    manifest = build_engines(folder, log=lambda m: None)
    assert set(manifest["tensorrt"]["engines"]) == {"proposals", "classifier", "text"}
    assert all((folder / e["path"]).stat().st_size > 0 for e in manifest["tensorrt"]["engines"].values())
