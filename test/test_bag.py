"""ovseg-bag: offline segmentation of recorded bags (rosbags; no ROS 2 installation)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from ovseg_core.panoptic_io import categories, panoptic_annotation, write_panoptic_json, write_panoptic_png
from ovseg_ros import bag
from ovseg_ros.convert import label_array
from ovseg_ros.interfaces import rosbags_typestore

CAM, CAM2, VOCAB_TEXT, CHATTER = "/cam/image_raw", "/cam2/image/compressed", "/ovseg/vocabulary_text", "/chatter"
T0 = 1_700_000_000_000_000_000
VOCAB_1, VOCAB_2 = "car; road [stuff]", "person; sky [stuff]; tree"
VOCAB_AT = T0 + 150_000_000            # record time of the vocabulary change inside the bag
H, W = 48, 64


def _header(types, ns: int, frame_id: str):
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id)


def write_bag(path: Path, storage: str = "sqlite3", frames: int = 3) -> Path:
    """Raw rgb8 frames on CAM, PNG frames on CAM2 (every other), a vocabulary change
    between CAM frames 1 and 2, and an unrelated topic. Header stamps differ from record times."""
    ts = rosbags_typestore()
    t = ts.types
    rng = np.random.default_rng(0)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        cam = w.add_connection(CAM, "sensor_msgs/msg/Image", typestore=ts)
        cam2 = w.add_connection(CAM2, "sensor_msgs/msg/CompressedImage", typestore=ts)
        vocab = w.add_connection(VOCAB_TEXT, "std_msgs/msg/String", typestore=ts)
        chatter = w.add_connection(CHATTER, "std_msgs/msg/String", typestore=ts)
        for i in range(frames):
            now = T0 + i * 100_000_000
            image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            msg = t["sensor_msgs/msg/Image"](header=_header(t, now - 5_000_000, "cam"), height=H, width=W,
                                             encoding="rgb8", is_bigendian=0, step=W * 3, data=image.ravel())
            w.write(cam, now, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            if i % 2 == 0:
                png = cv2.imencode(".png", image[:, ::-1])[1]
                msg = t["sensor_msgs/msg/CompressedImage"](header=_header(t, now + 1_000_000, "cam2"),
                                                           format="png", data=png.ravel())
                w.write(cam2, now + 2_000_000, ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
            w.write(chatter, now + 3_000_000, ts.serialize_cdr(t["std_msgs/msg/String"](data=f"hi {i}"),
                                                               "std_msgs/msg/String"))
            if now < VOCAB_AT < now + 100_000_000:
                w.write(vocab, VOCAB_AT, ts.serialize_cdr(t["std_msgs/msg/String"](data=VOCAB_2),
                                                          "std_msgs/msg/String"))
    return path


def read_all(path: Path):
    """[(topic, msgtype, record time, raw bytes)] in bag order, and the reader's connections."""
    with AnyReader([path]) as r:
        conns = {c.topic: c for c in r.connections}
        return [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in r.messages()], conns


def pan(topic: str) -> str:
    """Where the bag tool writes a camera's PanopticResults (the node's naming rule)."""
    return bag.result_topics([topic])[topic][0]


def sem(topic: str) -> str:
    return bag.result_topics([topic])[topic][1]


def decode(path: Path, topic: str):
    with AnyReader([path], default_typestore=rosbags_typestore()) as r:
        conns = [c for c in r.connections if c.topic == topic]
        return [(t, r.deserialize(raw, c.msgtype)) for c, t, raw in r.messages(connections=conns)]


def stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def segmenter(build_tiny):
    """Tiny preset, random weights; overlap threshold 0 so that it does produce segments."""
    return build_tiny(0, overrides={"inference.overlap_threshold": 0.0})


def run(src, dst, segmenter, **kwargs):
    kwargs.setdefault("vocabulary", VOCAB_1)
    kwargs.setdefault("batch_size", 2)
    return bag.process_bag(src, dst, segmenter, [CAM, CAM2], progress=False, **kwargs)


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def whole(request, tmp_path_factory, segmenter):
    """An input bag of each storage and the output of one uninterrupted run."""
    folder = tmp_path_factory.mktemp(request.param)
    src = write_bag(folder / "in", request.param)
    summary = run(src, folder / "out", segmenter)
    return request.param, src, folder / "out", summary


