"""The node's outputs for 3D mappers, driven as a process over real topics: depth arriving
before, after and never; 16UC1 and 32FC1; bad depth that must give no point; the 2D
outputs (vision_msgs detections and label info, instance, colour and nvblox mask images)."""
import os
import time

import numpy as np
import pytest

from ros_harness import require_ros

require_ros()
pytest.importorskip("vision_msgs", reason="vision_msgs is not installed (make ros builds it from "
                                          "../shared/third_party/ros; a robot has it from apt)")
pytest.importorskip("message_filters", reason="message_filters is not installed (make ros installs it)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo  # noqa: E402

from ovseg.msg import PanopticResult  # noqa: E402
from ovseg_ros.convert import header_stamp_ns as stamp_ns, label_array  # noqa: E402
from ovseg_ros.harness import NodeProcess, Probe, isolated_env  # noqa: E402
from ovseg_ros.mapping import cloud_array, unpack_instances  # noqa: E402

H, W = 48, 64
FX = FY = 50.0
CX, CY = 31.5, 23.5
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
OUT = "/ovseg/cam"
KINDS = {"panoptic": PanopticResult, "semantic": Image, "points": PointCloud2, "objects": Detection3DArray,
         "detections": Detection2DArray, "semantic_color": Image, "instance": Image, "mask": Image,
         "mask/camera_info": CameraInfo}


def header(stamp: int, frame="cam_optical"):
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = divmod(stamp, 1_000_000_000)
    return h


def image_msg(stamp: int, height=H, width=W):
    pixels = np.random.default_rng(stamp % 997).integers(0, 255, (height, width, 3), np.uint8)
    return Image(header=header(stamp), height=height, width=width, encoding="rgb8", is_bigendian=0,
                 step=width * 3, data=pixels.tobytes())


def true_depth(height=H, width=W) -> np.ndarray:
    """A tilted plane 1.5-3 m away, with a hole of zeros and a few NaNs (no reading)."""
    rows, cols = np.mgrid[0:height, 0:width]
    depth = (1.5 + 1.5 * rows / height + 0.2 * cols / width).astype(np.float32)
    depth[5:10, 5:15] = 0.0
    depth[20, 30:34] = np.nan
    return depth


def depth_msg(stamp: int, depth_m: np.ndarray, encoding="32FC1"):
    if encoding == "32FC1":
        data = depth_m.astype("<f4")
    else:
        data = np.where(np.isfinite(depth_m), np.round(depth_m * 1000), 0).astype("<u2")
    height, width = depth_m.shape
    return Image(header=header(stamp), height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * data.itemsize, data=data.tobytes())


def info_msg(stamp: int, height=H, width=W):
    return CameraInfo(header=header(stamp), height=height, width=width, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0],
                      p=[FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0])


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    os.environ.pop("ROS_DOMAIN_ID", None)
    os.environ.update(isolated_env())
    node = NodeProcess(tmp_path_factory.mktemp("node"), preset="tiny", device="cpu", input_size=64,
                       cameras=["/cam/image_raw", "/cam2/image_raw"], input_qos="reliable", input_qos_depth=50,
                       depth_topics=["/cam/depth/image_rect", "/cam2/depth/image_rect"], depth_queue=30,
                       publish_points=True, publish_objects=True, publish_detections=True, publish_label_info=True,
                       publish_semantic_color=True, publish_instance=True, mask_classes=["car"],
                       vocabulary="car, automobile; road [stuff]", status_period=0.2)
    probe = Probe()
    probe.pub = {topic: probe.node.create_publisher(kind, topic, RELIABLE) for topic, kind in (
        ("/cam/image_raw", Image), ("/cam/camera_info", CameraInfo), ("/cam/depth/image_rect", Image),
        ("/cam/depth/camera_info", CameraInfo), ("/cam2/image_raw", Image), ("/cam2/depth/image_rect", Image))}
    for kind, msg_type in KINDS.items():
        probe.subscribe(msg_type, f"{OUT}/{kind}", RELIABLE)
    probe.subscribe(PointCloud2, "/ovseg/cam2/points", RELIABLE)
    probe.subscribe(PanopticResult, "/ovseg/cam2/panoptic", RELIABLE)
    probe.subscribe(LabelInfo, f"{OUT}/label_info", LATCHED)
    probe.subscribe(DiagnosticArray, "/diagnostics")
    probe.wait_for(lambda: probe.node.count_subscribers("/cam/depth/camera_info") > 0, timeout=120,
                   what="the node's depth subscriptions", node=node)
    probe.pub["/cam/camera_info"].publish(info_msg(1))
    yield probe, node
    probe.close()
    node.stop()


