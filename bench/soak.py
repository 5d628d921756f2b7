"""A long run of the node as a robot runs it: two cameras at 10 Hz, a vocabulary change
every minute, depth off (or, with --depth, each camera's registered depth and the 3D
outputs on). Records over time the node's RSS, what each camera got back, the node's own
drop counts and per-stage latency (~/status), and checks the rules that must hold however
long it runs:

- no result older than one already published for its camera (the newest-frame rule);
- every vocabulary change applied (results carry each new version and its classes);
- RSS after warm-up does not grow (trend by least squares, and the two halves' means).

    source tools/ros_env.sh && python bench/soak.py [--minutes 30] [--rate 10] [--cameras 2]
        [--size 480x640] [--vocab-every 60] [--preset tiny]
    # the 3D outputs: one camera with depth, points and objects, no vocabulary change
    source tools/ros_env.sh && python bench/soak.py --minutes 10 --cameras 1 --depth --vocab-every 0

Writes OUT/soak.json (every 5 s sample) and prints the summary. Frames the node cannot
keep up with are dropped by design (the newest frame per camera wins) and counted. Frames
are random pixels, or with --depth ShapesWorld scenes and their rendered depth (stuff
6-12 m, things 1-5 m).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import psutil
from tqdm import tqdm

VOCABULARIES = ("car; person, pedestrian; road [stuff]; sky [stuff]",
                "truck; bicycle; building [stuff]; vegetation [stuff]; sky [stuff]")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=10.0, help="frames per second per camera")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--size", default="480x640", help="HxW of the frames")
    p.add_argument("--vocab-every", type=float, default=60.0, help="seconds between vocabulary changes (0: none)")
    p.add_argument("--depth", action="store_true",
                   help="publish each camera's registered depth (32FC1) and camera_info; points and objects on")
    p.add_argument("--stride", type=int, default=1, help="node parameter points_stride (with --depth)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    p.add_argument("--out", type=Path, default=Path("out/bench_soak"))
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header, String

    from ovseg.msg import PanopticResult, Status
    from ovseg_core.shapes.world import generate_scene, render_depth
    from ovseg_ros.convert import camera_info_topic, header_stamp_ns
    from ovseg_ros.harness import NodeProcess, Probe, isolated_env

    os.environ.update(isolated_env())
    args.out.mkdir(parents=True, exist_ok=True)
    topics = [f"/cam{i}/image_raw" for i in range(args.cameras)]
    mapping = dict(depth_topics=[f"/cam{i}/depth/image_rect" for i in range(args.cameras)], publish_points=True,
                   publish_objects=True, points_stride=args.stride) if args.depth else {}
    node = NodeProcess(args.out, preset=args.preset, device="cpu", cameras=topics, input_qos="reliable",
                       input_qos_depth=1, vocabulary=VOCABULARIES[0], publish_overlay=False, status_period=1.0,
                       max_batch=args.cameras, **mapping)
    probe = Probe("bench_soak")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [probe.node.create_publisher(Image, t, reliable) for t in topics]
    depth_pubs = [(probe.node.create_publisher(Image, t, reliable),
                   probe.node.create_publisher(CameraInfo, camera_info_topic(t), reliable))
                  for t in mapping.get("depth_topics", [])]
    clouds = {"points": 0, "objects": 0, "cloud_bytes": 0}

    def on_cloud(msg, kind):      # counted, not kept: the probe's memory stays flat
        clouds[kind] += 1
        if kind == "points":
            clouds["cloud_bytes"] = len(msg.data)
    if args.depth:
        from vision_msgs.msg import Detection3DArray
        for i in range(args.cameras):
            probe.node.create_subscription(PointCloud2, f"/ovseg/cam{i}/points", lambda m: on_cloud(m, "points"),
                                           reliable)
            probe.node.create_subscription(Detection3DArray, f"/ovseg/cam{i}/objects",
                                           lambda m: on_cloud(m, "objects"), reliable)
    vocab_pub = probe.node.create_publisher(String, "/ovseg/vocabulary_text", 10)
    sent_at = {}                                   # stamp -> monotonic time it was published
    got = {i: {"results": 0, "latency_ms": [], "last_stamp": -1, "older": 0, "versions": set(), "wrong_classes": 0}
           for i in range(args.cameras)}
    expected_classes = {}                          # vocabulary version -> class names

    def on_result(msg, cam):
        stamp, g = header_stamp_ns(msg.header), got[cam]
        g["results"] += 1
        if stamp <= g["last_stamp"]:
            g["older"] += 1
        g["last_stamp"] = max(g["last_stamp"], stamp)
        if stamp in sent_at:
            g["latency_ms"].append((time.monotonic() - sent_at[stamp]) * 1000)
        g["versions"].add(msg.vocabulary_version)
        want = expected_classes.get(msg.vocabulary_version)
        if want is not None and list(msg.class_names) != want:
            g["wrong_classes"] += 1
    for i in range(args.cameras):
        probe.node.create_subscription(PanopticResult, f"/ovseg/cam{i}/panoptic", lambda m, i=i: on_result(m, i),
                                       reliable)
    probe.subscribe(Status, "/ovseg/status")
    # A few frames, cycled: the content varies, the cost does not. With depth, ShapesWorld
    # scenes and their rendered depth; without, random pixels.
    frames, rng = [], np.random.default_rng(0)
    for seed in range(8):
        if args.depth:
            scene = generate_scene(seed, size=(height, width))
            depth, camera, _ = render_depth(scene, seed=seed)
            frames.append((scene.image, depth.astype("<f4"), camera))
        else:
            frames.append((rng.integers(0, 256, (height, width, 3), np.uint8), None, None))
    samples, changes = [], 0
    try:
        probe.wait_for(lambda: any(m.state == "active" for m in probe.messages("/ovseg/status")), timeout=300,
                       what="the node to become active", node=node)
        probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout=60,
                       what="the camera subscriptions", node=node)
        expected_classes[1] = [c.split(",")[0].replace("[stuff]", "").strip() for c in VOCABULARIES[0].split(";")]
        proc = psutil.Process(node.proc.pid)
        start, period, sent = time.monotonic(), 1.0 / args.rate, 0
        end, next_sample = start + 60 * args.minutes, start
        next_change = start + args.vocab_every if args.vocab_every > 0 else float("inf")
        with tqdm(total=int(60 * args.minutes), unit="s", desc="soak") as bar:
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_change:
                    changes += 1
                    text = VOCABULARIES[changes % 2]
                    expected_classes[changes + 1] = [c.split(",")[0].replace("[stuff]", "").strip()
                                                     for c in text.split(";")]
                    vocab_pub.publish(String(data=text))
                    next_change += args.vocab_every
                stamp = 1_000_000_000 + sent * int(1e9 / args.rate)
                image, depth, camera = frames[sent % len(frames)]
                for i, pub in enumerate(pubs):
                    header = Header(frame_id=f"cam{i}")
                    header.stamp.sec, header.stamp.nanosec = divmod(stamp + i, 10**9)
                    if depth_pubs:
                        depth_pubs[i][0].publish(Image(header=header, height=height, width=width, encoding="32FC1",
                                                       is_bigendian=0, step=width * 4, data=depth.tobytes()))
                        depth_pubs[i][1].publish(CameraInfo(
                            header=header, height=height, width=width, distortion_model="plumb_bob", d=[0.0] * 5,
                            k=[camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]))
                    sent_at[stamp + i] = time.monotonic()
                    pub.publish(Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
                                      step=width * 3, data=image.tobytes()))
                sent += 1
                if now >= next_sample:
                    status = probe.messages("/ovseg/status")[-1]
                    samples.append({
                        "t": round(now - start, 1), "rss_mib": proc.memory_info().rss / 2**20,
                        "vocabulary_version": status.vocabulary_version,
                        "cameras": [{"received": c.received, "processed": c.processed, "dropped": c.dropped,
                                     "errors": c.errors, "latency_p50_ms": c.latency_p50_ms,
                                     "latency_p99_ms": c.latency_p99_ms,
                                     "stages_p50_ms": dict(zip(c.stage_names, c.stage_p50_ms))}
                                    for c in status.cameras]})
                    with probe.lock:         # the status history is all we read: keep the last
                        probe.received["/ovseg/status"] = probe.received["/ovseg/status"][-1:]
                    for old in [s for s in sent_at if s < stamp - 30 * 10**9]:
                        del sent_at[old]
                    next_sample += 5.0
                    bar.n = int(now - start)
                    bar.refresh()
                time.sleep(max(0.0, start + sent * period - time.monotonic()))
        time.sleep(max(5.0, 2 * args.vocab_every / 60))      # the last change and frames land
        final = probe.messages("/ovseg/status")[-1]
    finally:
        probe.close()
        node.stop()
    after = [s for s in samples if s["t"] >= args.warmup] or samples
    rss = [s["rss_mib"] for s in after]
    slope = float(np.polyfit([s["t"] for s in after], rss, 1)[0] * 60) if len(after) > 2 else 0.0
    halves = (float(np.mean(rss[:len(rss) // 2] or rss)), float(np.mean(rss[len(rss) // 2:])))
    report = {
        "minutes": args.minutes, "rate_hz": args.rate, "cameras": args.cameras, "size": [height, width],
        "preset": args.preset, "frames_sent_per_camera": sent, "vocabulary_changes": changes,
        "final_vocabulary_version": final.vocabulary_version,
        "per_camera": {f"cam{i}": {"results": g["results"], "older_than_published": g["older"],
                                   "versions_seen": sorted(g["versions"]), "wrong_classes": g["wrong_classes"],
                                   "latency_ms_p50": float(np.percentile(g["latency_ms"], 50)) if g["latency_ms"] else None,
                                   "latency_ms_p95": float(np.percentile(g["latency_ms"], 95)) if g["latency_ms"] else None,
                                   "node_dropped": final.cameras[i].dropped, "node_errors": final.cameras[i].errors}
                       for i, g in got.items()},
        "clouds": clouds["points"], "object_arrays": clouds["objects"], "cloud_bytes": clouds["cloud_bytes"],
        "rss_mib_after_warmup": rss[0], "rss_mib_end": rss[-1], "rss_mib_max": max(rss),
        "rss_slope_mib_per_min": slope, "rss_mean_mib_halves": halves, "samples": samples}
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    applied = final.vocabulary_version == changes + 1
    print(f"{args.minutes:g} min, {args.cameras} cameras at {args.rate:g} Hz ({height}x{width}, preset {args.preset}): "
          f"{sent} frames sent per camera; {changes} vocabulary changes, final version {final.vocabulary_version} "
          f"({'all applied' if applied else 'NOT all applied'})")
    for name, c in report["per_camera"].items():
        print(f"  {name}: {c['results']} results, {c['node_dropped']} dropped by the newest-frame rule, "
              f"{c['node_errors']} errors, {c['older_than_published']} older than one already published, "
              f"{len(c['versions_seen'])} vocabulary versions seen, {c['wrong_classes']} with the wrong classes; "
              f"latency p50 {c['latency_ms_p50']:.0f} ms, p95 {c['latency_ms_p95']:.0f} ms")
    if args.depth:
        print(f"  3D outputs: {clouds['points']} clouds and {clouds['objects']} object arrays received, "
              f"{clouds['cloud_bytes']} bytes per PointCloud2 (stride {args.stride})")
    print(f"node RSS: {rss[0]:.0f} MiB after {args.warmup:.0f} s warm-up, {rss[-1]:.0f} MiB at the end (max "
          f"{max(rss):.0f}); trend {slope:+.1f} MiB/min, mean {halves[0]:.0f} MiB in the first half and "
          f"{halves[1]:.0f} MiB in the second; samples in {args.out / 'soak.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