def test_one_result_per_frame_with_the_frames_stamps(whole):
    storage, src, out, summary = whole
    assert summary.frames == summary.computed == 5 and not summary.bad_frames
    assert not out.with_name("out.partial").exists()
    assert list(out.glob("*.mcap" if storage == "mcap" else "*.db3"))

    before, _ = read_all(src)
    after, conns = read_all(out)
    originals = [m for m in after if m[0] in {CAM, CAM2, VOCAB_TEXT, CHATTER}]
    assert originals == before                          # every input message, byte for byte, in order
    for topic in (CAM, CAM2):
        images = decode(src, topic)
        for output in (pan(topic), sem(topic)):
            results = decode(out, output)
            assert [t for t, _ in results] == [t for t, _ in images]       # record times
            assert [stamp(m) for _, m in results] == [stamp(m) for _, m in images]
            assert {m.header.frame_id for _, m in results} == {images[0][1].header.frame_id}
        for (t, result), (_, semantic) in zip(decode(out, pan(topic)), decode(out, sem(topic))):
            ids = label_array(result.id_image)
            assert ids.shape == label_array(semantic).shape == (H, W)
            assert sorted(s.id for s in result.segments) == sorted(set(np.unique(ids).tolist()) - {0})
            assert all(s.area == int((ids == s.id).sum()) for s in result.segments)
            expect = (1, ["car", "road"]) if t < VOCAB_AT else (2, ["person", "sky", "tree"])
            assert (result.vocabulary_version, list(result.class_names)) == expect
            assert label_array(semantic).max() < len(result.class_names)
    # results sit right after their image in the output
    order = [m[0] for m in after]
    for i, topic in enumerate(order):
        if topic in (CAM, CAM2):
            assert order[i + 1:i + 3] == [pan(topic), sem(topic)]
    vocabularies = decode(out, bag.VOCABULARY_TOPIC)
    assert [(m.version, [c.name for c in m.classes]) for _, m in vocabularies] == \
        [(1, ["car", "road"]), (2, ["person", "sky", "tree"])]
    assert vocabularies[1][0] == VOCAB_AT
    # ROS 2 tools need the definitions of our types in the bag
    assert "Segment[] segments" in conns[pan(CAM)].msgdef.data


def test_ros2_reads_our_messages(whole):
    """rclpy's generated classes (built from msg/ with colcon) decode what we wrote."""
    from ros_harness import require_ros

    require_ros()
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from ovseg.msg import PanopticResult, Vocabulary

    _, _, out, _ = whole
    messages, _ = read_all(out)
    ours = {bag.VOCABULARY_TOPIC: Vocabulary, pan(CAM): PanopticResult, sem(CAM): Image}
    decoded = {topic: [m for _, m in decode(out, topic)] for topic in ours}
    for topic, cls in ours.items():
        raws = [raw for t, _, _, raw in messages if t == topic]
        assert len(raws) == len(decoded[topic]) > 0
        for raw, ref in zip(raws, decoded[topic]):
            msg = deserialize_message(raw, cls)
            if cls is Vocabulary:
                assert (msg.version, [c.name for c in msg.classes]) == (ref.version, [c.name for c in ref.classes])
                continue
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (ref.header.stamp.sec, ref.header.stamp.nanosec)
            image, ref_image = (msg.id_image, ref.id_image) if cls is PanopticResult else (msg, ref)
            assert (image.width, image.height, image.encoding) == (ref_image.width, ref_image.height, ref_image.encoding)
            assert bytes(image.data) == ref_image.data.tobytes()
            if cls is PanopticResult:
                assert list(msg.class_names) == list(ref.class_names)
                assert msg.vocabulary_version == ref.vocabulary_version
                assert [(s.id, s.class_name, s.area, s.bbox.width) for s in msg.segments] == \
                    [(s.id, s.class_name, s.area, s.bbox.width) for s in ref.segments]


