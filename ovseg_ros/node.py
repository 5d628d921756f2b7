"""The segmentation node: ROS messages in, `ovseg_core.Segmenter` in the middle, ROS
messages out. All computation is in ovseg_core; this file only moves data and keeps
counts.

Threads: the executor runs subscriptions, the service and timers; each image callback
only stores the message in its camera's one-frame slot (a newer frame replaces an
unprocessed one and counts as dropped). One worker thread takes every waiting slot,
decodes, segments them in one batched forward and publishes.
"""
from __future__ import annotations

import collections
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, List, Optional

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import ColorRGBA, Header, String

from ovseg.msg import (CameraStatus, LabelSpace, PanopticResult, Segment, SemanticInfo, Status, Vocabulary,
                       VocabularyClass)
from ovseg.srv import SetVocabulary
from ovseg_core.profiling import STAGES
from ovseg_core.visualize import overlay, palette
from ovseg_core.vocabulary import Vocabulary as CoreVocabulary

from .convert import LabelSpace as LabelSpaceFile
from .convert import (OUTPUT_LAYOUTS, BadImage, MessageTypes, camera_info_topic, camera_name,  # noqa: F401
                      depth_array, header_stamp_ns,
                      output_topic, panoptic_message, rclpy_buffer, rgb_image, semantic_image, semantic_labels,
                      semantic_void, to_rgb, vocabulary_changes, vocabulary_from_request, vocabulary_message)
from .mapping import (INSTANCE_PACKINGS, MAPPER_OUTPUTS, class_mask, detections_2d, detections_3d,
                      instance_numbers, label_colors, label_info, missing_packages, pack_instances, point_cloud,
                      typed_image)

TYPES = MessageTypes(Image=Image, RegionOfInterest=RegionOfInterest, Segment=Segment,
                     PanopticResult=PanopticResult, VocabularyClass=VocabularyClass,
                     Vocabulary=Vocabulary, buffer=rclpy_buffer)

# name -> (default, description). Every knob is a parameter; config/ovseg_node.yaml
# documents the same set (a test keeps the two in step).
PARAMETERS = {
    "preset": ("tiny", "model preset (config/presets/NAME.yaml or a path to a YAML file)"),
    "weights": ("", "our trained delta (.safetensors) on top of the preset; empty: the preset's"),
    "device": ("auto", "auto (cuda if present), cpu, cuda, cuda:N"),
    "precision": ("auto", "auto (bf16/fp16 autocast on cuda, fp32 on cpu), fp32, bf16, fp16"),
    "runtime": ("", "what runs the networks: torch or onnxruntime (an `ovseg export` folder, onnx_dir); "
                    "empty: the preset's"),
    "onnx_dir": ("", "the `ovseg export` folder runtime onnxruntime serves; empty: the preset's onnx.dir"),
    "seed": (0, "torch seed before building, so random-weight presets are reproducible"),
    "input_size": (0, "model input size in pixels for both stages (bounds the longer side; the aspect "
                      "ratio is kept unless the preset says resize: square); 0: the preset's"),
    "object_mask_threshold": (-1.0, "drop proposals below this class score; < 0: the preset's"),
    "overlap_threshold": (-1.0, "drop segments keeping less of their mask; < 0: the preset's"),
    "split_components": (-1.0, "split a proposal into its connected parts of at least this fraction of "
                               "its largest; 0: off; < 0: the preset's"),
    "cameras": (["/camera/image_raw"],
                "input topics; a topic ending in /compressed is a sensor_msgs/CompressedImage"),
    "camera_names": ([""], "output names per camera (outputs go to ~/NAME/...); empty: from the topic"),
    "transport": (["raw"], "per camera (or one for all): raw (sensor_msgs/Image on the topic) or "
                           "compressed (CompressedImage on TOPIC/compressed), image_transport's names"),
    "output_layout": ("node", "node: outputs at ~/NAME/KIND (/ovseg/front/panoptic); camera: beside "
                              "the camera, CAMERA_NAMESPACE/ovseg/KIND (/front/ovseg/panoptic)"),
    "input_qos": ("sensor_data", "sensor_data (best effort, depth 5), reliable or best_effort"),
    "input_qos_depth": (1, "history depth of the camera subscriptions for reliable/best_effort"),
    "max_batch": (4, "most frames (one per camera) segmented in one forward"),
    "publish_panoptic": (True, "publish ~/NAME/panoptic (ovseg/PanopticResult)"),
    "publish_semantic": (True, "publish ~/NAME/semantic (class index image, mono8/mono16)"),
    "publish_overlay": (True, "publish ~/NAME/overlay (rgb8) while someone subscribes"),
    "overlay_min_size": (0, "draw overlays of smaller cameras upscaled to this longer side in pixels, "
                            "so their labels are legible; 0: at the camera's size (matches camera_info)"),
    "vocabulary": ("car; person, pedestrian; bicycle; road [stuff]; sidewalk [stuff]; "
                   "building [stuff]; vegetation [stuff]; sky [stuff]",
                   "initial vocabulary: ';' between classes, ',' between synonyms, [stuff] tag"),
    "embedding_cache_dir": ("~/.cache/ovseg/embeddings",
                            "folder of encoded vocabularies (keyed by model and text) shared by "
                            "restarts and other nodes; empty: keep them in memory only"),
    "label_space": ("", "YAML file of fixed label ids (name -> id, color; unknown_id, void_id) for "
                        "the semantic image, published latched on ~/label_space; empty: class indices"),
    "camera_info": (True, "subscribe to each camera's camera_info (beside its image topic) and "
                          "republish the latest with each result's stamp at ~/NAME/camera_info"),
    # --- for 3D mappers (each output off unless asked for) ---
    "depth_topics": ([""], "per camera: its depth image registered to the colour camera (16UC1 mm or 32FC1 m, "
                           "exactly the colour image's size) with camera_info beside it, paired with results by "
                           "stamp (message_filters ApproximateTime); empty: no 3D outputs"),
    "depth_slop": (0.05, "most seconds between a frame's and a depth image's stamps that still pair"),
    "depth_queue": (30, "results and depth images kept waiting for their pair (cover the model's latency "
                        "at the depth rate)"),
    "publish_points": (False, "publish ~/NAME/points (sensor_msgs/PointCloud2: x y z rgba label instance, "
                              "in the image's frame); needs depth"),
    "points_organized": (False, "true: organized clouds (the image grid, NaN where depth is missing); "
                                "false: valid points only"),
    "points_stride": (1, "use every Nth pixel along rows and columns for points and objects (bandwidth)"),
    "publish_objects": (False, "publish ~/NAME/objects (vision_msgs/Detection3DArray, one per thing with "
                               "depth: centroid, robust box); needs depth"),
    "publish_detections": (False, "publish ~/NAME/detections (vision_msgs/Detection2DArray, one per segment)"),
    "publish_label_info": (False, "publish ~/NAME/label_info (vision_msgs/LabelInfo, latched): what the "
                                  "label values mean"),
    "publish_semantic_color": (False, "publish ~/NAME/semantic_color (rgb8, each label's exact colour)"),
    "publish_instance": (False, "publish ~/NAME/instance (32SC1: label and instance packed as instance_packing)"),
    "instance_packing": ("class_instance", "class_instance: (label << 16) | instance (semantic_inference); "
                                           "instance_class: (instance << 16) | label (SemanticKITTI)"),
    "mask_classes": ([""], "classes (names or synonyms) masked in ~/NAME/mask (mono8, 255 = masked) with "
                           "~/NAME/mask/camera_info, for nvblox; empty: no mask"),
    "stall_timeout": (5.0, "seconds a camera may have frames waiting without a result before "
                           "/diagnostics warns"),
    "encoder_niceness": (10, "added to the vocabulary encoder thread's nice value (Linux; its torch "
                             "threads inherit it) so frames win the CPU while it encodes; 0: equal"),
    "status_period": (1.0, "seconds between ~/status messages"),
    "autostart": (True, "configure and activate at start (no lifecycle manager needed)"),
}

