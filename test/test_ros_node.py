"""The node in its own process, driven over real ROS 2 topics (tiny preset, CPU)."""
import os
import time

import cv2
import numpy as np
import pytest
import yaml

from ros_harness import require_ros

require_ros()

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from ovseg.msg import PanopticResult, SemanticInfo, Status, Vocabulary, VocabularyClass  # noqa: E402
from ovseg.srv import SetVocabulary  # noqa: E402
from ovseg_ros.convert import SEMANTIC_VOID_MONO8, header_stamp_ns as stamp_ns, label_array  # noqa: E402
from ovseg_ros.harness import REPO, NodeProcess, Probe, isolated_env  # noqa: E402

CAMERAS = ["/cam_a/image_raw", "/cam_b/image_raw", "/cam_c/image_raw/compressed"]
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    """One node serving three cameras, and a probe wired to all its topics."""
    os.environ.update(isolated_env())
    node = NodeProcess(tmp_path_factory.mktemp("node"), preset="tiny", device="cpu",
                       cameras=CAMERAS, input_qos="reliable", input_qos_depth=100,
                       vocabulary="car; road [stuff]", status_period=0.2, input_size=64)
    probe = Probe()
    probe.pubs = {t: probe.node.create_publisher(CompressedImage if t.endswith("compressed") else Image,
                                                 t, RELIABLE) for t in CAMERAS}
    for name in ("cam_a", "cam_b", "cam_c"):
        probe.subscribe(PanopticResult, f"/ovseg/{name}/panoptic", RELIABLE)
        probe.subscribe(Image, f"/ovseg/{name}/semantic", RELIABLE)
        probe.subscribe(SemanticInfo, f"/ovseg/{name}/semantic_info", RELIABLE)
    probe.subscribe(Status, "/ovseg/status")
    probe.vocab_text = probe.node.create_publisher(String, "/ovseg/vocabulary_text", 10)
    probe.wait_for(lambda: any(m.state == "active" for m in probe.messages("/ovseg/status")),
                   timeout=120, what="the node to become active", node=node)
    yield probe, node
    probe.close()
    node.stop()


def image_msg(stamp_ns: int, height=48, width=64, encoding="rgb8", frame="cam", data=None, step=None):
    rng = np.random.default_rng(stamp_ns % 1000)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0,
                step=width * 3 if step is None else step)
    msg.header = Header(frame_id=frame)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.data = pixels.tobytes() if data is None else data
    return msg


def jpeg_msg(stamp_ns: int, height=40, width=56, frame="cam_c"):
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", pixels)[1].tobytes())
    msg.header = Header(frame_id=frame)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def find(probe, topic, stamp):
    return [m for m in probe.messages(topic) if stamp_ns(m.header) == stamp]


def camera_status(probe, topic):
    statuses = probe.messages("/ovseg/status")
    return next(c for c in statuses[-1].cameras if c.camera == topic) if statuses else None