def test_results_equal_the_pipeline_in_memory(whole, segmenter):
    """The first batch of the run (CAM frame 0, CAM2 frame 0), segmented directly from the
    decoded messages as one batch, gives exactly the bag's results."""
    from ovseg_ros.convert import to_rgb

    _, src, out, _ = whole
    images = [decode(src, topic)[0][1] for topic in (CAM, CAM2)]
    direct = segmenter([to_rgb(m).copy() for m in images], VOCAB_1, vocabulary_version=1)
    results = [decode(out, pan(topic))[0][1] for topic in (CAM, CAM2)]
    assert any(r.segments for r in direct)
    for result, ref in zip(results, direct):
        assert np.array_equal(label_array(result.id_image), ref.segment_map)
        assert [(s.id, s.class_name, s.area, round(s.score, 5)) for s in result.segments] == \
            [(s.id, s.class_name, s.area, round(s.score, 5)) for s in ref.segments]


def test_without_vocab_the_bags_first_vocabulary_applies_from_the_start(tmp_path, segmenter):
    src = write_bag(tmp_path / "in", frames=2)          # its one vocabulary message comes after the frames
    summary = run(src, tmp_path / "out", segmenter, vocabulary=None)
    results = [m for topic in (CAM, CAM2) for _, m in decode(tmp_path / "out", pan(topic))]
    assert len(results) == summary.frames == 3
    assert {(m.vocabulary_version, tuple(m.class_names)) for m in results} == {(1, ("person", "sky", "tree"))}
    # the recorded message equals the vocabulary in use: not a change, no new version
    assert [m.version for _, m in decode(tmp_path / "out", bag.VOCABULARY_TOPIC)] == [1]


class Stop(Exception):
    pass


def stop_after(frames: int):
    def on_batch(committed: int):
        if committed >= frames:
            raise Stop
    return on_batch


def test_interrupted_run_resumes_to_the_uninterrupted_output(tmp_path, segmenter, whole):
    storage, src, uninterrupted, _ = whole
    out = tmp_path / "out"
    with pytest.raises(Stop):        # dies after the first batch, before the vocabulary change
        run(src, out, segmenter, on_batch=stop_after(2))
    assert not out.exists() and (tmp_path / "out.partial" / "results.sqlite").is_file()
    summary = run(src, out, segmenter)
    assert summary.frames == 5 and summary.computed == 3
    assert read_all(out)[0] == read_all(uninterrupted)[0]
    assert not (tmp_path / "out.partial").exists()


def test_resume_with_other_settings_is_refused_until_restart(tmp_path, segmenter):
    src = write_bag(tmp_path / "in", frames=1)
    out = tmp_path / "out"
    with pytest.raises(Stop):
        run(src, out, segmenter, batch_size=1, on_batch=stop_after(1))
    with pytest.raises(bag.BagError, match=r"batch_size.*--restart"):
        run(src, out, segmenter)
    summary = run(src, out, segmenter, restart=True)
    assert summary.computed == summary.frames == 2