def received(probe, kind, stamp, camera=OUT):
    return [m for m in probe.messages(f"{camera}/{kind}") if stamp_ns(m.header) == stamp]


def wait_result(probe, node, kind, stamp, camera=OUT, timeout=60):
    probe.wait_for(lambda: received(probe, kind, stamp, camera), timeout=timeout, node=node,
                   what=f"{camera}/{kind} for stamp {stamp}")
    return received(probe, kind, stamp, camera)[0]


def send_frame(probe, stamp, camera="/cam"):
    probe.pub[f"{camera}/image_raw"].publish(image_msg(stamp))


def send_depth(probe, stamp, depth=None, encoding="32FC1", info=True, camera="/cam"):
    probe.pub[f"{camera}/depth/image_rect"].publish(depth_msg(stamp, true_depth() if depth is None else depth,
                                                              encoding))
    if info:
        probe.pub[f"{camera}/depth/camera_info"].publish(info_msg(stamp))


def check_cloud(probe, node, stamp, depth=None):
    """Every point lies at its pixel's depth along its pixel's ray and carries the semantic
    image's label there; pixels without depth give no point."""
    depth = true_depth() if depth is None else depth
    cloud = cloud_array(wait_result(probe, node, "points", stamp))
    semantic = label_array(wait_result(probe, node, "semantic", stamp))
    valid = np.isfinite(depth) & (depth > 0)
    rows, cols = np.nonzero(valid)                       # row-major, as the cloud
    assert len(cloud) == valid.sum()
    np.testing.assert_allclose(cloud["z"], depth[valid], rtol=1e-6)
    np.testing.assert_allclose(cloud["x"], (cols - CX) / FX * depth[valid], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cloud["y"], (rows - CY) / FY * depth[valid], rtol=1e-5, atol=1e-6)
    assert (cloud["label"] == semantic[valid]).all()
    return cloud


def test_the_library_counts_bytes_with_the_cloud_layout():
    from ovseg_core import geometry
    from ovseg_ros import mapping
    assert geometry.POINT_STEP == mapping.POINT_STEP == mapping._POINT_DTYPE.itemsize


def test_depth_before_the_frame(ros):
    probe, node = ros
    send_depth(probe, 1_000_000_000)
    time.sleep(0.2)
    send_frame(probe, 1_000_000_000)
    check_cloud(probe, node, 1_000_000_000)


def test_depth_after_the_result_still_pairs(ros):
    probe, node = ros
    send_frame(probe, 2_000_000_000)
    wait_result(probe, node, "panoptic", 2_000_000_000)
    assert not received(probe, "points", 2_000_000_000)
    send_depth(probe, 2_000_000_000 + 10_000_000)          # 10 ms later: within depth_slop
    check_cloud(probe, node, 2_000_000_000)


def test_no_depth_still_publishes_every_2d_output(ros):
    probe, node = ros
    stamp = 3_000_000_000
    send_frame(probe, stamp)
    result = wait_result(probe, node, "panoptic", stamp)
    semantic = label_array(wait_result(probe, node, "semantic", stamp))
    ids = label_array(result.id_image)
    detections = wait_result(probe, node, "detections", stamp).detections
    assert sorted(int(d.id) for d in detections) == sorted(s.id for s in result.segments)
    assert {d.results[0].hypothesis.class_id for d in detections} <= {"car", "road"}
    labels, instances = unpack_instances(label_array(wait_result(probe, node, "instance", stamp)), "class_instance")
    assert (labels == semantic).all()
    for s in result.segments:                     # one (label, instance) per thing, instances from 1
        pairs = set(zip(labels[ids == s.id].tolist(), instances[ids == s.id].tolist()))
        assert len(pairs) == 1 and (next(iter(pairs))[1] >= 1) == s.is_thing
    mask = label_array(wait_result(probe, node, "mask", stamp))
    assert ((mask == 255) == (semantic == 0)).all() and set(np.unique(mask)) <= {0, 255}   # 0 = car
    info = wait_result(probe, node, "mask/camera_info", stamp)
    assert (info.width, info.height) == (W, H)
    color = wait_result(probe, node, "semantic_color", stamp)
    assert (color.encoding, color.width, color.height) == ("rgb8", W, H)
    pixels = np.frombuffer(bytes(color.data), np.uint8).reshape(H, W, 3)
    for label in np.unique(semantic):                  # exact colours: one per label, no blending
        assert len({tuple(p) for p in pixels[semantic == label]}) == 1
    space = probe.messages(f"{OUT}/label_info")[-1]
    assert {(c.class_id, c.class_name) for c in space.class_map} == {(0, "car"), (1, "road"), (255, "void")}
    time.sleep(1.0)
    assert not received(probe, "points", stamp)        # no depth, no cloud