_RATE_WINDOW_S = 5.0
# A frame's receive -> publish time, stage by stage: waiting for the worker, decoding the
# message, the library's stages (ovseg_core.profiling.STAGES), converting and publishing.
NODE_STAGES = ("queue", "decode") + STAGES + ("publish",)
_LATENCY_WINDOW = 200
@dataclass
class Camera:
    """One input stream: its newest waiting frame, its publishers and its counters."""

    name: str
    topic: str
    compressed: bool
    pending: Optional[tuple] = None        # (msg, receive time)
    received: int = 0
    processed: int = 0
    dropped: int = 0
    errors: int = 0
    last_error: str = ""
    last_stamp_ns: int = -1
    time_jumps: int = 0
    reported_jumps: int = 0                # time jumps already warned about on /diagnostics
    last_done: float = 0.0                 # monotonic time of its last result
    camera_info: object = None             # the latest sensor_msgs/CameraInfo
    info_subscription: object = None
    arrivals: Deque[float] = field(default_factory=collections.deque)
    completions: Deque[float] = field(default_factory=collections.deque)
    latencies_ms: Deque[float] = field(default_factory=lambda: collections.deque(maxlen=_LATENCY_WINDOW))
    # per stage (NODE_STAGES), the recent frames' milliseconds: where receive -> publish goes
    stage_ms: Dict[str, Deque[float]] = field(default_factory=dict)
    subscription: object = None
    outputs: Dict[str, str] = field(default_factory=dict)    # kind -> topic
    publishers: Dict[str, object] = field(default_factory=dict)
    # depth for the 3D outputs: its topic, the message_filters pairing, counts for diagnostics
    depth_topic: str = ""
    depth_filters: list = field(default_factory=list)        # message_filters Subscribers
    segmented: object = None                               # message_filters input of results
    depth_received: int = 0
    depth_info_received: int = 0
    depth_paired: int = 0
    depth_errors: int = 0
    reported_depth_errors: int = 0
    label_info_version: int = -1

    def rate(self, times: Deque[float], now: float) -> float:
        while times and times[0] < now - _RATE_WINDOW_S:
            times.popleft()
        return len(times) / _RATE_WINDOW_S


class Superseded(Exception):
    """Raised from the encode progress hook: a newer vocabulary request replaced this one."""


@dataclass
class VocabularyRequest:
    """A validated vocabulary waiting for (or in) the encoder thread, and who to tell."""

    vocabulary: CoreVocabulary
    waiters: list = field(default_factory=list)   # callables (ok, message, version)
    cancelled: bool = False                       # superseded or dropped: stop encoding it

    def answer(self, ok: bool, message: str, version: int):
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter(ok, message, version)


