"""Issue 15, section 2: every bad input to the PQ CLI, the semantic metrics and the
dataset readers ends with one line that names the file (and the image id once) and
says what to change; exit status 2; nothing written; no number outside [0, 100]."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg_core.datasets import load_dataset
from ovseg_core.evaluation import reference
from ovseg_core.evaluation.panoptic import main as pq_main
from ovseg_core.evaluation.semantic import SemanticStat
from ovseg_core.panoptic_io import InputError, id_to_rgb
from dataset_fixtures import write_coco

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pq_files(tmp_path):
    """A valid 2-image COCO-panoptic GT and prediction; returns (argv builder, paths)."""
    gt_json, gt_dir, pred_json, pred_dir, _ = reference.write_dataset(tmp_path, 2, 16, 24, num_categories=3)
    paths = {"gt_json": Path(gt_json), "gt_dir": Path(gt_dir), "pred_json": Path(pred_json),
             "pred_dir": Path(pred_dir), "out": tmp_path / "pq.json"}

    def argv(**over):
        p = {**paths, **over}
        return ["--gt-json", str(p["gt_json"]), "--gt-dir", str(p["gt_dir"]), "--pred-json", str(p["pred_json"]),
                "--pred-dir", str(p["pred_dir"]), "--json-out", str(p["out"]), "--workers", "1"]
    return argv, paths


def refused(argv, capsys, *needles):
    """The CLI exits 2 with one stderr line containing every needle, and writes nothing."""
    assert pq_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    out = Path(argv[argv.index("--json-out") + 1])
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
    return err


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def first_segment(data):
    """The first GT segment of the first image that has pixels."""
    return next(s for s in data["annotations"][0]["segments_info"] if s.get("area", 1) > 0)


def test_valid_files_pass(pq_files):
    argv, paths = pq_files
    assert pq_main(argv()) == 0
    result = json.loads(paths["out"].read_text())
    assert 0 < result["All"]["pq"] <= 1


@pytest.mark.parametrize("area", [0, 1, 10 ** 6])
def test_gt_area_disagreeing_with_its_png_is_refused(pq_files, capsys, area):
    argv, paths = pq_files
    sid = first_segment(json.loads(paths["gt_json"].read_text()))["id"]
    edit_json(paths["gt_json"], lambda d: first_segment(d).update(area=area))
    err = refused(argv(), capsys, paths["gt_dir"] / "0.png", f"segment {sid} has area {area}", "pixel count")
    assert err.count("image 0") == 1


def test_segment_id_beyond_png_range(pq_files, capsys):
    argv, paths = pq_files
    edit_json(paths["gt_json"], lambda d: first_segment(d).update(id=2 ** 24))
    refused(argv(), capsys, paths["gt_json"], "image 0", "16777216", "[1, 2^24)")
    edit_json(paths["pred_json"], lambda d: first_segment(d).update(id=2 ** 30))
    refused(argv(gt_json=paths["pred_json"]), capsys, paths["pred_json"], str(2 ** 30))


@pytest.mark.parametrize("change,needle", [
    (lambda d: d.clear() or d.update(x=1), "no list 'annotations'"),
    (lambda d: d.pop("categories"), "no list 'categories'"),
    (lambda d: d.update(annotations={"a": 1}), "'annotations' is a dict"),
    (lambda d: first_segment(d).pop("category_id"), "has no integer category_id"),
    (lambda d: first_segment(d).update(category_id="car"), "has no integer category_id"),
    (lambda d: d["annotations"][0].pop("file_name"), "has no file_name"),
    (lambda d: d["categories"][0].pop("name"), "categories[0] needs an integer id and a string name"),
    (lambda d: first_segment(d).update(iscrowd=2), "iscrowd 2"),
])
def test_gt_json_that_is_not_coco_panoptic(pq_files, capsys, change, needle):
    argv, paths = pq_files
    edit_json(paths["gt_json"], change)
    refused(argv(), capsys, paths["gt_json"], needle)


def test_json_that_is_a_list_invalid_or_a_png(pq_files, capsys, tmp_path):
    argv, paths = pq_files
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    refused(argv(gt_json=listed), capsys, listed, "is a list")
    broken = tmp_path / "broken.json"
    broken.write_text('{"annotations": [')
    refused(argv(pred_json=broken), capsys, broken, "not valid JSON")
    png = paths["gt_dir"] / "0.png"
    refused(argv(gt_json=png), capsys, png, "not valid JSON")
    refused(argv(gt_json=tmp_path), capsys, tmp_path, "is a folder")
    refused(argv(gt_json=tmp_path / "none.json"), capsys, tmp_path / "none.json", "does not exist")


def test_unknown_category_names_the_json_and_the_image_once(pq_files, capsys):
    argv, paths = pq_files
    edit_json(paths["pred_json"], lambda d: first_segment(d).update(category_id=999))
    err = refused(argv(), capsys, paths["pred_json"], "category_id 999", "use a listed id")
    assert err.count("image 0") == 1


@pytest.mark.parametrize("corrupt", ["truncated", "text", "folder", "missing", "gray", "size"])
def test_bad_pngs(pq_files, capsys, corrupt):
    argv, paths = pq_files
    png = paths["pred_dir"] / "1.png"
    if corrupt == "truncated":
        png.write_bytes(png.read_bytes()[:40])
    elif corrupt == "text":
        png.write_text("not a png")
    elif corrupt == "folder":
        png.unlink()
        png.mkdir()
    elif corrupt == "missing":
        png.unlink()
    elif corrupt == "gray":
        Image.fromarray(np.zeros((16, 24), np.uint8)).save(png)
    else:
        Image.fromarray(id_to_rgb(np.zeros((16, 27), np.int64))).save(png)
    err = refused(argv(), capsys, png)
    assert err.count("image 1") == 1
    assert {"truncated": "not a readable image", "text": "not a readable image", "folder": "is a folder",
            "missing": "does not exist", "gray": "PIL mode L", "size": "write predictions at the GT size"}[corrupt] in err


def test_json_out_folder_and_no_half_written_file(pq_files, capsys, tmp_path):
    argv, paths = pq_files
    with pytest.raises(SystemExit) as exit_:
        pq_main(argv(out=tmp_path))
    assert exit_.value.code == 2
    assert "is a folder" in capsys.readouterr().err
    # a failing run leaves an existing results file as it was
    paths["out"].write_text("{}")
    edit_json(paths["gt_json"], lambda d: first_segment(d).update(area=0))
    assert pq_main(argv()) == 2
    assert paths["out"].read_text() == "{}"


def test_python_m_prints_no_runpy_warning_and_no_traceback(pq_files, tmp_path):
    argv, paths = pq_files
    edit_json(paths["gt_json"], lambda d: d.pop("annotations"))
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-m", "ovseg_core.evaluation.panoptic", *argv()], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 2
    assert "RuntimeWarning" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {paths['gt_json']}: the GT JSON has no list 'annotations'; "
                                                f"give a COCO-panoptic JSON"]


def test_importing_the_metrics_and_readers_loads_no_torch():
    code = ("import sys, ovseg_core.evaluation as e, ovseg_core.datasets; "
            "e.PQStat, e.SemanticStat, e.MaskAccuracy, e.pq_compute; "
            "import ovseg_core.evaluation.panoptic; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


# ---------------------------------------------------------------- semantic metrics

def test_harmonic_mean_is_zero_when_one_side_is_zero():
    stat = SemanticStat(2)
    stat.update(np.array([[0, 0]]), np.array([[0, 1]]))       # class 1 (unseen) never right
    r = stat.summary(["a", "b"], seen=[True, False])
    assert r["mIoU_unseen"] == 0.0 and r["mIoU_seen"] == 0.5 and r["hIoU"] == 0.0
    r = SemanticStat(2).update(np.array([[0]]), np.array([[0]])).summary(["a", "b"], seen=[True, False])
    assert r["mIoU_unseen"] is None and r["hIoU"] is None     # no unseen class in the GT: undefined
    r = SemanticStat(2).update(np.array([[0, 1]]), np.array([[0, 1]])).summary(["a", "b"], seen=[True, False])
    assert r["hIoU"] == 1.0


# ---------------------------------------------------------------- dataset readers

COCO_NAMES = ["person", "car", "wall-other-merged", "sky-other-merged", "door-stuff"]
COCO_THING = [True, True, False, False, False]


@pytest.mark.parametrize("content,needle", [
    ("[1, 2, 3]", "is a list"), ('{"images": []}', "no list 'annotations'"), ("{", "not valid JSON"),
    ('{"annotations": [], "categories": 5}', "'categories' is a int")])
def test_reader_refuses_a_json_that_is_not_coco(tmp_path, content, needle):
    write_coco(tmp_path, COCO_NAMES, COCO_THING, num_images=1)
    path = tmp_path / "annotations" / "panoptic_val2017.json"
    path.write_text(content)
    with pytest.raises(InputError, match=needle) as err:
        load_dataset("coco_panoptic", tmp_path)
    assert str(err.value).startswith(f"{path}: ")


def test_reader_names_a_corrupt_png_and_a_wrong_area(tmp_path):
    write_coco(tmp_path, COCO_NAMES, COCO_THING, num_images=2)
    data = load_dataset("coco_panoptic", tmp_path)
    png = data.samples[1].panoptic_path
    png.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match="not a readable image") as err:
        data.load_panoptic(1)
    assert str(err.value).startswith(f"{png}: ") and str(err.value).count("image 101") == 1
    with pytest.raises(InputError, match="not a readable image"):
        data.check(1)
    path = tmp_path / "annotations" / "panoptic_val2017.json"
    edit_json(path, lambda d: first_segment(d).update(area=first_segment(d)["area"] + 1))
    data = load_dataset("coco_panoptic", tmp_path)
    with pytest.raises(InputError, match=r"pixels but area \d+ in the panoptic JSON") as err:
        data.load_panoptic(0)
    assert str(err.value).startswith(f"{data.samples[0].panoptic_path}: image 100:")


def test_reader_check_compares_image_and_ground_truth_sizes(tmp_path):
    write_coco(tmp_path, COCO_NAMES, COCO_THING, num_images=1, size=(20, 30))
    data = load_dataset("coco_panoptic", tmp_path)
    data.check(0)
    png = data.samples[0].panoptic_path
    Image.fromarray(id_to_rgb(np.zeros((20, 33), np.int64))).save(png)
    with pytest.raises(InputError, match=r"is 33x20 but the image .* is 30x20") as err:
        data.check(0)
    assert str(err.value).startswith(f"{png}: ")
    data.samples[0].image_path.unlink()
    with pytest.raises(InputError, match="does not exist"):
        data.check(0)


def test_metrics_never_leave_0_100():
    """A guard on the summaries: consistent inputs give numbers in [0, 1] (0-100 %)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        stat = SemanticStat(3).update(rng.integers(0, 3, (8, 8)), rng.integers(0, 3, (8, 8)))
        r = stat.summary(["a", "b", "c"], seen=[True, True, False])
        for key in ("mIoU", "fwIoU", "mACC", "pACC", "mIoU_seen", "mIoU_unseen", "hIoU"):
            assert r[key] is None or (math.isfinite(r[key]) and 0 <= r[key] <= 1)
