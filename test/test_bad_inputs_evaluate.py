"""Issue 15, section 2: ovseg evaluate (ovseg_core.evaluation.runner) checks every file before building the model,
skips an image whose files are bad (naming the file, saying so in results.json and
results.md, exit 1) and refuses a dataset JSON that is not COCO with exit 2."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_fixtures import write_mapillary
from ovseg_core.panoptic_io import id_to_rgb, read_panoptic_png
from ovseg_core.evaluation import runner as evaluate


def run(root, out, capsys):
    code = evaluate.main(["--dataset", "mapillary_vistas_v1.2", "--root", str(root), "--masks", "oracle",
                          "--classes", "oracle", "--out", str(out), "--min-size", "0", "--overlays", "0",
                          "--preset", "tiny", "--device", "cpu"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def widen(png: Path, extra: int = 3):
    """The same ids, `extra` columns wider (the last column repeated), as RGB or as labels."""
    im = np.asarray(Image.open(png))
    wide = np.concatenate([im] + [im[:, -1:]] * extra, axis=1)
    Image.fromarray(wide).save(png)


@pytest.mark.parametrize("fault", ["missing image", "wider panoptic PNG", "wider labels PNG", "truncated PNG",
                                   "area disagrees"])
def test_a_bad_image_is_skipped_named_and_reported(tmp_path, capsys, fault):
    root = tmp_path / "mv"
    write_mapillary(root, "1.2", num_images=3)
    split = root / "validation"
    culprit = {"missing image": split / "images" / "img001.jpg",
               "wider panoptic PNG": split / "panoptic" / "img001.png",
               "wider labels PNG": split / "labels" / "img001.png",
               "truncated PNG": split / "panoptic" / "img001.png",
               "area disagrees": split / "panoptic" / "img001.png"}[fault]
    if fault == "missing image":
        culprit.unlink()
    elif fault.startswith("wider"):
        widen(culprit)
    elif fault == "truncated PNG":     # the header still reads: found only when decoded
        data = culprit.read_bytes()
        culprit.write_bytes(data[:len(data) // 2])
    else:
        ids = read_panoptic_png(str(culprit))
        ids[0, :5] = ids[-1, -1]       # 5 pixels change segment; the JSON areas do not
        Image.fromarray(id_to_rgb(ids)).save(culprit)
    out = tmp_path / "out"
    code, err = run(root, out, capsys)
    assert code == 1
    r = json.loads((out / "results.json").read_text())
    assert r["num_images"] == 2 and r["num_skipped"] == 1
    (skipped,) = r["skipped_images"]
    assert skipped["image_id"] == "img001"
    reason = skipped["reason"]
    assert reason.startswith(f"{culprit}: ") and reason.count("image img001") == 1   # the id once
    assert "\n" not in reason and reason in err and reason in (out / "results.md").read_text()
    expected = {"missing image": "does not exist", "wider panoptic PNG": "is 43x24 but the image",
                "wider labels PNG": "is 43x24 but the image", "truncated PNG": "not a readable image",
                "area disagrees": "in the panoptic JSON"}[fault]
    assert expected in reason
    # the two good images still score perfectly: nothing of the bad one leaks in
    assert r["panoptic"]["All"]["pq"] == 1.0 and r["semantic"]["mIoU"] == 1.0
    for group in ("All", "Things", "Stuff"):
        assert 0 <= r["panoptic"][group]["pq"] <= 1


def test_a_dataset_json_that_is_not_coco_exits_2(tmp_path, capsys):
    root = tmp_path / "mv"
    write_mapillary(root, "1.2", num_images=1)
    path = root / "validation" / "panoptic" / "panoptic_2018.json"
    path.write_text(json.dumps([{"image_id": 1}]))
    code, err = run(root, tmp_path / "out", capsys)
    assert code == 2
    assert err.strip() == f"evaluate: {path}: the mapillary_vistas_v1.2 panoptic JSON is a list, not an object " \
                          f"with annotations and categories; give a COCO-panoptic JSON"
    assert not (tmp_path / "out").exists()
