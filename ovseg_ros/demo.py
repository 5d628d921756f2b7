"""`make demo`: the node on two simulated cameras, over real ROS 2 topics.

Starts the node in its own process, plays a camera stream made from what ships in the
repository (ShapesWorld scenes and the `shapes` preset trained here, by default) on two
image topics, publishes a vocabulary change half-way, and writes
  overlays/      every overlay the node published (one PNG per frame and camera)
  outputs/       a rosbag2 (mcap) recording of the node's outputs, readable by rosbags/ROS 2
  latency.json   per-camera latency (publish -> result received) and node counters
  summary.png    frames before and after the vocabulary change, side by side
  cloud.png      the front camera's labeled point cloud from its depth, seen from above,
                 beside that frame's overlay (ShapesWorld renders depth; needs vision_msgs)
Overlays are drawn upscaled (longer side at least OVERLAY_MIN_SIZE) so small frames read.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np
from tqdm import tqdm

from .convert import camera_info_topic, header_stamp_ns

REPO = Path(__file__).resolve().parent.parent
CAMERAS = ("/front/image_raw", "/rear/image_raw")
OVERLAY_MIN_SIZE = 512          # node parameter overlay_min_size: 128 px frames drawn at 512 px
STREET_VOCABULARIES = ("car; road [stuff]; building [stuff]; sky [stuff]",
                       "person, pedestrian; tree; sidewalk [stuff]; sky [stuff]")


def street_stream(num_frames: int) -> Callable[[int, int], np.ndarray]:
    """Two cameras panning across assets/street.png in opposite directions."""
    street = cv2.cvtColor(cv2.imread(str(REPO / "assets" / "street.png")), cv2.COLOR_BGR2RGB)
    height, width = street.shape[:2]
    crop = (width * 2) // 3

    def frame(camera: int, i: int) -> np.ndarray:
        t = i / max(1, num_frames - 1)
        x = int(round((t if camera == 0 else 1 - t) * (width - crop)))
        return np.ascontiguousarray(street[:, x:x + crop])
    return frame


def shapes_stream(num_frames: int) -> Callable[[int, int], np.ndarray]:
    """Two cameras panning across two ShapesWorld scenes (seeds 7 and 8), 128 px."""
    from ovseg_core.shapes.world import camera_pan
    pans = [camera_pan(seed, num_frames) for seed in (7, 8)]
    return lambda camera, i: pans[camera][i].image


def shapes_depth(num_frames: int, size: int = 128) -> Callable[[int, int], tuple]:
    """The front camera's registered depth (ShapesWorld renders it: stuff as planes 6-12 m
    away, things 1-5 m): each frame a window of one depth image of the wide scene, so a
    thing keeps its distance while the camera pans; ``(depth_m, PinholeCamera)``."""
    from ovseg_core.geometry import PinholeCamera
    from ovseg_core.shapes.world import pan_offsets, pan_world, render_depth
    world = pan_world(7, size)
    depth, wide, _ = render_depth(world, seed=7)
    offsets = pan_offsets(num_frames, size, world.image.shape[1])

    def frame(camera: int, i: int):
        if camera != 0:
            return None
        x0 = offsets[i]
        return (np.ascontiguousarray(depth[:, x0:x0 + size]),
                PinholeCamera(size, depth.shape[0], wide.fx, wide.fy, wide.cx - x0, wide.cy))
    return frame


def shapes_vocabularies():
    """First half: every ShapesWorld class; second half: three circles and the stuff
    classes, so things of other shapes lose their labels and the stuff keeps its own."""
    from ovseg_core.shapes.world import load_classes
    classes = load_classes()
    second = ["red circle", "blue circle", "yellow circle", *classes.stuff]
    return classes.vocabulary_text(), classes.vocabulary_text(second)


def _stamp(msg, ns: int):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)


def run(out: Path, preset: str, frames: int, rate: float, vocabularies, source, depth_source=None,
        **params) -> dict:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header, String

    from ovseg.msg import PanopticResult, Status, Vocabulary
    from .harness import NodeProcess, Probe, isolated_env

    os.environ.update(isolated_env())
    shutil.rmtree(out, ignore_errors=True)
    (out / "overlays").mkdir(parents=True)
    names = [c.strip("/").split("/")[0] for c in CAMERAS]
    depth_topics = [f"/{n}/depth/image_rect" if depth_source and depth_source(cam, 0) else ""
                    for cam, n in enumerate(names)]
    if any(depth_topics):
        from .mapping import missing_packages
        if missing_packages(["objects", "depth"]):
            print("note: no cloud.png: vision_msgs/message_filters are not installed (make ros builds them "
                  "from ../shared/third_party/ros)")
            depth_topics = [""] * len(names)
        else:
            params.update(depth_topics=depth_topics, publish_points=True, publish_objects=True)
    print(f"starting the node (preset {preset}) ...", flush=True)
    node = NodeProcess(out, preset=preset, device="auto", cameras=list(CAMERAS),
                       vocabulary=vocabularies[0], input_qos="reliable", input_qos_depth=10,
                       status_period=0.5, **{"overlay_min_size": OVERLAY_MIN_SIZE, **params})
    probe = Probe("ovseg_demo")
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [probe.node.create_publisher(Image, c, reliable) for c in CAMERAS]
    vocab_pub = probe.node.create_publisher(String, "/ovseg/vocabulary_text", 10)
    outputs = {f"/ovseg/{n}/{kind}": t for n in names
               for kind, t in (("panoptic", PanopticResult), ("overlay", Image))}
    outputs.update({"/ovseg/status": Status, "/ovseg/vocabulary": Vocabulary})
    depth_pubs = {}
    for cam, topic in enumerate(depth_topics):
        if topic:
            from vision_msgs.msg import Detection3DArray
            depth_pubs[cam] = (probe.node.create_publisher(Image, topic, reliable),
                               probe.node.create_publisher(CameraInfo, camera_info_topic(topic), reliable))
            outputs[f"/ovseg/{names[cam]}/points"] = PointCloud2
            probe.subscribe(Detection3DArray, f"/ovseg/{names[cam]}/objects", reliable)
    for topic, msg_type in outputs.items():
        probe.subscribe(msg_type, topic, reliable)
    try:
        probe.wait_for(lambda: any(m.state == "active" for m in probe.messages("/ovseg/status")),
                       timeout=300, what="the node to become active", node=node)
        # Status flows in every state, so "active" can arrive before the cameras and outputs
        # are matched: wait for them, or a first frame may be lost.
        probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs)
                       and all(probe.node.count_publishers(t) > 0 for t in outputs), timeout=60,
                       what="the node's camera subscriptions and outputs", node=node)
        time.sleep(0.5)   # the node's side of the same matches (overlays go to subscribers only)
        sent: Dict[int, float] = {}
        for i in tqdm(range(frames), desc="playing camera stream", unit="frame"):
            if i == frames // 2:
                vocab_pub.publish(String(data=vocabularies[1]))
                probe.wait_for(lambda: any(m.version >= 2 for m in probe.messages("/ovseg/vocabulary")),
                               what="the vocabulary change", node=node)
            stamp = 1_000_000_000 * (i + 1)
            for cam, pub in enumerate(pubs):
                rgb = source(cam, i)
                msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                            data=rgb.tobytes(), header=Header(frame_id=names[cam]))
                _stamp(msg, stamp + cam)
                if cam in depth_pubs:
                    _publish_depth(depth_pubs[cam], *depth_source(cam, i), msg.header)
                sent[stamp + cam] = time.monotonic()
                pub.publish(msg)
            started = time.monotonic()
            # Paced by the node as well as by the rate: every frame gets its result (on a slow
            # CPU the node would otherwise drop frames by design, and the demo would show gaps).
            probe.wait_for(lambda: all(any(header_stamp_ns(m.header) == stamp + cam
                                           for m in probe.messages(f"/ovseg/{n}/panoptic"))
                                       for cam, n in enumerate(names)),
                           timeout=300, what=f"the results of frame {i + 1}", node=node)
            time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
        last = 1_000_000_000 * frames
        probe.wait_for(lambda: all(any(header_stamp_ns(m.header) >= last for m in probe.messages(f"/ovseg/{n}/panoptic"))
                                   for n in names), timeout=120, what="the last results", node=node)
        time.sleep(1.0)
        return _write(out, probe, names, sent, outputs, frames)
    finally:
        probe.close()
        node.stop()


def _publish_depth(pubs, depth_m, camera, header):
    """32FC1 depth and its camera_info, stamped like the frame they belong to."""
    from sensor_msgs.msg import CameraInfo, Image
    height, width = depth_m.shape
    pubs[0].publish(Image(header=header, height=height, width=width, encoding="32FC1", is_bigendian=0,
                          step=width * 4, data=depth_m.astype("<f4").tobytes()))
    pubs[1].publish(CameraInfo(header=header, height=height, width=width, distortion_model="plumb_bob",
                               d=[0.0] * 5, k=[camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]))


def _write(out, probe, names, sent, outputs, frames) -> dict:
    """What the probe received -> overlays, the recording, latency.json, summary.png."""
    from rclpy.serialization import serialize_message as serialize
    from rosbags.rosbag2 import StoragePlugin, Writer

    from .convert import image_to_rgb
    from .interfaces import rosbags_typestore
    typestore = rosbags_typestore()
    summary = {"cameras": {}, "frames_per_camera": frames}
    for n in names:
        stamps = {}
        with probe.lock:
            received = list(probe.received[f"/ovseg/{n}/panoptic"])
        for t, msg in received:
            stamps.setdefault(header_stamp_ns(msg.header), t)
        lat = np.array([(t - sent[s]) * 1000 for s, t in stamps.items() if s in sent])
        summary["cameras"][n] = {
            "results": len(stamps), "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p90": float(np.percentile(lat, 90)), "latency_ms_max": float(lat.max())}
        for msg in probe.messages(f"/ovseg/{n}/overlay"):
            index = header_stamp_ns(msg.header) // 1_000_000_000
            cv2.imwrite(str(out / "overlays" / f"{n}_{index:03d}.png"),
                        cv2.cvtColor(image_to_rgb(msg), cv2.COLOR_RGB2BGR))
    status = probe.messages("/ovseg/status")[-1]
    summary["node"] = {c.camera: {"received": c.received, "processed": c.processed, "dropped": c.dropped,
                                  "errors": c.errors} for c in status.cameras}
    with Writer(out / "outputs", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic, msg_type in outputs.items():
            type_name = msg_type.__module__.split(".")[0] + "/msg/" + msg_type.__name__
            conn = writer.add_connection(topic, type_name, typestore=typestore)
            with probe.lock:
                timed = list(probe.received[topic])
            for t, msg in timed:
                writer.write(conn, int(t * 1e9), serialize(msg))
    (out / "latency.json").write_text(json.dumps(summary, indent=2))
    _summary_picture(out, names, frames)
    if f"/ovseg/{names[0]}/points" in outputs:
        _cloud_picture(out, probe, names[0], frames)
    return summary


def _cloud_picture(out: Path, probe, name: str, frames: int, size: int = 512):
    """The last frame before the vocabulary change: its overlay beside a bird's-eye view of
    its labeled cloud (x right, z forward, 1 m grid; points in their class colour, each 3D
    object's box footprint and class name)."""
    from ovseg_core.visualize import palette

    from .convert import image_to_rgb
    from .mapping import cloud_array
    stamp = 1_000_000_000 * (frames // 2)
    pick = {kind: [m for m in probe.messages(f"/ovseg/{name}/{kind}") if header_stamp_ns(m.header) == stamp]
            for kind in ("points", "objects", "overlay", "panoptic")}
    if not all(pick.values()):
        print(f"note: no cloud.png: frame {frames // 2} of {name} lacks " + ", ".join(k for k, v in pick.items() if not v))
        return
    cloud = cloud_array(pick["points"][0])
    class_names = list(pick["panoptic"][0].class_names)
    colors = np.vstack([palette(len(class_names)), [[128, 128, 128]]])
    label = np.minimum(cloud["label"].astype(np.int64), len(class_names))
    x, z = cloud["x"].astype(np.float64), cloud["z"].astype(np.float64)
    z_far = float(np.ceil(z.max() + 0.5)) if z.size else 10.0
    x_half = max(float(np.ceil(np.abs(x).max() + 0.5)) if x.size else 1.0, z_far / 2)
    margin = 40

    def to_px(px, pz):
        u = margin + (np.asarray(px) + x_half) / (2 * x_half) * (size - 2 * margin)
        v = size - margin - np.asarray(pz) / z_far * (size - 2 * margin)
        return np.round(u).astype(int), np.round(v).astype(int)
    view = np.full((size, size, 3), 255, np.uint8)
    for metre in range(0, int(z_far) + 1):
        _, v = to_px(0, metre)
        cv2.line(view, (margin, int(v)), (size - margin, int(v)), (230, 230, 230), 1)
        cv2.putText(view, f"{metre} m", (4, int(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (120, 120, 120), 1, cv2.LINE_AA)
    u, v = to_px(x, z)
    for du in (-1, 0, 1):                     # 3x3 px dots, in BGR for OpenCV
        for dv in (-1, 0, 1):
            view[np.clip(v + dv, 0, size - 1), np.clip(u + du, 0, size - 1)] = colors[label][:, ::-1]
    for det in pick["objects"][0].detections:
        c, s = det.bbox.center.position, det.bbox.size
        (u0, u1), (v0, v1) = to_px([c.x - s.x / 2, c.x + s.x / 2], [c.z - s.z / 2, c.z + s.z / 2])
        hyp = det.results[0].hypothesis
        color = tuple(int(k) for k in colors[class_names.index(hyp.class_id)][::-1])
        cv2.rectangle(view, (int(u0) - 2, int(v1) - 2), (int(u1) + 2, int(v0) + 2), color, 2)
        cv2.putText(view, hyp.class_id, (int(u0), int(v1) - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cu, cv_ = to_px(0, 0)
    cv2.drawMarker(view, (int(cu), int(cv_)), (0, 0, 0), cv2.MARKER_TRIANGLE_UP, 14, 2)
    cv2.putText(view, "camera", (int(cu) - 24, int(cv_) + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    overlay = cv2.cvtColor(image_to_rgb(pick["overlay"][0]), cv2.COLOR_RGB2BGR)
    overlay = cv2.resize(overlay, (size, size * overlay.shape[0] // overlay.shape[1]), interpolation=cv2.INTER_NEAREST)
    caption = 30
    grid = np.full((caption + max(size, overlay.shape[0]), 2 * size + 8, 3), 255, np.uint8)
    grid[caption:caption + overlay.shape[0], :size] = overlay
    grid[caption:caption + size, size + 8:] = view
    cv2.putText(grid, f"{name}, frame {frames // 2}: overlay", (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(grid, f"its labeled cloud from above ({len(cloud)} points, {len(pick['objects'][0].detections)} "
                f"objects)", (size + 12, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(out / "cloud.png"), grid)


def _summary_picture(out: Path, names: List[str], frames: int):
    """A grid: per camera (rows) the last overlay before the vocabulary change and the first
    after it (adjacent frames of the pan, so the same things are seen under both
    vocabularies), each captioned. The node draws the overlays upscaled already."""
    rows = []
    for n in names:
        files = sorted((out / "overlays").glob(f"{n}_*.png"))
        before = [f for f in files if int(f.stem.split("_")[-1]) <= frames // 2]
        after = [f for f in files if int(f.stem.split("_")[-1]) > frames // 2]
        if before and after:
            rows.append([(before[-1], "before the vocabulary change"), (after[0], "after")])
    if not rows:
        return
    cells = [[(cv2.imread(str(f)), "{}, frame {}: {}".format(*f.stem.rsplit("_", 1)[0:1],
                                                             int(f.stem.rsplit("_", 1)[1]), what))
              for f, what in row] for row in rows]
    height = max(im.shape[0] for row in cells for im, _ in row)
    width = max(im.shape[1] for row in cells for im, _ in row)
    gap, caption = 8, 30
    grid = np.full((len(cells) * (height + caption + gap) + gap, 2 * (width + gap) + gap, 3), 255, np.uint8)
    for r, row in enumerate(cells):
        for c, (image, text) in enumerate(row):
            y, x = gap + r * (height + caption + gap), gap + c * (width + gap)
            cv2.putText(grid, text, (x + 2, y + caption - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                        cv2.LINE_AA)
            grid[y + caption:y + caption + image.shape[0], x:x + image.shape[1]] = image
    cv2.imwrite(str(out / "summary.png"), grid)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo", type=Path)
    p.add_argument("--world", choices=("shapes", "street"), default="shapes",
                   help="shapes: ShapesWorld scenes with the trained `shapes` preset; street: "
                        "assets/street.png (for presets trained on real images)")
    p.add_argument("--preset", help="default: shapes for --world shapes, tiny for street")
    p.add_argument("--frames", type=int, default=20, help="frames per camera")
    p.add_argument("--rate", type=float, default=4.0,
                   help="at most this many frames per second per camera (each waits for the previous results)")
    p.add_argument("--overlap-threshold", type=float, default=-1.0,
                   help="node parameter overlap_threshold (< 0: the preset's)")
    args = p.parse_args(argv)
    if args.world == "shapes":
        args.preset = args.preset or "shapes"
        vocabularies, source = shapes_vocabularies(), shapes_stream(args.frames)
        depth_source = shapes_depth(args.frames)
    else:
        args.preset = args.preset or "tiny"
        vocabularies, source, depth_source = STREET_VOCABULARIES, street_stream(args.frames), None
    print(f"vocabulary, first half: {vocabularies[0]}\nvocabulary, second half: {vocabularies[1]}")
    summary = run(args.out, args.preset, args.frames, args.rate, vocabularies, source, depth_source,
                  overlap_threshold=args.overlap_threshold)
    for name, cam in summary["cameras"].items():
        print(f"{name}: {cam['results']} results, latency p50 {cam['latency_ms_p50']:.0f} ms, "
              f"p90 {cam['latency_ms_p90']:.0f} ms")
    print(f"wrote {args.out}/overlays/ ({len(list((args.out / 'overlays').glob('*.png')))} PNGs), "
          f"{args.out}/outputs/ (rosbag2, mcap), {args.out}/latency.json, {args.out}/summary.png"
          + (f", {args.out}/cloud.png" if (args.out / "cloud.png").is_file() else ""))
    if args.preset == "tiny":
        print("note: the tiny preset has random weights, so its labels are not meaningful")
    return 0


if __name__ == "__main__":
    sys.exit(main())
