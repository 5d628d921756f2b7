"""ovseg evaluate (ovseg_core.evaluation.runner) on fixture datasets: oracle masks + oracle classifier score a
perfect PQ / mIoU, every output is written, and two torchrun processes give the numbers
of one."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_fixtures import write_coco, write_mapillary
from ovseg_core.evaluation import runner as evaluate

REPO = Path(__file__).resolve().parent.parent

COCO_NAMES = ["person", "car", "wall-other-merged", "sky-other-merged", "door-stuff"]
COCO_THING = [True, True, False, False, False]


def run(args):
    assert evaluate.main(args + ["--preset", "tiny", "--device", "cpu"]) == 0


def test_test_time_size_follows_detectron2():
    assert evaluate.test_size(480, 640, 800, 1333) == (800, 1067)
    assert evaluate.test_size(3000, 4000, 1024, 2560) == (1024, 1365)
    assert evaluate.test_size(1000, 4000, 1024, 2560) == (640, 2560)      # the longer side caps it
    assert evaluate.test_size(600, 400, 0, 0) == (600, 400)


@pytest.mark.parametrize("nested,min_size", [(False, "0"), (True, "48")])
def test_oracle_masks_and_classes_score_perfectly(tmp_path, nested, min_size):
    write_mapillary(tmp_path / "mv", "1.2", nested=nested, num_images=2)
    out = tmp_path / "out"
    # min-size 48 doubles the 24x40 images: results go back to the GT size for scoring
    run(["--dataset", "mapillary_vistas_v1.2", "--root", str(tmp_path / "mv"), "--masks", "oracle",
         "--classes", "oracle", "--out", str(out), "--min-size", min_size, "--max-size", "100"])
    r = json.loads((out / "results.json").read_text())
    for group in ("All", "Things", "Stuff"):
        assert r["panoptic"][group]["pq"] == 1.0 and r["panoptic"][group]["n"] > 0
    assert r["semantic"]["mIoU"] == 1.0 and r["num_images"] == 2
    table = (out / "results.md").read_text().splitlines()
    assert table[2].split("|")[6:8] == [" Mapillary PQ ", " Mapillary mIoU "]
    assert table[4].split("|")[6:8] == [" 100.0 ", " 100.0 "]
    rows = list(csv.DictReader(open(out / "per_class.csv")))
    assert len(rows) == 65 and rows[0]["class"] == "Label 0"
    assert {row["pq"] for row in rows if row["tp"]} == {"1.0"}
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["img000.png", "img001.png"]


def test_wrong_root_names_the_layout(tmp_path, capsys):
    assert evaluate.main(["--dataset", "mapillary_vistas_v1.2", "--root", str(tmp_path), "--preset", "tiny"]) == 2
    assert "Expected layout" in capsys.readouterr().err


def _numbers(path: Path) -> dict:
    r = json.loads(path.read_text())
    for key in ("images_per_second", "processes"):
        r.pop(key)
    return r


def test_two_torchrun_processes_equal_one(tmp_path):
    write_coco(tmp_path / "coco", COCO_NAMES, COCO_THING, num_images=5)
    common = ["--dataset", "coco_panoptic", "--root", str(tmp_path / "coco"), "--masks", "oracle",
              "--seen-classes", "coco", "--min-size", "0", "--overlays", "0"]
    run(common + ["--out", str(tmp_path / "one")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "training" / "evaluate.py"), *common, "--out", str(tmp_path / "two"), "--preset", "tiny",
         "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _numbers(tmp_path / "one" / "results.json"), _numbers(tmp_path / "two" / "results.json")
    assert json.loads((tmp_path / "two" / "results.json").read_text())["processes"] == 2
    assert one == two
    # the numbers are not trivial: GT masks were classified (some right or wrong), PQ counted them
    assert one["mask_classification"]["num_masks"] > 0
    assert sum(c["tp"] + c["fp"] + c["fn"] for c in one["panoptic"]["per_class"].values()) > 0


def test_seen_flags(tmp_path):
    from types import SimpleNamespace
    from ovseg_core.datasets import load_dataset
    write_coco(tmp_path / "coco", COCO_NAMES, COCO_THING, num_images=1)
    data = load_dataset("coco_panoptic", tmp_path / "coco")
    vocab, segmenter = data.vocabulary(), SimpleNamespace(seen_classes=frozenset({"Car"}))
    # COCO's own classes are all seen, by dataset name or by prompt name ("wall")
    assert evaluate.seen_flags("coco", segmenter, data, vocab) == [True] * 5
    assert evaluate.seen_flags("preset", segmenter, data, vocab) == [False, True, False, False, False]
    (tmp_path / "seen.txt").write_text("wall\nsky-other-merged, sky\n")
    assert evaluate.seen_flags(str(tmp_path / "seen.txt"), segmenter, data, vocab) == [False, False, True, True, False]
    assert evaluate.seen_flags("none", segmenter, data, vocab) is None
    assert evaluate.seen_flags("preset", SimpleNamespace(seen_classes=frozenset()), data, vocab) is None
    with pytest.raises(FileNotFoundError, match="one class name a line"):
        evaluate.seen_flags(str(tmp_path / "missing.txt"), segmenter, data, vocab)
