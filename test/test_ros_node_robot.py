"""Issue 14: the node driven from separate processes the way a robot stack drives it
(time jumps, lifecycle paths, large vocabulary changes, the code that actually runs)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ros_harness import image_msg, require_ros

require_ros()

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from ovseg.msg import PanopticResult, Status, Vocabulary  # noqa: E402
from ovseg.srv import SetVocabulary  # noqa: E402
from ovseg_ros.convert import header_stamp_ns as stamp_ns  # noqa: E402
from ovseg_ros.harness import REPO, NodeProcess, Probe, isolated_env  # noqa: E402

CAMERA = "/cam/image_raw"
OUT = "/ovseg/cam/panoptic"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
SMALL = dict(preset="tiny", device="cpu", input_size=64, input_qos="reliable", input_qos_depth=10,
             status_period=0.2, cameras=[CAMERA], vocabulary="car; road [stuff]")


def fresh_domain():
    """A DDS domain of its own per test: endpoints of an earlier test's node (gone, but
    not yet expired in discovery) must not show up in this one's graph."""
    os.environ.pop("ROS_DOMAIN_ID", None)
    os.environ.update(isolated_env())


def start(tmp_path, **params):
    """A node with one camera and a probe wired to it."""
    fresh_domain()
    tmp_path.mkdir(parents=True, exist_ok=True)
    node = NodeProcess(tmp_path, **{**SMALL, **params})
    probe = Probe()
    probe.camera = probe.node.create_publisher(Image, CAMERA, RELIABLE)
    probe.subscribe(PanopticResult, OUT, RELIABLE)
    probe.subscribe(Status, "/ovseg/status")
    return node, probe


def statuses(probe):
    return probe.messages("/ovseg/status")


def wait_state(probe, node, state):
    probe.wait_for(lambda: statuses(probe) and statuses(probe)[-1].state == state,
                   timeout=120, what=f"status to report {state}", node=node)


def answered(probe, node, stamp: int) -> PanopticResult:
    """Publish one frame and wait for its result."""
    probe.camera.publish(image_msg(stamp))
    probe.wait_for(lambda: any(stamp_ns(m.header) == stamp for m in probe.messages(OUT)),
                   what=f"the result of frame {stamp}", node=node)
    return next(m for m in probe.messages(OUT) if stamp_ns(m.header) == stamp)


def call(probe, node, client, timeout=120, **kwargs):
    future = client.call_async(SetVocabulary.Request(**kwargs))
    probe.wait_for(future.done, timeout=timeout, what="the service reply", node=node)
    return future.result()


# ---- defect 4: what runs is the edited source ----------------------------------------

