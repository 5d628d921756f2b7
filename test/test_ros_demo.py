"""`make demo` end to end, shortened: the node, two cameras, a vocabulary change."""
import json
import subprocess
import sys
from pathlib import Path

import cv2

from ros_harness import require_ros

require_ros()

from rosbags.highlevel import AnyReader  # noqa: E402

from ovseg_ros.harness import REPO  # noqa: E402
from ovseg_ros.interfaces import rosbags_typestore  # noqa: E402


def test_demo_writes_overlays_recording_and_latency(tmp_path: Path):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "ovseg_ros.demo", "--out", str(out), "--frames", "4",
                          "--rate", "8"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert len(list((out / "overlays").glob("front_*.png"))) == 4
    assert len(list((out / "overlays").glob("rear_*.png"))) == 4
    # the node draws the 128 px frames upscaled (overlay_min_size 512), so labels are legible
    assert cv2.imread(str(out / "overlays" / "front_001.png")).shape == (512, 512, 3)
    assert (out / "summary.png").stat().st_size > 0
    latency = json.loads((out / "latency.json").read_text())
    assert {c["results"] for c in latency["cameras"].values()} == {4}
    versions, classes = {}, {}
    with AnyReader([out / "outputs"], default_typestore=rosbags_typestore()) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype == "ovseg/msg/PanopticResult":
                stamp = msg.header.stamp.sec
                versions[(conn.topic, stamp)] = msg.vocabulary_version
                classes[msg.vocabulary_version] = len(msg.class_names)
    # frames 1-2 use the first vocabulary (44 classes), frames 3-4 the second (11)
    for topic in ("/ovseg/front/panoptic", "/ovseg/rear/panoptic"):
        assert [versions[(topic, s)] for s in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert classes == {1: 44, 2: 11}