def test_16uc1_and_32fc1_give_the_same_cloud(ros):
    probe, node = ros
    depth = np.round(true_depth() * 1000) / 1000        # exact in millimetres
    send_depth(probe, 4_000_000_000, depth, "32FC1")
    send_frame(probe, 4_000_000_000)
    send_depth(probe, 5_000_000_000, depth, "16UC1")
    a = check_cloud(probe, node, 4_000_000_000, depth)
    send_frame(probe, 5_000_000_000)
    b = check_cloud(probe, node, 5_000_000_000, depth)
    for field in ("x", "y", "z"):
        np.testing.assert_allclose(a[field], b[field], atol=1e-6)


def test_objects_are_thing_segments_in_front_of_the_camera(ros):
    probe, node = ros
    stamp = 6_000_000_000
    send_depth(probe, stamp)
    send_frame(probe, stamp)
    result = wait_result(probe, node, "panoptic", stamp)
    objects = wait_result(probe, node, "objects", stamp).detections
    things = {s.id: s for s in result.segments if s.is_thing}
    assert {int(o.id) for o in objects} <= set(things)
    for o in objects:
        assert o.results[0].hypothesis.class_id == things[int(o.id)].class_name
        z = o.results[0].pose.pose.position.z
        assert 1.5 <= z <= 3.2 and 0 < o.bbox.size.z < 1.7


@pytest.mark.parametrize("case, depth, encoding, says", [
    ("size mismatch", np.ones((24, 32), np.float32), "32FC1", "registered to the colour camera"),
    ("unknown encoding", None, "rgb8", "not a depth image encoding"),
    ("all zero", np.zeros((H, W), np.float32), "32FC1", "no valid pixel"),
    ("all NaN", np.full((H, W), np.nan, np.float32), "32FC1", "no valid pixel"),
])
def test_bad_depth_gives_no_point_and_one_diagnostic(ros, case, depth, encoding, says):
    probe, node = ros
    stamp = 7_000_000_000 + ["size mismatch", "unknown encoding", "all zero", "all NaN"].index(case) * 100_000_000
    if encoding == "rgb8":
        bad = Image(header=header(stamp), height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3,
                    data=bytes(H * W * 3))
        probe.pub["/cam/depth/image_rect"].publish(bad)
        probe.pub["/cam/depth/camera_info"].publish(info_msg(stamp))
    else:
        send_depth(probe, stamp, depth, encoding)
    send_frame(probe, stamp)
    wait_result(probe, node, "panoptic", stamp)

    def diagnosed():
        return [kv.value for m in probe.messages("/diagnostics") for st in m.status if st.hardware_id == "/cam/image_raw"
                for kv in st.values if kv.key == "last_error" and says in kv.value]
    probe.wait_for(diagnosed, timeout=30, what=f"a diagnostic saying {says!r}", node=node)
    assert not received(probe, "points", stamp) and not received(probe, "objects", stamp)
    assert node.alive()
    send_depth(probe, stamp + 50_000_000)             # the next good pair works
    send_frame(probe, stamp + 50_000_000)
    check_cloud(probe, node, stamp + 50_000_000)


def test_depth_without_camera_info_is_diagnosed(ros):
    probe, node = ros
    stamp = 9_000_000_000
    send_depth(probe, stamp, info=False, camera="/cam2")
    send_frame(probe, stamp, camera="/cam2")
    wait_result(probe, node, "panoptic", stamp, camera="/ovseg/cam2")

    def diagnosed():
        return [st.message for m in probe.messages("/diagnostics") for st in m.status
                if st.hardware_id == "/cam2/image_raw" and "no camera_info on /cam2/depth/camera_info" in st.message]
    probe.wait_for(diagnosed, timeout=30, what="the missing depth camera_info diagnostic", node=node)
    assert not received(probe, "points", stamp, camera="/ovseg/cam2")
