"""Fuzz (hypothesis) of ovseg-bag's ground truth: random corruptions of a valid GT
(JSON and PNGs) give an evaluation (exit 0, standard JSON, numbers in range) or a
refusal naming the file before anything is segmented (exit 2); never a traceback.
The model is built once."""
import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from fuzz_corruptions import FUZZ, assert_metrics_in_range, assert_one_line_naming, corrupt_some, fresh_copy, strict_json
from ovseg_core.panoptic_io import id_to_rgb
from ovseg_ros import bag
from test_bag import CAM, H, T0, VOCAB_1, W, write_bag


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A one-frame bag and a valid GT: the frame's image (two segments) and one more."""
    folder = tmp_path_factory.mktemp("bag_valid")
    src = write_bag(folder / "in", frames=1)
    gt = folder / "gt"
    (gt / "panoptic").mkdir(parents=True)
    ids = np.where(np.arange(W)[None, :] < W // 3, 1, 2).repeat(H, 0)
    annotations = []
    for i, stamp in enumerate([T0 - 5_000_000, T0 + 10 ** 9]):     # the frame's header stamp, and none
        Image.fromarray(id_to_rgb(ids)).save(gt / "panoptic" / f"{stamp}.png")
        annotations.append({"image_id": i, "file_name": f"{stamp}.png", "segments_info": [
            {"id": 1, "category_id": 1, "area": int((ids == 1).sum()), "iscrowd": 0},
            {"id": 2, "category_id": 2, "area": int((ids == 2).sum()), "iscrowd": 0}]})
    cats = [{"id": 1, "name": "road", "isthing": 0}, {"id": 2, "name": "car", "isthing": 1}]
    (gt / "panoptic.json").write_text(json.dumps({"annotations": annotations, "categories": cats}))
    return src, gt


@pytest.fixture(scope="module")
def cached_model(build_tiny):
    segmenter = build_tiny(0, overrides={"inference.overlap_threshold": 0.0})
    return lambda args: (segmenter, {})


@FUZZ
@given(data=st.data())
def test_bag_ground_truth_never_tracebacks(inputs, cached_model, tmp_path_factory, monkeypatch, data):
    monkeypatch.setattr("ovseg_core.cli.model_from_args", cached_model)
    src, valid_gt = inputs
    base = tmp_path_factory.getbasetemp()
    gt = fresh_copy(valid_gt, base / "bag_gt_case")
    out, report = base / "bag_out", base / "bag_eval" / "eval.json"
    for path in (out, report.parent):
        if path.exists():
            shutil.rmtree(path)
    done = corrupt_some(data, [gt / "panoptic.json"] + sorted((gt / "panoptic").glob("*.png")))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = bag.main([str(src), str(out), "--image-topics", CAM, "--vocab", VOCAB_1, "--gt-dir", str(gt),
                         "--eval-json", str(report), "--quiet"])
    assert code in (0, 2), (done, err.getvalue())
    if code == 2:
        assert_one_line_naming(err.getvalue(), "ovseg-bag: ", gt)
        assert not out.exists() and not report.exists(), done
        return
    result = strict_json(report)
    assert_metrics_in_range(result)
    assert result["frames"] in (0, 1)
