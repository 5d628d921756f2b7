"""Fuzz (hypothesis) of ovseg evaluate (ovseg_core.evaluation.runner) on a Mapillary fixture: random corruptions
of its JSON, config, PNGs and images give a correct run (exit 0), a run that skips the
bad images and lists them in results.json (exit 1), or a refusal naming the file
(exit 2); never a traceback, never a number out of range or a non-JSON results file.
The model is built once (oracle masks and classes: the fuzz is about the files)."""
import contextlib
import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dataset_fixtures import write_mapillary
from fuzz_corruptions import FUZZ, assert_metrics_in_range, corrupt_some, fresh_copy, strict_json
from ovseg_core.evaluation import runner as evaluate


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    root = tmp_path_factory.mktemp("mv_valid")
    write_mapillary(root, "1.2", num_images=2, size=(12, 20))
    return root


@pytest.fixture(scope="module")
def cached_build():
    from ovseg_core.build import build_segmenter
    torch.manual_seed(0)
    segmenter = build_segmenter("tiny", device="cpu")
    return lambda *args, **kwargs: segmenter


@FUZZ
@given(data=st.data())
def test_evaluate_never_tracebacks(valid, cached_build, tmp_path_factory, monkeypatch, data):
    monkeypatch.setattr("ovseg_core.build.build_segmenter", cached_build)
    case = fresh_copy(valid, tmp_path_factory.getbasetemp() / "mv_case")
    split = case / "validation"
    files = [case / "config.json", split / "panoptic" / "panoptic_2018.json"] + \
        sorted((split / "panoptic").glob("*.png")) + sorted((split / "labels").glob("*.png")) + \
        sorted((split / "images").glob("*.jpg"))
    done = corrupt_some(data, files)
    out = tmp_path_factory.getbasetemp() / "mv_out"
    if out.exists():
        import shutil
        shutil.rmtree(out)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = evaluate.main(["--dataset", "mapillary_vistas_v1.2", "--root", str(case), "--masks", "oracle",
                              "--classes", "oracle", "--out", str(out), "--min-size", "0", "--overlays", "0",
                              "--preset", "tiny", "--device", "cpu"])
    stderr = err.getvalue()
    assert "Traceback" not in stderr, done
    assert code in (0, 1, 2), done
    if code == 2:
        first = stderr.strip().splitlines()[0]
        assert first.startswith("evaluate: ") and str(case) in first, (done, stderr)
        assert not (out / "results.json").exists()
        return
    results = strict_json(out / "results.json")
    assert_metrics_in_range(results)
    assert (code == 1) == (results["num_skipped"] > 0), done
    assert results["num_images"] + results["num_skipped"] == 2
    for skipped in results["skipped_images"]:
        assert "\n" not in skipped["reason"] and skipped["reason"].startswith(str(case)), skipped