def test_each_camera_gets_results_with_its_header_and_size(ros):
    probe, node = ros
    inputs = {CAMERAS[0]: image_msg(1_000_000_001, 48, 64, frame="cam_a"),
              CAMERAS[1]: image_msg(1_000_000_002, 30, 50, "bgr8", frame="cam_b"),
              CAMERAS[2]: jpeg_msg(1_000_000_003)}
    for topic, msg in inputs.items():
        probe.pubs[topic].publish(msg)
    for topic, name in zip(CAMERAS, ("cam_a", "cam_b", "cam_c")):
        sent = inputs[topic]
        out = f"/ovseg/{name}/panoptic"
        probe.wait_for(lambda: find(probe, out, stamp_ns(sent.header)), what=out, node=node)
        result = find(probe, out, stamp_ns(sent.header))[0]
        assert result.header.frame_id == sent.header.frame_id
        height, width = (40, 56) if topic.endswith("compressed") else (sent.height, sent.width)
        assert (result.id_image.height, result.id_image.width) == (height, width)
        assert result.id_image.encoding == "mono16"
        ids = label_array(result.id_image)
        assert set(np.unique(ids)) - {0} == {s.id for s in result.segments}
        for s in result.segments:   # areas and boxes describe the id image
            ys, xs = np.nonzero(ids == s.id)
            assert s.area == len(ys)
            assert (s.bbox.x_offset, s.bbox.y_offset) == (xs.min(), ys.min())
            assert s.class_name == result.class_names[s.class_index]
        assert list(result.class_names) == ["car", "road"]
        semantic = f"/ovseg/{name}/semantic"
        probe.wait_for(lambda: find(probe, semantic, stamp_ns(sent.header)), what=semantic, node=node)
        sem = find(probe, semantic, stamp_ns(sent.header))[0]
        assert sem.encoding == "mono8" and (sem.height, sem.width) == (height, width)
        info = f"/ovseg/{name}/semantic_info"
        probe.wait_for(lambda: find(probe, info, stamp_ns(sent.header)), what=info, node=node)
        meaning = find(probe, info, stamp_ns(sent.header))[0]
        assert meaning.class_names == ["car", "road"] and meaning.void_label == SEMANTIC_VOID_MONO8
        assert meaning.vocabulary_version == result.vocabulary_version > 0
        labels = label_array(sem)
        assert ((labels == SEMANTIC_VOID_MONO8) == (ids == 0)).all()   # void exactly where unlabeled
        assert labels[ids > 0].max(initial=0) < 2


def test_vocabulary_change_applies_to_next_frame_and_late_joiners_see_it(ros):
    probe, node = ros
    before = probe.messages("/ovseg/status")[-1].vocabulary_version
    probe.vocab_text.publish(String(data="red circle; blue square; grass [stuff]"))
    late = []
    sub = probe.node.create_subscription(Vocabulary, "/ovseg/vocabulary", late.append, LATCHED)
    probe.wait_for(lambda: late and late[-1].version == before + 1, what="the latched vocabulary", node=node)
    assert [c.name for c in late[-1].classes] == ["red circle", "blue square", "grass"]
    assert [c.is_thing for c in late[-1].classes] == [True, True, False]
    msg = image_msg(2_000_000_000, frame="cam_a")
    probe.pubs[CAMERAS[0]].publish(msg)
    out = "/ovseg/cam_a/panoptic"
    probe.wait_for(lambda: find(probe, out, stamp_ns(msg.header)), what="a result", node=node)
    result = find(probe, out, stamp_ns(msg.header))[0]
    assert result.vocabulary_version == before + 1
    assert list(result.class_names) == ["red circle", "blue square", "grass"]
    probe.node.destroy_subscription(sub)

    # The service takes class messages (with synonyms) and refuses bad requests.
    client = probe.node.create_client(SetVocabulary, "/ovseg/set_vocabulary")
    assert client.wait_for_service(timeout_sec=20)

    def call(**kwargs):
        future = client.call_async(SetVocabulary.Request(**kwargs))
        probe.wait_for(future.done, what="the service reply", node=node)
        return future.result()
    reply = call(classes=[VocabularyClass(name="person", synonyms=["child"], is_thing=True),
                          VocabularyClass(name="road", synonyms=[], is_thing=False)])
    assert reply.success and reply.version == before + 2, reply.message
    bad = call(text="car; car")
    assert not bad.success and "duplicate" in bad.message and bad.version == before + 2

    # Our Vocabulary message on ~/vocabulary_request works like the service.
    request = probe.node.create_publisher(Vocabulary, "/ovseg/vocabulary_request", 10)
    watch = probe.node.create_subscription(Vocabulary, "/ovseg/vocabulary", late.append, LATCHED)
    time.sleep(0.5)
    request.publish(Vocabulary(classes=[VocabularyClass(name="tree"), VocabularyClass(name="sky", is_thing=False)]))
    probe.wait_for(lambda: late[-1].version == before + 3, what="the requested vocabulary", node=node)
    assert [(c.name, c.is_thing) for c in late[-1].classes] == [("tree", True), ("sky", False)]
    probe.node.destroy_subscription(watch)
    empty = call(text=" ; ")
    assert not empty.success and "empty" in empty.message
    both = call(text="car", classes=[VocabularyClass(name="bus")])
    assert not both.success and "not both" in both.message
    huge = call(text="; ".join(f"class {i}" for i in range(5000)))
    assert not huge.success and "MAX_CLASSES" in huge.message and huge.version == before + 3
    assert node.alive()