def test_bad_inputs_are_named(tmp_path, segmenter):
    src = write_bag(tmp_path / "in", frames=1)
    with pytest.raises(bag.BagError, match=r"/nope.*image topics: /cam/image_raw, /cam2/image/compressed"):
        bag.process_bag(src, tmp_path / "o1", segmenter, ["/nope"], VOCAB_1, progress=False)
    with pytest.raises(bag.BagError, match="no vocabulary: give --vocab"):
        bag.process_bag(src, tmp_path / "o2", segmenter, [CAM], None, vocab_topics=[], progress=False)
    with pytest.raises(bag.BagError, match="not a bag"):
        bag.process_bag(tmp_path, tmp_path / "o3", segmenter, [CAM], VOCAB_1, progress=False)
    (tmp_path / "o4").mkdir()
    with pytest.raises(bag.BagError, match="exists"):
        bag.process_bag(src, tmp_path / "o4", segmenter, [CAM], VOCAB_1, progress=False)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_undecodable_frame_gets_an_empty_result(tmp_path, segmenter):
    ts = rosbags_typestore()
    t = ts.types
    src = tmp_path / "in"
    with Writer(src, version=9) as w:
        c = w.add_connection(CAM2, "sensor_msgs/msg/CompressedImage", typestore=ts)
        good = cv2.imencode(".png", np.zeros((H, W, 3), np.uint8))[1]
        for i, data in enumerate([good, np.frombuffer(b"not a png", np.uint8)]):
            msg = t["sensor_msgs/msg/CompressedImage"](header=_header(t, T0 + i, "c"), format="png", data=data)
            w.write(c, T0 + i, ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    summary = bag.process_bag(src, tmp_path / "out", segmenter, [CAM2], VOCAB_1, progress=False)
    assert len(summary.bad_frames) == 1 and "could not be decoded" in summary.bad_frames[0]
    results = decode(tmp_path / "out", pan(CAM2))
    assert [stamp(m) for _, m in results] == [T0, T0 + 1]
    assert results[1][1].id_image.width == 0 and not results[1][1].segments
    assert len(decode(tmp_path / "out", sem(CAM2))) == 1


def test_ros1_bag_becomes_a_rosbag2_with_results(tmp_path, segmenter):
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    t = ts.types
    src = tmp_path / "in.bag"
    image = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    with Writer1(src) as w:
        c = w.add_connection(CAM, "sensor_msgs/msg/Image", typestore=ts)
        for i in range(2):
            header = t["std_msgs/msg/Header"](seq=i, stamp=t["builtin_interfaces/msg/Time"](sec=10 + i, nanosec=5),
                                              frame_id="cam")
            msg = t["sensor_msgs/msg/Image"](header=header, height=H, width=W, encoding="bgr8", is_bigendian=0,
                                             step=W * 3, data=image.ravel())
            w.write(c, T0 + i, ts.serialize_ros1(msg, "sensor_msgs/msg/Image"))
    summary = bag.process_bag(src, tmp_path / "out", segmenter, [CAM], VOCAB_1, progress=False)
    assert summary.frames == 2
    assert list((tmp_path / "out").glob("*.db3"))
    copied = decode(tmp_path / "out", CAM)
    assert [stamp(m) for _, m in copied] == [10 * 10**9 + 5, 11 * 10**9 + 5]
    assert np.array_equal(np.asarray(copied[0][1].data), image.ravel())
    results = decode(tmp_path / "out", pan(CAM))
    assert [stamp(m) for _, m in results] == [10 * 10**9 + 5, 11 * 10**9 + 5]


def write_gt(folder: Path, entries, names, is_thing):
    """entries: [(file stem, PanopticResult)] -> COCO panoptic JSON + PNGs, as a dataset has them."""
    (folder / "panoptic").mkdir(parents=True)
    annotations = []
    for i, (stem, result) in enumerate(entries):
        write_panoptic_png(str(folder / "panoptic" / f"{stem}.png"), result)
        annotations.append(panoptic_annotation(i, f"{stem}.png", result))
    write_panoptic_json(str(folder / "panoptic.json"), [{"id": i, "file_name": f"{s}.jpg"} for i, (s, _) in
                                                        enumerate(entries)], annotations, categories(names, is_thing))


def test_cli_reports_pq_against_ground_truth(tmp_path, segmenter):
    """The GT is the pipeline's own answer for the frame, so PQ must be exactly 1; the
    same GT with every class swapped must score 0."""
    from dataclasses import replace

    src = write_bag(tmp_path / "in", frames=1)
    images = decode(src, CAM)
    truth = [segmenter(np.frombuffer(m.data, np.uint8).reshape(H, W, 3).copy(), VOCAB_1) for _, m in images]
    assert any(r.segments for r in truth)
    names, is_thing = ["road", "car"], [False, True]      # GT order differs from the vocabulary's
    swap = {"car": 1, "road": 0}
    relabeled = [replace(r, segments=[replace(s, class_index=swap[s.class_name]) for s in r.segments])
                 for r in truth]
    entries = [(f"cam_image_raw_{stamp(m)}", r) for (_, m), r in zip(images, relabeled)]
    write_gt(tmp_path / "gt", entries + [("cam_image_raw_5", relabeled[0])], names, is_thing)
    report_file = tmp_path / "eval.json"
    code = bag.main([str(src), str(tmp_path / "out"), "--image-topics", CAM, CAM2, "--vocab", VOCAB_1,
                     "--preset", "tiny", "--device", "cpu", "--overlap-threshold", "0", "--batch-size", "1",
                     "--gt-dir", str(tmp_path / "gt"), "--eval-json", str(report_file), "--quiet"])
    assert code == 0
    report = json.loads(report_file.read_text())
    assert report["frames"] == 1 and report["gt_without_frame"] == ["cam_image_raw_5"]
    assert report["panoptic"]["All"]["pq"] == 1.0 and report["panoptic"]["All"]["n"] >= 1
    assert 0.0 <= report["semantic"]["mIoU"] <= 1.0

    wrong = [replace(r, segments=[replace(s, class_index=1 - swap[s.class_name]) for s in r.segments])
             for r in truth]
    write_gt(tmp_path / "gt2", [(e[0], r) for e, r in zip(entries, wrong)], names, is_thing)
    worse = bag.evaluate_bag(tmp_path / "out", [CAM, CAM2], bag.load_ground_truth(tmp_path / "gt2"), progress=False)
    assert worse["panoptic"]["All"]["pq"] == 0.0 and worse["panoptic"]["All"]["n"] >= 1


def test_ground_truth_layout_errors_name_the_layout(tmp_path):
    with pytest.raises(bag.BagError, match="panoptic.json.*STAMP_NS.png"):
        bag.load_ground_truth(tmp_path)


def _gt_folder(folder: Path, images: int = 2) -> Path:
    """A valid GT of `images` 8x8 PNGs (two segments each) that fails nothing."""
    from ovseg_core.panoptic_io import id_to_rgb
    from PIL import Image

    (folder / "panoptic").mkdir(parents=True)
    annotations = []
    for i in range(images):
        ids = np.where(np.arange(64).reshape(8, 8) < 24, 1, 2)
        Image.fromarray(id_to_rgb(ids)).save(folder / "panoptic" / f"{i + 1}.png")
        annotations.append({"image_id": i, "file_name": f"{i + 1}.png", "segments_info": [
            {"id": 1, "category_id": 1, "area": 24, "iscrowd": 0}, {"id": 2, "category_id": 2, "area": 40}]})
    cats = [{"id": 1, "name": "road", "isthing": 0}, {"id": 2, "name": "car", "isthing": 1}]
    (folder / "panoptic.json").write_text(json.dumps({"annotations": annotations, "categories": cats}))
    return folder


@pytest.mark.parametrize("fault,needle", [
    ("invalid JSON", "not valid JSON"),
    ("a list", "is a list"),
    ("unknown category", "category ids [9] are not in the JSON's categories"),
    ("missing second PNG", "does not exist"),
    ("corrupt second PNG", "not a readable image"),
    ("area", "has 40 pixels but area 41"),
])
def test_all_ground_truth_is_checked_before_segmenting(tmp_path, capsys, fault, needle):
    src = write_bag(tmp_path / "in", frames=1)
    gt = _gt_folder(tmp_path / "gt")
    path = {"invalid JSON": gt / "panoptic.json", "a list": gt / "panoptic.json",
            "unknown category": gt / "panoptic.json", "area": gt / "panoptic" / "2.png"}.get(
        fault, gt / "panoptic" / "2.png")
    data = json.loads((gt / "panoptic.json").read_text())
    if fault == "invalid JSON":
        path.write_text('{"annotations": [')
    elif fault == "a list":
        path.write_text("[]")
    elif fault == "unknown category":
        data["annotations"][1]["segments_info"][1]["category_id"] = 9
        path.write_text(json.dumps(data))
    elif fault == "missing second PNG":
        path.unlink()
    elif fault == "corrupt second PNG":
        path.write_bytes(path.read_bytes()[:30])
    else:
        data["annotations"][1]["segments_info"][1]["area"] = 41
        (gt / "panoptic.json").write_text(json.dumps(data))
    code = bag.main([str(src), str(tmp_path / "out"), "--image-topics", CAM, "--vocab", VOCAB_1,
                     "--preset", "tiny", "--device", "cpu", "--gt-dir", str(gt), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and "\n" not in err
    assert str(path) in err and needle in err, err
    assert not (tmp_path / "out").exists()          # nothing was segmented


def test_outputs_follow_the_nodes_naming_rule():
    """One rule for node and bag: /ovseg/NAME/KIND by default, beside the camera on request."""
    assert bag.result_topics([CAM, CAM2]) == {CAM: ("/ovseg/cam/panoptic", "/ovseg/cam/semantic"),
                                              CAM2: ("/ovseg/cam2/panoptic", "/ovseg/cam2/semantic")}
    assert bag.result_topics([CAM], "camera") == {CAM: ("/cam/ovseg/panoptic", "/cam/ovseg/semantic")}
    with pytest.raises(bag.BagError, match="colliding"):
        bag.result_topics(["/a/front/image_raw", "/a/front/image_raw/compressed"])