def test_the_node_and_the_tests_run_the_editable_source(tmp_path):
    """tools/ros_env.sh used to put a copy made by `make ros` ahead of the source."""
    where = subprocess.run([sys.executable, "-c", "import ovseg_core, ovseg_ros, ovseg.msg; "
                            "print(ovseg_core.__file__); print(ovseg_ros.__file__); print(ovseg.msg.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    core, ros, interfaces = where.stdout.split()[-3:]
    assert Path(core) == REPO / "ovseg_core" / "__init__.py", where.stdout
    assert Path(ros) == REPO / "ovseg_ros" / "__init__.py", where.stdout
    assert Path(interfaces).is_relative_to(REPO / "install")   # the interfaces: from the build
    # The installed `ovseg-node` script, started outside the repository, names its source.
    script = Path(sys.executable).parent / "ovseg-node"
    fresh_domain()
    node = NodeProcess(tmp_path, command=[str(script)], cwd=tmp_path, autostart=False)
    try:
        end = time.monotonic() + 60
        while "ovseg_ros from" not in node.output() and time.monotonic() < end and node.alive():
            time.sleep(0.2)
        assert f"ovseg_ros from {REPO / 'ovseg_ros'}\n" in node.output(), node.output()
    finally:
        node.stop()


# ---- defect 1: stamps going backwards -----------------------------------------------

def test_stamps_going_backwards_reset_the_camera_instead_of_silencing_it(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import CameraInfo
    node, probe = start(tmp_path)
    try:
        probe.subscribe(DiagnosticArray, "/diagnostics")
        probe.subscribe(CameraInfo, "/ovseg/cam/camera_info", RELIABLE)
        info = probe.node.create_publisher(CameraInfo, "/cam/camera_info", RELIABLE)
        wait_state(probe, node, "active")
        time.sleep(0.5)
        info.publish(CameraInfo(width=32, height=24, k=[20.0, 0.0, 16.0, 0.0, 20.0, 12.0, 0.0, 0.0, 1.0]))
        time.sleep(0.5)
        answered(probe, node, 400_009)
        for stamp in (1, 2, 0):   # a looping bag / simulator reset, then a second jump
            answered(probe, node, stamp)
        probe.wait_for(lambda: (lambda c: c.time_jumps == 2 and c.processed == 4)(statuses(probe)[-1].cameras[0]),
                       node=node, what="two time jumps and four results in status")
        cam = statuses(probe)[-1].cameras[0]
        assert cam.processed == 4 and cam.dropped == 0
        assert node.output().count("stamp went back") == 2    # one warning per jump

        def camera_diagnostics():
            return [s for array in probe.messages("/diagnostics") for s in array.status
                    if s.hardware_id == CAMERA]
        probe.wait_for(lambda: any(s.level == DiagnosticStatus.WARN and "time jump" in s.message
                                   for s in camera_diagnostics()), node=node, what="a time-jump warning")
        probe.wait_for(lambda: camera_diagnostics()[-1].level == DiagnosticStatus.OK, node=node,
                       what="diagnostics back to OK")
        assert {kv.key for kv in camera_diagnostics()[-1].values} >= {"input_hz", "latency_p50_ms", "dropped"}
        # camera_info is republished with each result's stamp.
        probe.wait_for(lambda: {stamp_ns(m.header) for m in probe.messages("/ovseg/cam/camera_info")}
                       >= {400_009, 1, 2, 0}, node=node, what="camera_info per result")
        assert probe.messages("/ovseg/cam/camera_info")[0].k[0] == 20.0
    finally:
        probe.close()
        node.stop()


# ---- defect 3: lifecycle paths leave exactly the target state's entities --------------

def _graph(probe):
    n = probe.node
    pubs = {t for t, _ in n.get_publisher_names_and_types_by_node("ovseg", "/")}
    subs = {t for t, _ in n.get_subscriber_names_and_types_by_node("ovseg", "/")}
    srvs = {t for t, _ in n.get_service_names_and_types_by_node("ovseg", "/")}
    counts = {t: n.count_publishers(t) for t in pubs if t.startswith("/ovseg/")}
    return pubs, subs, srvs, counts


CONFIGURED_PUBS = {"/ovseg/vocabulary", "/ovseg/cam/panoptic", "/ovseg/cam/semantic", "/ovseg/cam/semantic_info",
                   "/ovseg/cam/overlay", "/ovseg/cam/camera_info"}
CONFIGURED_SUBS = {"/ovseg/vocabulary_text", "/ovseg/vocabulary_request"}
CONFIGURED_SRVS = {"/ovseg/set_vocabulary"}


def _expect(probe, node, base, state):
    pubs, subs, srvs = (set(x) for x in base)
    if state in ("inactive", "active"):
        pubs, subs, srvs = pubs | CONFIGURED_PUBS, subs | CONFIGURED_SUBS, srvs | CONFIGURED_SRVS
    if state == "active":
        subs = subs | {CAMERA, "/cam/camera_info"}

    def matches():
        got_pubs, got_subs, got_srvs, counts = _graph(probe)
        return (got_pubs, got_subs, got_srvs) == (pubs, subs, srvs) and set(counts.values()) <= {1}
    try:
        probe.wait_for(matches, timeout=20, what=f"the entities of {state}", node=node)
    except AssertionError as e:
        raise AssertionError(f"{e}\nexpected {(pubs, subs, srvs)}\ngot {_graph(probe)}") from None


def test_status_and_diagnostics_break_each_cameras_latency_into_stages(tmp_path):
    """~/status and /diagnostics give p50 / p95 per stage (queue, decode, the library's
    stages, publish) so that a slow node can be traced to a stage."""
    from diagnostic_msgs.msg import DiagnosticArray
    node, probe = start(tmp_path)
    try:
        probe.subscribe(DiagnosticArray, "/diagnostics")
        wait_state(probe, node, "active")
        time.sleep(0.5)
        for stamp in (1, 2, 3):
            answered(probe, node, stamp)
        probe.wait_for(lambda: statuses(probe)[-1].cameras[0].processed == 3, node=node, what="three results")
        cam = statuses(probe)[-1].cameras[0]
        assert list(cam.stage_names) == ["queue", "decode", "preprocess", "vocabulary", "proposals", "classifier",
                                         "merge", "publish"]
        assert len(cam.stage_p50_ms) == len(cam.stage_p95_ms) == len(cam.stage_names)
        assert all(0 <= p50 <= p95 for p50, p95 in zip(cam.stage_p50_ms, cam.stage_p95_ms))
        stage = dict(zip(cam.stage_names, cam.stage_p50_ms))
        assert stage["proposals"] > 0 and stage["classifier"] > 0 and stage["merge"] > 0
        # the stages are parts of receive -> publish
        assert sum(stage.values()) <= cam.latency_p99_ms + 1.0

        def keys():
            return {kv.key for array in probe.messages("/diagnostics") for s in array.status
                    if s.hardware_id == CAMERA for kv in s.values}
        probe.wait_for(lambda: {"queue_p50_ms", "proposals_p95_ms", "merge_p50_ms", "publish_p95_ms"} <= keys(),
                       node=node, what="per-stage latency in /diagnostics")
    finally:
        probe.close()
        node.stop()


def test_every_lifecycle_path_leaves_exactly_the_entities_of_its_target_state(tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    node, probe = start(tmp_path, autostart=False)
    try:
        wait_state(probe, node, "unconfigured")
        client = probe.node.create_client(ChangeState, "/ovseg/change_state")
        assert client.wait_for_service(timeout_sec=60)

        def change(transition, state):
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
            probe.wait_for(future.done, timeout=300, what="the transition", node=node)
            assert future.result().success, state
            _expect(probe, node, base, state)

        probe.wait_for(lambda: "/ovseg/transition_event" in _graph(probe)[0], node=node, what="the graph")
        time.sleep(1.0)   # discovery settles
        base = _graph(probe)[:3]
        assert not base[0] & CONFIGURED_PUBS
        T = Transition
        change(T.TRANSITION_CONFIGURE, "inactive")
        change(T.TRANSITION_CLEANUP, "unconfigured")
        change(T.TRANSITION_CONFIGURE, "inactive")         # used to leave two publishers
        change(T.TRANSITION_ACTIVATE, "active")
        change(T.TRANSITION_DEACTIVATE, "inactive")
        change(T.TRANSITION_CLEANUP, "unconfigured")
        change(T.TRANSITION_CONFIGURE, "inactive")
        change(T.TRANSITION_ACTIVATE, "active")
        # A late joiner gets the current vocabulary only (no stale one from a leaked publisher).
        late = []
        probe.node.create_subscription(Vocabulary, "/ovseg/vocabulary", late.append, LATCHED)
        probe.wait_for(lambda: late, what="the latched vocabulary", node=node)
        time.sleep(1.0)
        assert len(late) == 1, [m.version for m in late]
        answered(probe, node, 1_000)
        change(T.TRANSITION_ACTIVE_SHUTDOWN, "finalized")
        assert node.alive()
    finally:
        probe.close()
        node.stop()


# ---- defect 2: a large vocabulary never blocks the node --------------------------------

def test_large_vocabulary_is_encoded_in_the_background_and_a_newer_request_supersedes_it(tmp_path):
    node, probe = start(tmp_path)
    try:
        wait_state(probe, node, "active")
        old = answered(probe, node, 10).vocabulary_version
        announced = []
        probe.node.create_subscription(Vocabulary, "/ovseg/vocabulary", announced.append, LATCHED)
        text_pub = probe.node.create_publisher(String, "/ovseg/vocabulary_text", 10)
        time.sleep(0.5)
        text_pub.publish(String(data="; ".join(f"object number {i}" for i in range(2000))))
        probe.wait_for(lambda: statuses(probe)[-1].vocabulary_state == "encoding", node=node,
                       what="status to report encoding")
        assert statuses(probe)[-1].encoding_size == 2000
        for stamp in (11, 12, 13):   # frames keep being answered, with the old vocabulary
            result = answered(probe, node, stamp)
            assert result.vocabulary_version == old and len(result.class_names) == 2
        probe.wait_for(lambda: statuses(probe)[-1].encoding_progress > 0, node=node,
                       what="encoding progress in status")
        assert statuses(probe)[-1].vocabulary_state == "encoding"
        # A newer request supersedes the pending one; the service answers once it is active.
        client = probe.node.create_client(SetVocabulary, "/ovseg/set_vocabulary")
        assert client.wait_for_service(timeout_sec=20)
        reply = call(probe, node, client, text="bus; grass [stuff]")
        assert reply.success and reply.version == old + 1, reply.message
        assert answered(probe, node, 14).class_names == ["bus", "grass"]
        probe.wait_for(lambda: statuses(probe)[-1].vocabulary_state == "ready", node=node,
                       what="status to report ready")
        assert "abandoned" in node.output()
        assert [len(m.classes) for m in announced] in ([2, 2], [2]) and announced[-1].version == old + 1
    finally:
        probe.close()
        node.stop()


def test_encoded_vocabularies_persist_on_disk_for_the_next_process(tmp_path):
    vocabulary = "; ".join(f"thing {i}" for i in range(40))
    cache = tmp_path / "shared-cache"
    for run in ("first", "second"):
        node, probe = start(tmp_path / run, vocabulary=vocabulary, embedding_cache_dir=str(cache))
        try:
            wait_state(probe, node, "active")
            how = "from the embedding cache" if run == "second" else "encoded in"
            assert f"40 classes, {how}" in node.output(), node.output()
        finally:
            probe.close()
            node.stop()
    assert len(list(cache.glob("*.safetensors"))) == 1


# ---- smaller items (5) ---------------------------------------------------------------

def test_help_prints_the_parameters_and_starts_nothing():
    run = subprocess.run([sys.executable, "-m", "ovseg_ros.node", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert "usage: ovseg-node" in run.stdout and "camera_names" in run.stdout
    assert "configured" not in run.stdout + run.stderr


def test_unconfigured_status_empty_camera_names_and_vocabulary_rules(tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from ovseg.msg import LabelSpace, SemanticInfo
    from ovseg_ros.convert import label_array
    space = tmp_path / "labels.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    space.write_text("unknown_id: 0\nvoid_id: 99\nlabels:\n  - {name: automobile, id: 13, color: [0, 0, 142]}\n"
                     "  - {name: sky, id: 5, color: [70, 130, 180]}\n")
    node, probe = start(tmp_path, autostart=False, camera_names=[], label_space=str(space),
                        vocabulary="car, automobile; road [stuff]")
    try:
        probe.subscribe(Image, "/ovseg/cam/semantic", RELIABLE)
        probe.subscribe(SemanticInfo, "/ovseg/cam/semantic_info", RELIABLE)
        wait_state(probe, node, "unconfigured")
        client = probe.node.create_client(ChangeState, "/ovseg/change_state")
        assert client.wait_for_service(timeout_sec=30)
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
            probe.wait_for(future.done, timeout=120, what="the transition", node=node)
            assert future.result().success, node.output()     # camera_names: [] is "from the topic"
        wait_state(probe, node, "active")
        version = answered(probe, node, 5).vocabulary_version
        vocab = probe.node.create_client(SetVocabulary, "/ovseg/set_vocabulary")
        assert vocab.wait_for_service(timeout_sec=20)
        same = call(probe, node, vocab, text="car, automobile; road [stuff]")   # the active one again
        assert same.success and same.version == version, same.message
        clash = call(probe, node, vocab, text="car; person, car")       # a synonym naming another class
        assert not clash.success and "car" in clash.message and clash.version == version
        assert answered(probe, node, 6).vocabulary_version == version
        # The label space: latched, and the semantic image holds its fixed ids.
        latched = []
        probe.node.create_subscription(LabelSpace, "/ovseg/label_space", latched.append, LATCHED)
        probe.wait_for(lambda: latched, what="the latched label space", node=node)
        assert list(latched[0].ids) == [13, 5] and latched[0].void_id == 99
        probe.wait_for(lambda: len(probe.messages("/ovseg/cam/semantic_info")) >= 2, node=node,
                       what="semantic_info")
        assert list(probe.messages("/ovseg/cam/semantic_info")[-1].class_ids) == [13, 0]   # car by synonym
        assert set(np.unique(label_array(probe.messages("/ovseg/cam/semantic")[-1]))) <= {13, 0, 99}
        assert node.alive()
    finally:
        probe.close()
        node.stop()


def test_compressed_transport_and_outputs_in_the_camera_namespace(tmp_path):
    import cv2
    from sensor_msgs.msg import CompressedImage
    fresh_domain()
    node = NodeProcess(tmp_path, **{**SMALL, "cameras": ["/front/image_raw"], "transport": ["compressed"],
                                    "output_layout": "camera"})
    probe = Probe()
    try:
        jpeg = probe.node.create_publisher(CompressedImage, "/front/image_raw/compressed", RELIABLE)
        probe.subscribe(PanopticResult, "/front/ovseg/panoptic", RELIABLE)
        probe.subscribe(Status, "/ovseg/status")
        wait_state(probe, node, "active")
        msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8))[1].tobytes())
        msg.header.stamp.sec = 7
        jpeg.publish(msg)
        probe.wait_for(lambda: probe.messages("/front/ovseg/panoptic"), what="a result beside the camera",
                       node=node)
        assert probe.messages("/front/ovseg/panoptic")[0].id_image.width == 30
        assert statuses(probe)[-1].cameras[0].camera == "/front/image_raw/compressed"
    finally:
        probe.close()
        node.stop()


def test_two_cameras_at_1920x1080_get_one_result_per_frame(tmp_path):
    """Through the shipped DDS profile (tools/ros_env.sh and the harness set it)."""
    assert os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "").endswith("fastdds_large_frames.xml")
    cameras = ["/left/image_raw", "/right/image_raw"]
    fresh_domain()
    node = NodeProcess(tmp_path, **{**SMALL, "cameras": cameras, "publish_overlay": False})
    probe = Probe()
    try:
        pubs = [probe.node.create_publisher(Image, t, RELIABLE) for t in cameras]
        outs = ["/ovseg/left/panoptic", "/ovseg/right/panoptic"]
        for out in outs:
            probe.subscribe(PanopticResult, out, RELIABLE)
        probe.subscribe(Status, "/ovseg/status")
        wait_state(probe, node, "active")
        time.sleep(0.5)
        for i in range(3):
            for pub in pubs:
                pub.publish(image_msg(100 + i, 1080, 1920))
            probe.wait_for(lambda: all(len(probe.messages(o)) == i + 1 for o in outs), timeout=120,
                           what=f"the results of round {i}", node=node)
        for out in outs:
            results = probe.messages(out)
            assert [stamp_ns(m.header) for m in results] == [100, 101, 102]
            assert {(m.id_image.width, m.id_image.height) for m in results} == {(1920, 1080)}
        cams = statuses(probe)[-1].cameras
        assert all(c.errors == 0 for c in cams)
    finally:
        probe.close()
        node.stop()


def test_the_node_honours_use_sim_time(tmp_path):
    """The launch file's use_sim_time:=true: the node's clock (status stamps) follows /clock."""
    from rosgraph_msgs.msg import Clock
    node, probe = start(tmp_path, use_sim_time=True, autostart=False)
    try:
        clock = probe.node.create_publisher(Clock, "/clock", 10)
        sim = Clock()
        sim.clock.sec = 4242

        def ticked():
            clock.publish(sim)
            return any(m.header.stamp.sec == 4242 for m in statuses(probe))
        probe.wait_for(ticked, timeout=120, what="a status stamped with the simulated time", node=node)
    finally:
        probe.close()
        node.stop()
