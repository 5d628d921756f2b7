"""``ovseg segment`` end to end on assets/street.png with the tiny preset (random weights).

The tiny preset's labels are noise, so these tests check the plumbing: every output is
written, the panoptic PNG and JSON agree with each other and with the vocabulary, the
printed table lists the segments, and bad input gives the documented exit codes.
``--overlap-threshold 0.0`` keeps every query that wins pixels inside its own mask, so
random masks still yield segments (0.8, the default, drops them all).
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ovseg_core.cli import main
from ovseg_core.config import preset_names
from ovseg_core.panoptic_io import read_panoptic_png

VOCAB = "car; road [stuff]; person, pedestrian; building [stuff]; sky [stuff]"
NAMES = ["car", "road", "person", "building", "sky"]
IS_THING = [True, False, True, False, False]
SEGMENT_ARGS = ["--preset", "tiny", "--overlap-threshold", "0.0", "--device", "cpu"]
ROW = re.compile(r"^\s+(\d+)\s+(\S.*?)\s+(\d+\.\d+)\s+(True|False)\s+(\d+)\s+\(", re.M)


def check_outputs(out: Path, stems, sizes):
    """The outputs of one run for images ``stems`` of (h, w) ``sizes``; returns the JSON."""
    data = json.loads((out / "panoptic.json").read_text())
    assert [c["name"] for c in data["categories"]] == NAMES
    assert [c["id"] for c in data["categories"]] == list(range(1, len(NAMES) + 1))
    assert [bool(c["isthing"]) for c in data["categories"]] == IS_THING
    assert [i["file_name"] for i in data["images"]] == [f"{s}.png" for s in stems]
    assert len({i["id"] for i in data["images"]}) == len(stems)
    by_image = {a["image_id"]: a for a in data["annotations"]}
    assert len(data["annotations"]) == len(stems)
    for info, stem, (h, w) in zip(data["images"], stems, sizes):
        assert (info["height"], info["width"]) == (h, w)
        overlay = cv2.imread(str(out / f"{stem}_overlay.png"))
        # drawn upscaled, the longer side at --overlay-size (default 512), the aspect kept
        assert overlay is not None and overlay.shape == (round(h * 512 / max(h, w)), round(w * 512 / max(h, w)), 3)
        ann = by_image[info["id"]]
        assert ann["file_name"] == info["file_name"]
        ids = read_panoptic_png(str(out / "panoptic" / f"{stem}.png"))
        assert ids.shape == (h, w)
        in_png = set(np.unique(ids).tolist()) - {0}
        in_json = [s["id"] for s in ann["segments_info"]]
        assert len(in_json) == len(set(in_json)), "segment ids must be unique per image"
        assert in_png == set(in_json)
        for s in ann["segments_info"]:
            assert 1 <= s["category_id"] <= len(NAMES)
            assert s["area"] == int((ids == s["id"]).sum()) > 0
            x, y, bw, bh = s["bbox"]
            ys, xs = np.nonzero(ids == s["id"])
            assert (x, y, bw, bh) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    return data


def check_table(stdout: str, name: str, annotation: dict):
    """The printed table of one image lists exactly its segments (id, class, area)."""
    block = stdout.split(f"{name}: ", 1)
    assert len(block) == 2, f"no table for {name} in:\n{stdout}"
    count = int(block[1].split(" segment", 1)[0])
    assert count == len(annotation["segments_info"])
    rows = ROW.findall(block[1])[:count]
    assert [(int(r[0]), r[1], int(r[4])) for r in rows] == [
        (s["id"], NAMES[s["category_id"] - 1], s["area"]) for s in annotation["segments_info"]]


def test_segment_writes_consistent_outputs(tmp_path, street_path, capsys):
    torch.manual_seed(0)  # the tiny preset's random weights
    out = tmp_path / "out"
    rc = main(["segment", str(street_path), "--vocab", VOCAB, "--out", str(out), *SEGMENT_ARGS])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = check_outputs(out, ["street"], [(240, 320)])
    segments = data["annotations"][0]["segments_info"]
    assert segments, "overlap threshold 0.0 must keep at least one segment"
    check_table(captured.out, "street.png", data["annotations"][0])
    assert "wrote 1 result(s)" in captured.err


def test_console_script(tmp_path, street_path):
    """The installed ``ovseg`` entry point (falls back to ``python -m ovseg_core.cli``)."""
    script = Path(sys.executable).with_name("ovseg")
    if not script.exists():
        script = shutil.which("ovseg")
    cmd = [str(script)] if script else [sys.executable, "-m", "ovseg_core.cli"]
    out = tmp_path / "out"
    proc = subprocess.run([*cmd, "segment", str(street_path), "--vocab", VOCAB, "--out", str(out),
                           *SEGMENT_ARGS], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    data = check_outputs(out, ["street"], [(240, 320)])
    assert data["annotations"][0]["segments_info"], "overlap threshold 0.0 must keep a segment"
    check_table(proc.stdout, "street.png", data["annotations"][0])


def test_corrupt_image_is_skipped_and_the_rest_written(tmp_path, street_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not image data" * 10)
    small = tmp_path / "small.png"
    image = cv2.imread(str(street_path))
    cv2.imwrite(str(small), cv2.resize(image, (160, 120)))
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    torch.manual_seed(0)
    rc = main(["segment", str(street_path), str(broken), str(missing), str(small), "--vocab", VOCAB,
               "--out", str(out), "--batch-size", "2", "--quiet", *SEGMENT_ARGS])
    captured = capsys.readouterr()
    assert rc == 1
    assert str(broken) in captured.err and str(missing) in captured.err
    assert "2 image(s) skipped" in captured.err
    assert "segment(s)" not in captured.out, "--quiet prints no tables"
    check_outputs(out, ["street", "small"], [(240, 320), (120, 160)])
    assert not (out / "panoptic" / "broken.png").exists()
    assert not (out / "broken_overlay.png").exists()


@pytest.mark.parametrize("vocab, words", [("", "empty"), ("  ;  ; ", "empty"),
                                          ("car; road [stuff]; Car", "duplicate")])
def test_bad_vocab_exits_2(tmp_path, street_path, capsys, vocab, words):
    out = tmp_path / "out"
    rc = main(["segment", str(street_path), "--vocab", vocab, "--out", str(out), *SEGMENT_ARGS])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--vocab" in err and words in err
    assert not out.exists(), "nothing is written for a bad vocabulary"


def test_unknown_preset_exits_2_listing_presets(tmp_path, street_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(street_path), "--vocab", "car", "--out", str(out), "--preset", "nosuchpreset"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "nosuchpreset" in err
    assert preset_names() and all(name in err for name in preset_names())
    assert not out.exists()


def test_missing_weights_exits_2_naming_the_file(tmp_path, street_path, capsys):
    weights = tmp_path / "nope.safetensors"
    rc = main(["segment", str(street_path), "--vocab", "car", "--out", str(tmp_path / "out"),
               "--weights", str(weights), *SEGMENT_ARGS])
    assert rc == 2
    assert str(weights) in capsys.readouterr().err


def test_bad_device_exits_2(tmp_path, street_path, capsys):
    rc = main(["segment", str(street_path), "--vocab", "car", "--out", str(tmp_path / "out"),
               "--preset", "tiny", "--device", "gpu"])
    assert rc == 2
    assert "gpu" in capsys.readouterr().err