class SegmentationNode(LifecycleNode):
    """Entities per lifecycle state (every transition leaves exactly these):
    always: ~/status (published in every state) and the lifecycle/parameter services;
    inactive: + ~/vocabulary, the vocabulary inputs and ~/set_vocabulary, the outputs;
    active: + the camera subscriptions and the worker thread."""

    def __init__(self, name: str = "ovseg", **kwargs):
        super().__init__(name, **kwargs)
        for key, (default, text) in PARAMETERS.items():
            self.declare_parameter(key, default, ParameterDescriptor(description=text))
        self.segmenter = None
        self.cameras: List[Camera] = []
        self._cond = threading.Condition()       # guards camera slots and counters
        self._vocab_lock = threading.Lock()      # guards (vocabulary, version)
        self._vocabulary: Optional[CoreVocabulary] = None
        self._version = 0
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self._state = "unconfigured"
        self._vocab_pub = None
        self._vocab_entities: list = []
        self._label_space: Optional[LabelSpaceFile] = None
        self._label_space_pub = None
        self._class_ids = None                   # vocabulary index -> label-space id
        # The encoder thread: one request in progress, at most one waiting (the newest).
        self._encoder: Optional[threading.Thread] = None
        self._encoder_cond = threading.Condition()
        self._encoder_running = False
        self._next_request: Optional[VocabularyRequest] = None
        self._encoding: Optional[VocabularyRequest] = None
        self._encoding_progress = 0.0
        # ~/set_vocabulary answers when its vocabulary is active, so its callback waits (in a
        # thread of the multi-threaded executor) while everything else goes on.
        self._service_group = ReentrantCallbackGroup()
        self._status_pub = self.create_publisher(Status, "~/status", 10)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._status_timer = self.create_timer(float(self.param("status_period")), self._publish_status)
        self.get_logger().info(f"ovseg_ros from {Path(__file__).resolve().parent}")

    # ---- parameters -------------------------------------------------------------
    def param(self, key):
        try:
            value = self.get_parameter(key).value
        except ParameterUninitializedException:   # YAML's [] carries no type: an empty list
            value = None
        return [] if value is None and isinstance(PARAMETERS[key][0], list) else value

    def _overrides(self) -> dict:
        out = {}
        if self.param("input_size") > 0:
            out["clip.input_size"] = out["proposals.input_size"] = int(self.param("input_size"))
        for key in ("object_mask_threshold", "overlap_threshold", "split_components"):
            if self.param(key) >= 0:
                out[f"inference.{key}"] = float(self.param(key))
        if self.param("precision") != "auto":
            out["precision"] = self.param("precision")
        if self.param("runtime"):
            out["runtime"] = self.param("runtime")
        if self.param("onnx_dir"):
            out["onnx.dir"] = self.param("onnx_dir")
        return out

    def _input_qos(self) -> QoSProfile:
        kind, depth = self.param("input_qos"), max(1, int(self.param("input_qos_depth")))
        if kind == "sensor_data":
            return qos_profile_sensor_data
        policies = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
        if kind not in policies:
            raise ValueError(f"input_qos {kind!r} is not one of sensor_data, reliable, best_effort")
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policies[kind])

    # ---- lifecycle --------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model, set up the vocabulary and the outputs. A failure leaves nothing
        behind (the node stays unconfigured and can be configured again)."""
        try:
            import torch

            from ovseg_core.build import build_segmenter
            torch.manual_seed(int(self.param("seed")))
            weights = self.param("weights") or None
            self.segmenter = build_segmenter(self.param("preset"), weights=weights,
                                             device=self.param("device"), overrides=self._overrides())
            cache_dir = self.param("embedding_cache_dir")
            self.segmenter.text_encoder.disk_cache = Path(cache_dir).expanduser() if cache_dir else None
            self.cameras = self._make_cameras()
            self._check_mapper_outputs()
            path = self.param("label_space")
            self._label_space = LabelSpaceFile.load(Path(path).expanduser()) if path else None
            vocab = CoreVocabulary.from_any(self.param("vocabulary"))
            _check_synonyms(vocab)
            started, source = time.monotonic(), self._source(vocab)
            self.segmenter.encode_vocabulary(vocab)
        except Exception as e:  # a wrong preset/weights/device/vocabulary must not kill the process
            self.get_logger().error(f"configure failed: {e}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._vocab_pub = self.create_publisher(Vocabulary, "~/vocabulary", latched)
        if self._label_space is not None:
            space = self._label_space
            self._label_space_pub = self.create_publisher(LabelSpace, "~/label_space", latched)
            self._label_space_pub.publish(LabelSpace(
                header=Header(stamp=self.get_clock().now().to_msg()), names=space.names, ids=space.ids,
                colors=[ColorRGBA(r=r / 255, g=g / 255, b=b / 255, a=1.0) for r, g, b in space.colors],
                unknown_id=space.unknown_id, void_id=space.void_id))
        self._vocab_entities = [
            self.create_subscription(String, "~/vocabulary_text", self._on_vocabulary_text, 10),
            self.create_subscription(Vocabulary, "~/vocabulary_request", self._on_vocabulary_msg, 10),
            self.create_service(SetVocabulary, "~/set_vocabulary", self._on_set_vocabulary,
                                callback_group=self._service_group),
        ]
        kinds = {"panoptic": PanopticResult, "semantic": Image, "semantic_info": SemanticInfo,
                 "overlay": Image}
        for cam in self.cameras:
            for kind, msg_type in kinds.items():
                if self.param("publish_" + kind.split("_")[0]):
                    cam.publishers[kind] = self.create_publisher(msg_type, cam.outputs[kind], 10)
            if self.param("camera_info"):
                cam.publishers["camera_info"] = self.create_publisher(CameraInfo, cam.outputs["camera_info"], 10)
            self._create_mapper_publishers(cam, latched)
        self._activate_vocabulary(vocab, f"{source} in {time.monotonic() - started:.1f} s")
        self._encoder_running = True
        self._encoder = threading.Thread(target=self._encode_loop, name="ovseg-encoder", daemon=True)
        self._encoder.start()
        self._state = "inactive"
        self.get_logger().info(
            f"configured: preset {self.segmenter.name} on {self.segmenter.device}, cameras "
            + ", ".join(f"{c.topic} -> {c.outputs['panoptic'].rsplit('/', 1)[0]}" for c in self.cameras))
        return TransitionCallbackReturn.SUCCESS

    def _make_cameras(self) -> List[Camera]:
        topics = [t for t in self.param("cameras") if t]
        if not topics:
            raise ValueError("parameter 'cameras' is empty; list at least one image topic")
        names = [n for n in self.param("camera_names") if n]
        if names and len(names) != len(topics):
            raise ValueError(f"camera_names has {len(names)} entries for {len(topics)} cameras; "
                             f"give one per camera or leave it empty")
        names = names or [camera_name(t, i) for i, t in enumerate(topics)]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names {names} collide; set camera_names explicitly")
        transports = [t for t in self.param("transport") if t] or ["raw"]
        if len(transports) == 1:
            transports = transports * len(topics)
        if len(transports) != len(topics) or set(transports) - {"raw", "compressed"}:
            raise ValueError(f"transport {transports} must be raw or compressed, one for all cameras "
                             f"or one per camera ({len(topics)})")
        depths = [t for t in self.param("depth_topics")]
        depths = [] if not any(depths) else depths
        if depths and len(depths) != len(topics):
            raise ValueError(f"depth_topics has {len(depths)} entries for {len(topics)} cameras; give one per "
                             f"camera ('' for a camera without depth) or leave it empty")
        depths = depths or [""] * len(topics)
        layout = self.param("output_layout")
        cameras = []
        for name, topic, transport, depth in zip(names, topics, transports, depths):
            # image_transport's convention: the compressed transport of BASE is BASE/compressed.
            compressed = transport == "compressed" or topic.rstrip("/").endswith("/compressed")
            if compressed and not topic.rstrip("/").endswith("/compressed"):
                topic = topic.rstrip("/") + "/compressed"
            outputs = {kind: output_topic(kind, topic, name, layout)
                       for kind in ("panoptic", "semantic", "semantic_info", "overlay", "camera_info") + MAPPER_OUTPUTS}
            cameras.append(Camera(name, topic, compressed, outputs=outputs, depth_topic=depth))
        return cameras

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Move the model to its device and start taking frames."""
        from ovseg_core.build import resolve_device
        self.segmenter.to(resolve_device(self.param("device")))
        qos = self._input_qos()
        for cam in self.cameras:
            msg_type = CompressedImage if cam.compressed else Image
            cam.subscription = self.create_subscription(
                msg_type, cam.topic, lambda msg, cam=cam: self._on_image(cam, msg), qos)
            if self.param("camera_info") or "mask" in cam.publishers:   # image_transport's convention
                cam.info_subscription = self.create_subscription(
                    CameraInfo, camera_info_topic(cam.topic), lambda msg, cam=cam: setattr(cam, "camera_info", msg),
                    qos)
            self._subscribe_depth(cam, qos)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="ovseg-worker", daemon=True)
        self._worker.start()
        self._state = "active"
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames and give the GPU memory back (weights stay in RAM)."""
        self._stop_inputs()
        if self.segmenter is not None and self.segmenter.device.type == "cuda":
            import torch
            self.segmenter.to("cpu")
            torch.cuda.empty_cache()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: what the active and inactive states added goes; ~/status stays
        (reporting "finalized") until the process ends."""
        self._stop_inputs()
        self._release()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_inputs(self):
        """Undo activate: the worker and the camera subscriptions."""
        self._stop_worker()
        for cam in self.cameras:
            for sub in (cam.subscription, cam.info_subscription, *(f.sub for f in cam.depth_filters)):
                if sub is not None:
                    self.destroy_subscription(sub)
            cam.subscription = cam.info_subscription = None
            cam.depth_filters, cam.segmented = [], None
            cam.pending = None

    def _release(self):
        """Undo configure: every entity it made, the encoder thread and the model."""
        self._stop_encoder()
        for entity in self._vocab_entities:
            (self.destroy_service if hasattr(entity, "srv_type") else self.destroy_subscription)(entity)
        self._vocab_entities = []
        for pub in (self._vocab_pub, self._label_space_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._vocab_pub = self._label_space_pub = None
        self._label_space = None
        with self._cond:
            for cam in self.cameras:
                for pub in cam.publishers.values():
                    self.destroy_publisher(pub)
                cam.publishers = {}
            self.cameras = []
        with self._vocab_lock:
            self._vocabulary = None
        self.segmenter = None
        self._state = "unconfigured"

    def _stop_worker(self):
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def _stop_encoder(self):
        with self._encoder_cond:
            self._encoder_running = False
            dropped = [r for r in (self._next_request, self._encoding) if r is not None]
            self._next_request = None
            for request in dropped:
                request.cancelled = True
            self._encoder_cond.notify_all()
        for request in dropped:
            request.answer(False, "vocabulary dropped: the node left the configured states",
                           self._version)
        if self._encoder is not None:
            self._encoder.join()
            self._encoder = None

    # ---- vocabulary -------------------------------------------------------------
    def request_vocabulary(self, vocabulary, waiter=None):
        """Validate now; encode in the encoder thread (frames keep using the active
        vocabulary meanwhile), then swap. A request waiting or being encoded is superseded
        by a newer different one. ``waiter(ok, message, version)`` is called once, from
        this thread (refused, unchanged) or from the encoder thread."""
        waiter = waiter or (lambda *a: None)
        try:
            vocab = CoreVocabulary.from_any(vocabulary)
            _check_synonyms(vocab)
        except (ValueError, TypeError) as e:
            waiter(False, f"vocabulary refused, keeping version {self._version}: {e}", self._version)
            return
        superseded = []
        with self._encoder_cond:
            if not self._encoder_running:
                waiter(False, "the node is not configured; configure it first", self._version)
                return
            if not vocabulary_changes(self._vocabulary, vocab):
                # The active one again: nothing to encode, and any pending change is withdrawn.
                superseded = [r for r in (self._next_request, self._encoding) if r is not None]
                self._next_request = None
                unchanged = True
                for request in superseded:
                    request.cancelled = True
            else:
                unchanged = False
                for request in (self._next_request, self._encoding):
                    if request is not None and not request.cancelled and request.vocabulary == vocab:
                        request.waiters.append(waiter)   # the same change twice: one encode
                        return
                superseded = [r for r in (self._next_request, self._encoding) if r is not None]
                for request in superseded:
                    request.cancelled = True
                self._next_request = VocabularyRequest(vocab, [waiter])
                self._encoder_cond.notify_all()
        for request in superseded:
            request.answer(False, f"superseded by a newer vocabulary request; version "
                                  f"{self._version} stays active until that one is ready", self._version)
        if unchanged:
            waiter(True, f"vocabulary unchanged (version {self._version})", self._version)

    def set_vocabulary(self, vocabulary, timeout: Optional[float] = None) -> tuple:
        """Blocking form of request_vocabulary (for code outside the executor, e.g. tests
        driving the node in-process). Returns (ok, message)."""
        done, answer = threading.Event(), []
        self.request_vocabulary(vocabulary, lambda *a: (answer.append(a), done.set()))
        if not done.wait(timeout):
            return False, "timed out waiting for the vocabulary to be encoded"
        return answer[0][:2]

    def _encode_loop(self):
        niceness = int(self.param("encoder_niceness"))
        if niceness > 0 and hasattr(os, "setpriority"):   # per thread on Linux, before torch's threads
            tid = threading.get_native_id()
            try:
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
            except OSError as e:
                self.get_logger().warning(f"could not lower the encoder thread's priority: {e}")
        while True:
            with self._encoder_cond:
                while self._encoder_running and self._next_request is None:
                    self._encoder_cond.wait(0.5)
                if not self._encoder_running:
                    return
                request, self._next_request = self._next_request, None
                self._encoding, self._encoding_progress = request, 0.0
            vocab = request.vocabulary
            started, source = time.monotonic(), self._source(vocab)

            def progress(done, total, request=request):
                self._encoding_progress = done / max(1, total)
                if request.cancelled:
                    raise Superseded()
            try:
                self.segmenter.text_encoder.encode(vocab, progress=progress)
            except Superseded:
                self.get_logger().info(f"encoding of {len(vocab)} classes abandoned: superseded")
                with self._encoder_cond:
                    if self._encoding is request:
                        self._encoding = None
                continue
            except Exception as e:
                with self._encoder_cond:
                    self._encoding = None
                message = f"vocabulary refused, keeping version {self._version}: encoding failed: " \
                          f"{type(e).__name__}: {e}"
                self.get_logger().error(message)
                request.answer(False, message, self._version)
                continue
            with self._encoder_cond:
                if self._encoding is request:
                    self._encoding = None
                if request.cancelled:   # superseded after its last chunk
                    continue
                version = self._activate_vocabulary(vocab, f"{source} in {time.monotonic() - started:.1f} s")
            request.answer(True, f"vocabulary version {version}: {len(vocab)} classes", version)

    def _source(self, vocab: CoreVocabulary) -> str:
        return "from the embedding cache" if self.segmenter.text_encoder.cached(vocab) else "encoded"

    def _activate_vocabulary(self, vocab: CoreVocabulary, how: str) -> int:
        """Swap (frames in flight finish with the old one) and announce it (latched)."""
        class_ids = self._label_space.class_ids(vocab) if self._label_space is not None else None
        with self._vocab_lock:
            self._version += 1
            self._vocabulary, version, self._class_ids = vocab, self._version, class_ids
        header = Header(stamp=self.get_clock().now().to_msg())
        self._vocab_pub.publish(vocabulary_message(vocab, version, header, TYPES))
        self.get_logger().info(f"vocabulary version {version}: {len(vocab)} classes, {how} "
                               f"({vocab.to_text()[:200]})")
        return version

    def _log_refusal(self, ok, message, version):
        if not ok:
            self.get_logger().error(message)

    def _on_vocabulary_text(self, msg: String):
        self.request_vocabulary(msg.data, self._log_refusal)

    def _on_vocabulary_msg(self, msg: Vocabulary):
        self._on_request("", msg.classes, self._log_refusal)

    def _on_request(self, text: str, classes, waiter):
        try:
            vocab = vocabulary_from_request(text, classes)
        except (ValueError, TypeError) as e:
            waiter(False, f"vocabulary refused, keeping version {self._version}: {e}", self._version)
            return
        self.request_vocabulary(vocab, waiter)

    def _on_set_vocabulary(self, request, response):
        """Answers when the vocabulary is active (or refused, or superseded); it waits in
        its own executor thread, so frames, status and other requests go on meanwhile."""
        done, answer = threading.Event(), []
        self._on_request(request.text, request.classes, lambda *a: (answer.append(a), done.set()))
        done.wait()
        ok, message, version = answer[0]
        if not ok:
            self.get_logger().error(message)
        response.success, response.message, response.version = ok, message, version
        return response

    # ---- frames -----------------------------------------------------------------
    def _on_image(self, cam: Camera, msg):
        now = time.monotonic()
        with self._cond:
            cam.received += 1
            cam.arrivals.append(now)
            if cam.pending is not None:
                cam.dropped += 1
            cam.pending = (msg, now)
            self._cond.notify()

    def _take(self) -> list:
        """Waiting frames, oldest first, at most max_batch (the rest wait their turn)."""
        with self._cond:
            while self._running and not any(c.pending for c in self.cameras):
                self._cond.wait(0.5)
            if not self._running:
                return []
            waiting = sorted((c for c in self.cameras if c.pending), key=lambda c: c.pending[1])
            batch = []
            for cam in waiting[:max(1, int(self.param("max_batch")))]:
                batch.append((cam, *cam.pending))
                cam.pending = None
            return batch

    def _fail(self, cam: Camera, text: str):
        with self._cond:
            cam.errors += 1
            cam.last_error = text
        self.get_logger().warning(f"{cam.topic}: {text}", throttle_duration_sec=5.0)

    def _time_jump(self, cam: Camera, stamp: int):
        """Stamps went backwards: a looping bag, a simulator reset or a restarted driver.
        Forget the camera's last stamp (so its frames flow again) and say so once."""
        with self._cond:
            last, cam.last_stamp_ns = cam.last_stamp_ns, -1
            cam.time_jumps += 1
        self.get_logger().warning(
            f"{cam.topic}: stamp went back {(last - stamp) / 1e9:.3f} s (from {last} to {stamp} ns: "
            f"bag loop, simulator reset or restarted driver); resetting this camera's state")

    def _work(self):
        while self._running:
            frames = []
            for cam, msg, received in self._take():
                taken = time.monotonic()
                stamp = header_stamp_ns(msg.header)
                if stamp < cam.last_stamp_ns:
                    self._time_jump(cam, stamp)
                try:
                    image = to_rgb(msg)
                    stages = {"queue": taken - received, "decode": time.monotonic() - taken}
                    frames.append((cam, msg, received, image, stages))
                except BadImage as e:
                    self._fail(cam, str(e))
                except Exception as e:  # OpenCV on odd input (e.g. a 1-pixel Bayer image)
                    self._fail(cam, f"could not decode a {getattr(msg, 'encoding', 'compressed')} "
                                    f"image: {type(e).__name__}: {e}")
            if not frames:
                continue
            with self._vocab_lock:
                vocab, version, class_ids = self._vocabulary, self._version, self._class_ids
            try:
                results = self.segmenter([f[3] for f in frames], vocab, vocabulary_version=version)
                library = dict(getattr(self.segmenter, "last_timings", {}))   # per call, shared by its frames
            except Exception as e:  # e.g. CUDA out of memory on a huge frame: count, go on
                for cam, *_ in frames:
                    self._fail(cam, f"segmentation failed: {type(e).__name__}: {e}")
                continue
            for (cam, msg, received, image, stages), result in zip(frames, results):
                publish_start = time.monotonic()
                try:
                    self._publish(cam, msg.header, image, result, class_ids)
                except Exception as e:  # e.g. the context shutting down mid-publish
                    self._fail(cam, f"publishing failed: {type(e).__name__}: {e}")
                    continue
                done = time.monotonic()
                stages.update(library, publish=done - publish_start)
                with self._cond:
                    cam.last_done = done
                    cam.processed += 1
                    cam.last_stamp_ns = header_stamp_ns(msg.header)
                    cam.completions.append(done)
                    cam.latencies_ms.append((done - received) * 1000.0)
                    for name, seconds in stages.items():
                        cam.stage_ms.setdefault(name, collections.deque(maxlen=_LATENCY_WINDOW)).append(
                            seconds * 1000.0)

    def _publish(self, cam: Camera, header, image: np.ndarray, result, class_ids=None):
        pubs = cam.publishers
        if "panoptic" in pubs:
            pubs["panoptic"].publish(panoptic_message(result, header, TYPES))
        # One label per pixel (label-space ids or class indices) for the semantic image and
        # every mapper output, computed once per frame.
        space = self._label_space if class_ids is not None else None
        void = space.void_id if space is not None else semantic_void(len(result.class_names))
        mapper = bool(set(pubs) & set(MAPPER_OUTPUTS)) or cam.segmented is not None
        labels = semantic_labels(result, class_ids if space else None, void) if "semantic" in pubs or mapper else None
        if "semantic" in pubs:
            if space is not None:
                pubs["semantic"].publish(semantic_image(result, header, TYPES, class_ids, void, space.wide, labels))
            else:
                pubs["semantic"].publish(semantic_image(result, header, TYPES, labels=labels))
            pubs["semantic_info"].publish(SemanticInfo(
                header=header, vocabulary_version=int(result.vocabulary_version or 0), void_label=void,
                class_names=list(result.class_names), class_ids=[int(i) for i in class_ids] if space else []))
        info = cam.camera_info
        if "camera_info" in pubs and info is not None:   # same stamp as the result, for projection
            info.header = header
            pubs["camera_info"].publish(info)
        if "overlay" in pubs and pubs["overlay"].get_subscription_count() > 0:
            drawn = overlay(image, result, min_size=int(self.param("overlay_min_size")))
            pubs["overlay"].publish(rgb_image(drawn, header, TYPES))
        if mapper:
            self._publish_mapper_outputs(cam, header, image, result, labels, space, void)

    # ---- outputs for 3D mappers ----------------------------------------------------
    def _mapper_wanted(self) -> List[str]:
        wanted = [kind for kind in MAPPER_OUTPUTS if kind not in ("mask", "mask/camera_info")
                  and self.param("publish_" + kind)]
        return wanted + (["mask"] if self._mask_classes() else [])

    def _mask_classes(self) -> List[str]:
        return [c for c in self.param("mask_classes") if c]

    def _check_mapper_outputs(self):
        """At configure: the outputs asked for can be served (or a clear reason why not)."""
        wanted = self._mapper_wanted()
        if self.param("instance_packing") not in INSTANCE_PACKINGS:
            raise ValueError(f"instance_packing {self.param('instance_packing')!r}: choose "
                             f"{' or '.join(INSTANCE_PACKINGS)}")
        if int(self.param("points_stride")) < 1 or int(self.param("depth_queue")) < 1:
            raise ValueError("points_stride and depth_queue must be at least 1")
        needs_depth = sorted({"points", "objects"} & set(wanted))
        if needs_depth and not any(c.depth_topic for c in self.cameras):
            raise ValueError(f"{', '.join('publish_' + k for k in needs_depth)} need depth: set depth_topics "
                             f"(per camera, a depth image registered to it)")
        missing = missing_packages(wanted + (["depth"] if needs_depth else []))
        if missing:
            raise ValueError(f"the outputs {', '.join(wanted)} need the ROS packages {', '.join(missing)}, which "
                             f"are not installed: install them with your ROS distribution (e.g. apt install "
                             f"ros-$ROS_DISTRO-vision-msgs ros-$ROS_DISTRO-message-filters) or turn those outputs off")

    def _create_mapper_publishers(self, cam: Camera, latched: QoSProfile):
        wanted = self._mapper_wanted()
        if not wanted:
            return
        from sensor_msgs.msg import PointCloud2
        types = {"points": PointCloud2, "semantic_color": Image, "instance": Image, "mask": Image}
        if {"objects", "detections", "label_info"} & set(wanted):
            from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
            types.update(objects=Detection3DArray, detections=Detection2DArray, label_info=LabelInfo)
        for kind in wanted:
            if kind in ("points", "objects") and not cam.depth_topic:
                continue
            cam.publishers[kind] = self.create_publisher(types[kind], cam.outputs[kind],
                                                         latched if kind == "label_info" else 10)
        if "mask" in wanted:
            cam.publishers["mask/camera_info"] = self.create_publisher(CameraInfo, cam.outputs["mask/camera_info"], 10)

    def _subscribe_depth(self, cam: Camera, qos):
        """Depth and its camera_info, paired with each result by stamp (ApproximateTime):
        a result waits in the synchronizer's queue for depth arriving after it, a depth
        image for a result arriving after it; the unpaired age out."""
        if not cam.depth_topic or not {"points", "objects"} & set(cam.publishers):
            return
        import message_filters
        depth = message_filters.Subscriber(self, Image, cam.depth_topic, qos_profile=qos)
        info = message_filters.Subscriber(self, CameraInfo, camera_info_topic(cam.depth_topic), qos_profile=qos)
        depth.registerCallback(lambda _msg, cam=cam: self._count(cam, "depth_received"))
        info.registerCallback(lambda _msg, cam=cam: self._count(cam, "depth_info_received"))
        cam.segmented = message_filters.SimpleFilter()
        sync = message_filters.ApproximateTimeSynchronizer(
            [cam.segmented, depth, info], int(self.param("depth_queue")), float(self.param("depth_slop")))
        sync.registerCallback(lambda frame, depth_msg, info_msg, cam=cam: self._on_depth(cam, frame, depth_msg, info_msg))
        cam.depth_filters = [depth, info]

    def _count(self, cam: Camera, counter: str):
        with self._cond:
            setattr(cam, counter, getattr(cam, counter) + 1)

    def _publish_mapper_outputs(self, cam: Camera, header, image: np.ndarray, result, labels: np.ndarray,
                                space, void: int):
        """``labels``, ``space`` and ``void`` as the semantic image has them (see _publish)."""
        pubs = cam.publishers
        if "detections" in pubs:
            pubs["detections"].publish(detections_2d(result, header))
        if "label_info" in pubs and cam.label_info_version != result.vocabulary_version:
            if space is not None:
                entries = [*zip(space.names, space.ids), ("unknown", space.unknown_id)]
            else:
                entries = list(zip(result.class_names, range(len(result.class_names))))
            entries += [("void", void)] if void not in [i for _, i in entries] else []
            threshold = self.segmenter.config.inference.object_mask_threshold if self.segmenter else 0.0
            pubs["label_info"].publish(label_info([n for n, _ in entries], [i for _, i in entries], header, threshold))
            cam.label_info_version = result.vocabulary_version
        if "semantic_color" in pubs:
            if space is not None:
                colors = dict(zip(space.ids, space.colors))
            else:
                colors = dict(enumerate(palette(len(result.class_names)).tolist()))
            pubs["semantic_color"].publish(typed_image(label_colors(labels, colors), "rgb8", header, TYPES))
        instances = instance_numbers(result) if "instance" in pubs or cam.segmented is not None else None
        if "instance" in pubs:
            packed = pack_instances(labels, instances, self.param("instance_packing"))
            pubs["instance"].publish(typed_image(packed, "32SC1", header, TYPES))
        if "mask" in pubs:
            with self._vocab_lock:
                vocab = self._vocabulary if self._version == result.vocabulary_version else None
            synonyms = [c.synonyms for c in vocab.classes] if vocab else [()] * len(result.class_names)
            mask = class_mask(result, self._mask_classes(), synonyms)
            pubs["mask"].publish(typed_image(mask, "mono8", header, TYPES))
            if cam.camera_info is not None:
                cam.camera_info.header = header
                pubs["mask/camera_info"].publish(cam.camera_info)
        if cam.segmented is not None:
            cam.segmented.signalMessage(SegmentedFrame(header, result, image, labels, instances))

    def _on_depth(self, cam: Camera, frame: "SegmentedFrame", depth_msg, info):
        """A result paired with its depth: the labeled cloud and the 3D objects. Runs inside
        message_filters' synchronizer (its lock held): it must never raise."""
        try:
            from ovseg_core.geometry import PinholeCamera, backproject, depth_in_meters, objects_3d
            # The library refuses depth without a valid pixel and any size mismatch (depth, image,
            # camera_info): each raises a ValueError that names it.
            depth = depth_in_meters(depth_array(depth_msg), depth_msg.encoding)
            camera = PinholeCamera.from_camera_info(info.width, info.height, list(info.k), list(info.d),
                                                    info.distortion_model)
            result, stride, pubs = frame.result, int(self.param("points_stride")), cam.publishers
            if "points" in pubs:
                points = backproject(depth, camera, frame.image, frame.labels, frame.instances, result.segment_map,
                                     stride=stride, organized=bool(self.param("points_organized")))
                pubs["points"].publish(point_cloud(points, frame.header))
            if "objects" in pubs:
                things = [s for s in result.segments if s.is_thing]
                objects = objects_3d(depth, camera, result.segment_map, [s.id for s in things],
                                     [s.class_index for s in things], stride=stride,
                                     bboxes=[s.bbox for s in things])
                pubs["objects"].publish(detections_3d(result, objects, frame.header))
            self._count(cam, "depth_paired")
        except (BadImage, ValueError) as e:
            self._depth_fail(cam, str(e))
        except Exception as e:  # noqa: BLE001 - raising here would leave the synchronizer locked
            self._depth_fail(cam, f"3D outputs failed: {type(e).__name__}: {e}")

    def _depth_fail(self, cam: Camera, text: str):
        with self._cond:
            cam.depth_errors += 1
            cam.last_error = f"depth: {text}"
        self.get_logger().warning(f"{cam.depth_topic}: {text}; no 3D outputs for this frame",
                                  throttle_duration_sec=5.0)

    def _depth_problems(self, cam: Camera) -> List[str]:
        """What /diagnostics says about a camera's depth (called with self._cond held)."""
        problems = []
        if cam.depth_errors > cam.reported_depth_errors:
            problems.append(f"depth refused {cam.depth_errors - cam.reported_depth_errors} time(s) since the "
                            f"last report: {cam.last_error}")
            cam.reported_depth_errors = cam.depth_errors
        if cam.depth_received and not cam.depth_info_received:
            problems.append(f"depth arrives on {cam.depth_topic} but no camera_info on "
                            f"{camera_info_topic(cam.depth_topic)}: no 3D outputs")
        return problems

    # ---- status -----------------------------------------------------------------
    def _publish_status(self):
        now = time.monotonic()
        cams = []
        with self._cond:
            for cam in self.cameras:
                lat = np.percentile(cam.latencies_ms, [50, 90, 99]) if cam.latencies_ms else [0.0] * 3
                names = [n for n in NODE_STAGES if n in cam.stage_ms] + sorted(set(cam.stage_ms) - set(NODE_STAGES))
                stage = [np.percentile(cam.stage_ms[n], [50, 95]) for n in names]
                cams.append(CameraStatus(
                    camera=cam.topic, input_hz=cam.rate(cam.arrivals, now),
                    processed_hz=cam.rate(cam.completions, now), received=cam.received,
                    processed=cam.processed, dropped=cam.dropped, errors=cam.errors,
                    latency_p50_ms=float(lat[0]), latency_p90_ms=float(lat[1]),
                    latency_p99_ms=float(lat[2]), time_jumps=cam.time_jumps,
                    last_error=cam.last_error, stage_names=names,
                    stage_p50_ms=[float(p[0]) for p in stage], stage_p95_ms=[float(p[1]) for p in stage]))
        vocab, encoding = self._vocabulary, self._encoding or self._next_request
        self._status_pub.publish(Status(
            header=Header(stamp=self.get_clock().now().to_msg()), state=self._state,
            vocabulary_version=self._version, vocabulary_size=len(vocab) if vocab else 0,
            vocabulary_state="encoding" if encoding else "ready",
            encoding_progress=float(self._encoding_progress) if self._encoding else 0.0,
            encoding_size=len(encoding.vocabulary) if encoding else 0, cameras=cams))
        self._publish_diagnostics(now, cams, encoding)

    def _publish_diagnostics(self, now: float, cams: list, encoding):
        """/diagnostics (diagnostic_msgs, what robot monitors aggregate): one entry for the
        node, one per camera; WARN on a stall or a time jump since the last report."""
        name = self.get_fully_qualified_name()
        ok, warn = DiagnosticStatus.OK, DiagnosticStatus.WARN
        node_level = ok if self._state in ("active", "inactive") else warn
        node_message = self._state + (f", encoding a vocabulary of {len(encoding.vocabulary)} classes "
                                      f"({self._encoding_progress:.0%})" if encoding else "")
        statuses = [DiagnosticStatus(
            level=node_level, name=f"{name}: node", hardware_id=name, message=node_message,
            values=[KeyValue(key="vocabulary_version", value=str(self._version)),
                    KeyValue(key="vocabulary_size", value=str(len(self._vocabulary or ())))])]
        stall = float(self.param("stall_timeout"))
        with self._cond:
            for cam, st in zip(self.cameras, cams):
                level, problems = ok, []
                waiting = cam.pending is not None and now - cam.pending[1] > stall
                if waiting and now - cam.last_done > stall:
                    level = warn
                    problems.append(f"stalled: frames waiting, no result for {now - cam.last_done:.0f} s")
                if cam.segmented is not None:
                    depth_problems = self._depth_problems(cam)
                    level = warn if depth_problems else level
                    problems += depth_problems
                if cam.time_jumps > cam.reported_jumps:
                    level = warn
                    problems.append(f"time jump: stamps went backwards ({cam.time_jumps - cam.reported_jumps}"
                                    f" since the last report); camera state reset")
                    cam.reported_jumps = cam.time_jumps
                values = {"input_hz": f"{st.input_hz:.2f}", "processed_hz": f"{st.processed_hz:.2f}",
                          "received": st.received, "processed": st.processed, "dropped": st.dropped,
                          "errors": st.errors, "time_jumps": st.time_jumps,
                          "latency_p50_ms": f"{st.latency_p50_ms:.1f}",
                          "latency_p99_ms": f"{st.latency_p99_ms:.1f}", "last_error": st.last_error}
                for stage, p50, p95 in zip(st.stage_names, st.stage_p50_ms, st.stage_p95_ms):
                    values.update({f"{stage}_p50_ms": f"{p50:.1f}", f"{stage}_p95_ms": f"{p95:.1f}"})
                if cam.segmented is not None:
                    values.update(depth_received=cam.depth_received, depth_camera_info=cam.depth_info_received,
                                  depth_paired=cam.depth_paired, depth_errors=cam.depth_errors)
                statuses.append(DiagnosticStatus(
                    level=level, name=f"{name}: {cam.topic}", hardware_id=cam.topic,
                    message="; ".join(problems) or "ok",
                    values=[KeyValue(key=k, value=str(v)) for k, v in values.items()]))
        self._diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=statuses))