def test_burst_is_dropped_not_queued_and_outputs_never_go_back_in_time(ros):
    probe, node = ros
    topic, out = CAMERAS[1], "/ovseg/cam_b/panoptic"
    start = camera_status(probe, topic)
    first = 3_000_000_000
    for i in range(50):
        probe.pubs[topic].publish(image_msg(first + i, 40, 40, frame="cam_b"))
    probe.wait_for(lambda: (lambda c: c.received - start.received == 50
                            and c.processed + c.dropped + c.errors
                            - (start.processed + start.dropped + start.errors) == 50)(
        camera_status(probe, topic)), what="the burst to be accounted for", node=node)
    time.sleep(0.5)   # let the last results arrive
    status = camera_status(probe, topic)
    stamps = [stamp_ns(m.header) for m in probe.messages(out) if stamp_ns(m.header) >= first]
    processed = status.processed - start.processed
    assert len(stamps) == processed          # one output per processed frame, no duplicates
    assert stamps == sorted(set(stamps))     # never older than one already published
    assert status.dropped - start.dropped == 50 - processed > 0
    assert stamps[-1] == first + 49          # the newest frame is always processed


def test_malformed_messages_are_counted_and_the_node_keeps_running(ros):
    probe, node = ros
    topic = CAMERAS[0]
    start = camera_status(probe, topic).errors
    bad = [image_msg(4_000_000_001, step=10),                        # step < row size
           image_msg(4_000_000_002, encoding="weird42"),             # unknown encoding
           image_msg(4_000_000_003, height=0, width=0, data=b""),    # empty
           image_msg(4_000_000_004, data=b"\x00" * 100)]             # too short for its size
    for msg in bad:
        probe.pubs[topic].publish(msg)
        time.sleep(0.3)   # one at a time, so none is replaced (dropped) by the next
    broken = jpeg_msg(4_000_000_005)
    broken.data = b"not a jpeg at all"
    probe.pubs[CAMERAS[2]].publish(broken)
    probe.wait_for(lambda: camera_status(probe, topic).errors - start == len(bad),
                   what="the bad images to be counted", node=node)
    probe.wait_for(lambda: camera_status(probe, CAMERAS[2]).errors >= 1, node=node,
                   what="the bad JPEG to be counted")
    assert "needs" in camera_status(probe, topic).last_error   # the last one: too few bytes
    good = image_msg(4_000_000_010, frame="cam_a")
    probe.pubs[topic].publish(good)
    probe.wait_for(lambda: find(probe, "/ovseg/cam_a/panoptic", stamp_ns(good.header)),
                   what="a result after the bad messages", node=node)
    assert node.alive()
    assert "Traceback" not in node.output()