@dataclass
class SegmentedFrame:
    """A result waiting in the depth synchronizer (message_filters reads ``header``)."""

    header: object
    result: object
    image: np.ndarray
    labels: np.ndarray
    instances: np.ndarray


def _check_synonyms(vocab: CoreVocabulary):
    """A word may name one class only: a synonym equal to another class's name (or
    synonym) would make the two classes compete for the same pixels."""
    owner = {}
    for c in vocab.classes:
        for word in c.synonyms:
            other = owner.setdefault(word.casefold(), c.name)
            if other != c.name:
                raise ValueError(f"{word!r} is a synonym of {c.name!r} and also names {other!r}; "
                                 f"a word may belong to one class only")


def usage() -> str:
    lines = ["usage: ovseg-node [--params-file FILE] [--ros-args -p NAME:=VALUE ...]",
             "",
             "The ovseg segmentation lifecycle node (see README, \"The ROS 2 node\").",
             "Parameters (config/ovseg_node.yaml documents them; set with -p or a params file):"]
    for key, (default, text) in PARAMETERS.items():
        lines.append(f"  {key} (default {default!r}): {text}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """`ovseg-node [--params-file FILE] [--ros-args ...]`: the node without ros2 launch."""
    argv = list(sys.argv if argv is None else argv)
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in own or "--help" in own:
        print(usage())
        return 0
    if "--params-file" in argv and "--ros-args" not in argv[:argv.index("--params-file")]:
        i = argv.index("--params-file")     # our flag -> ROS's, so either spelling works
        argv[i:i + 2] = ["--ros-args", "--params-file", argv[i + 1]]
    rclpy.init(args=argv)
    node = SegmentationNode()
    # Threads: one for the usual callbacks (one mutually exclusive group), the rest for
    # ~/set_vocabulary calls waiting for their vocabulary to be encoded.
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        if node.param("autostart"):
            node.trigger_configure()
            if node._state == "inactive":
                node.trigger_activate()
            else:
                node.get_logger().error("not activated: configure failed (see above); fix the "
                                        "parameters and restart, or configure it again")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