def test_parameter_file_documents_every_parameter():
    from ovseg_ros.node import PARAMETERS
    params = yaml.safe_load((REPO / "config" / "ovseg_node.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for key, value in params.items():   # same types as declared, so the file loads
        assert type(value) is type(PARAMETERS[key][0]), key


def test_lifecycle_deactivate_stops_processing_and_activate_resumes(ros):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    probe, node = ros
    client = probe.node.create_client(ChangeState, "/ovseg/change_state")
    assert client.wait_for_service(timeout_sec=20)

    def change(transition_id):
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        probe.wait_for(future.done, what="the lifecycle transition", node=node)
        assert future.result().success

    out = "/ovseg/cam_a/panoptic"
    change(Transition.TRANSITION_DEACTIVATE)
    probe.wait_for(lambda: probe.messages("/ovseg/status")[-1].state == "inactive", node=node,
                   what="status to report inactive")
    ignored = image_msg(5_000_000_001, frame="cam_a")
    probe.pubs[CAMERAS[0]].publish(ignored)
    time.sleep(2.0)
    assert not find(probe, out, stamp_ns(ignored.header))   # inactive: no subscription, no result
    change(Transition.TRANSITION_ACTIVATE)
    probe.wait_for(lambda: probe.messages("/ovseg/status")[-1].state == "active", node=node,
                   what="status to report active")
    time.sleep(0.5)   # the new subscription must be matched before we publish
    resumed = image_msg(5_000_000_002, frame="cam_a")
    probe.pubs[CAMERAS[0]].publish(resumed)
    probe.wait_for(lambda: find(probe, out, stamp_ns(resumed.header)), node=node,
                   what="a result after re-activation")


def test_a_wrong_preset_is_reported_and_the_process_stays_up(tmp_path):
    os.environ.update(isolated_env())
    node = NodeProcess(tmp_path, preset="no_such_preset", device="cpu")
    try:
        end = time.monotonic() + 60
        while "configure failed" not in node.output() and time.monotonic() < end and node.alive():
            time.sleep(0.2)
        assert "configure failed" in node.output() and "no_such_preset" in node.output(), node.output()
        assert node.alive()   # still there, so an operator can fix and configure it again
    finally:
        node.stop()


@pytest.fixture
def local_node():
    """The node class in this process (own context), configured, not yet active."""
    import rclpy
    from rclpy.parameter import Parameter

    from ovseg_ros.node import SegmentationNode
    context = rclpy.Context()
    rclpy.init(context=context)
    node = SegmentationNode(context=context, parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("input_size", value=64),
        Parameter("cameras", value=["/a/image_raw", "/b/image_raw"]),
        Parameter("vocabulary", value="car; road [stuff]"), Parameter("embedding_cache_dir", value="")])
    node.trigger_configure()
    yield node
    node._stop_worker()
    node.destroy_node()
    context.try_shutdown()


def test_waiting_cameras_share_one_forward_and_text_is_encoded_once_per_vocabulary(local_node):
    node = local_node
    calls, encodes = [], []
    segment, encode = node.segmenter.__call__, node.segmenter.text_encoder._encode
    node.segmenter = _Spy(node.segmenter, lambda images, *a, **k: (calls.append(len(images)),
                                                                   segment(images, *a, **k))[1])
    node.segmenter.text_encoder._encode = lambda *a: (encodes.append(1), encode(*a))[1]
    for cam in node.cameras:               # both frames wait before the worker starts
        node._on_image(cam, image_msg(6_000_000_000, frame=cam.name))
    node.trigger_activate()
    end = time.monotonic() + 60
    while sum(c.processed for c in node.cameras) < 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert calls == [2]                    # one batched forward for the two cameras
    assert encodes == []                   # the vocabulary was encoded at configure time
    ok, _ = node.set_vocabulary("bus; grass [stuff]")
    assert ok and encodes == [1]
    for i in range(3):
        node._on_image(node.cameras[0], image_msg(7_000_000_000 + i, frame="a"))
        end = time.monotonic() + 60
        while node.cameras[0].processed < 2 + i and time.monotonic() < end:
            time.sleep(0.05)
    assert encodes == [1]                  # frames never re-encode the text
    assert node.cameras[0].processed == 4


class _Spy:
    """Wraps the segmenter so a test can watch calls; everything else passes through."""

    def __init__(self, inner, call):
        self._inner, self._call = inner, call

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)
