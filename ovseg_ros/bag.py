"""``ovseg-bag IN OUT --image-topics T... [--vocab "..."] [--preset NAME]``: segment every
image of a recorded bag offline and write a new bag with the original messages plus
our results. No ROS 2 installation is needed: bags are read and written with `rosbags`.

Inputs: rosbag2 (sqlite3 or mcap; a bag folder or a single .db3/.mcap file) and ROS 1
``.bag`` files. Output: a rosbag2 folder in the input's storage (ROS 1 input -> sqlite3;
``--storage`` overrides) with, for every input image topic ``T``, on the topics the node
would publish (one naming rule, ``ovseg_ros.convert.output_topic``; ``--output-layout``
as the node's ``output_layout``: ``/ovseg/NAME/...`` by default, ``/front/ovseg/...``
with ``camera``):

- ``.../panoptic``  ovseg/msg/PanopticResult, one per input frame, header copied;
- ``.../semantic``  sensor_msgs/Image class-index image (mono8/mono16), like the node's;
- ``/ovseg/vocabulary``  ovseg/msg/Vocabulary (transient local) at the start and at
  every vocabulary the bag switches to; results carry its ``version``.

Results are written at the input image's record time, right after it. Vocabulary
messages recorded in the bag (std_msgs/String in the user format, or
ovseg/msg/Vocabulary) apply to the frames recorded after them, as the node would have
applied them; each one that differs from the current vocabulary raises the version by one.

Resume: results are committed per batch to ``OUT.partial/results.sqlite``; a killed run
started again with the same settings skips the committed frames (re-creating the same
batches, so the output is identical to an uninterrupted run) and the bag is built in
``OUT.partial/`` and renamed to OUT only when complete.

Ground truth (``--gt-dir``): see :func:`load_ground_truth` for the layout and the rule
that matches GT images to frames; PQ (panopticapi's rules) and mIoU are computed from
the finished output bag with ``ovseg_core.evaluation``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from rosbags.convert.converter import LATCH, create_connections_converters
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from tqdm import tqdm

from ovseg_core.evaluation import PQStat, SemanticStat, pq_prediction, resize_labels
from ovseg_core.evaluation.panoptic import format_table
from ovseg_core.panoptic_io import InputError, check_panoptic_json, dump_json, load_json, read_panoptic_png
from ovseg_core.structures import PanopticResult
from ovseg_core.vocabulary import Vocabulary

from .convert import (OUTPUT_LAYOUTS, BadImage, camera_name, header_stamp_ns, label_array, label_image,
                      output_topic, panoptic_message, to_rgb, vocabulary_changes, vocabulary_from_classes,
                      vocabulary_message)
from .interfaces import PACKAGE, rosbags_typestore, rosbags_types

VOCABULARY_TOPIC = "/ovseg/vocabulary"
NODE_NAMESPACE = "/ovseg"   # the node's default name: its ~ in the node's topic names


def result_topics(image_topics: Sequence[str], layout: str = "node") -> Dict[str, Tuple[str, str]]:
    """image topic -> its (panoptic, semantic) output topics, named as the node names them."""
    names = [camera_name(t, i) for i, t in enumerate(image_topics)]
    if len(set(names)) != len(names):
        raise BagError(f"image topics {list(image_topics)} give colliding output names {names}; "
                       f"use --output-layout camera")
    try:
        return {t: (output_topic("panoptic", t, n, layout, NODE_NAMESPACE),
                    output_topic("semantic", t, n, layout, NODE_NAMESPACE)) for t, n in zip(image_topics, names)}
    except ValueError as err:
        raise BagError(str(err)) from err
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STRING_TYPE = "std_msgs/msg/String"
VOCABULARY_TYPE = f"{PACKAGE}/msg/Vocabulary"
PANOPTIC_TYPE = f"{PACKAGE}/msg/PanopticResult"
IMAGE_TYPE = "sensor_msgs/msg/Image"
STORAGES = ("sqlite3", "mcap")
# Messages wait in memory until the frames before them have results; past this many bytes
# (a sparse camera beside dense sensors) the waiting batch is segmented early. The rule
# depends only on the bag, so a resumed run forms the same batches.
MAX_PENDING_BYTES = 256 << 20


class BagError(ValueError):
    """Bad input (paths, topics, settings); the text names the way out."""


_TYPESTORE = None


def typestore():
    """One typestore per process: rosbags compiles (de)serializers per store, ~0.1 s."""
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = rosbags_typestore()
    return _TYPESTORE


# ---------------------------------------------------------------------------- bags

def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def input_storage(path: Path) -> str:
    """The rosbag2 storage an output written for ``path`` should use."""
    if path.is_dir():
        return "mcap" if any(path.glob("*.mcap")) else "sqlite3"
    return "mcap" if path.suffix == ".mcap" else "sqlite3"   # .db3, and ROS 1 .bag -> rosbag2 sqlite3


def check_input(path: Path) -> None:
    if path.is_dir() and (path / "metadata.yaml").is_file():
        return
    if path.is_file() and path.suffix in (".bag", ".db3", ".mcap"):
        return
    raise BagError(f"{path} is not a bag: give a rosbag2 folder (with metadata.yaml), a .db3 or "
                   f".mcap file, or a ROS 1 .bag file")


def input_fingerprint(path: Path) -> List[Tuple[str, int, int]]:
    """Names, sizes and mtimes of the bag's files: a resumed run must read the same bag."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def stamp_key(topic: str) -> str:
    """A topic as it appears in GT file names: ``/cam/front/image`` -> ``cam_front_image``."""
    return topic.strip("/").replace("/", "_")


# ---------------------------------------------------------------------------- resume state

class ResultCache:
    """Serialized result messages by frame index, committed a batch at a time (sqlite's
    transactions make a kill between or during commits harmless). The settings of the run
    that created it are stored with it; a run with other settings must not reuse it."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.db = sqlite3.connect(str(path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS settings (json TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS results (frame INTEGER PRIMARY KEY, "
                        "panoptic BLOB NOT NULL, semantic BLOB)")
        row = self.db.execute("SELECT json FROM settings").fetchone()
        wanted = json.loads(json.dumps(settings))   # normalised as stored (tuples -> lists)
        if row is None:
            with self.db:
                self.db.execute("INSERT INTO settings VALUES (?)", (json.dumps(wanted),))
        else:
            stored = json.loads(row[0])
            differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            if differ:
                self.db.close()
                raise BagError(f"{path.parent} holds an interrupted run with other settings "
                               f"(differing: {', '.join(differ)}); run again with that run's settings "
                               f"to resume it, or pass --restart to discard it")

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def get(self, frame: int) -> Optional[Tuple[bytes, Optional[bytes]]]:
        row = self.db.execute("SELECT panoptic, semantic FROM results WHERE frame = ?", (frame,)).fetchone()
        return None if row is None else (bytes(row[0]), None if row[1] is None else bytes(row[1]))

    def put(self, rows: Sequence[Tuple[int, bytes, Optional[bytes]]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------- the run

@dataclass
class Frame:
    index: int
    header: object           # a std_msgs/Header of the output typestore
    image: Optional[np.ndarray]


@dataclass
class BagSummary:
    """What a run did, for the caller's report (and the tests)."""

    frames: int = 0
    computed: int = 0        # frames segmented by this run (the rest came from the resume state)
    bad_frames: List[str] = field(default_factory=list)
    bad_vocabularies: List[str] = field(default_factory=list)
    vocabulary_version: int = 0
    dropped_topics: List[str] = field(default_factory=list)
    seconds: float = 0.0


def _topics_of(reader, types: Sequence[str]) -> Dict[str, str]:
    return {c.topic: c.msgtype for c in reader.connections if c.msgtype in types}


def _select_topics(reader, image_topics: Sequence[str], vocab_topics: Optional[Sequence[str]]):
    images = _topics_of(reader, IMAGE_TYPES)
    if not image_topics:
        raise BagError(f"give --image-topics; the bag's image topics: {', '.join(sorted(images)) or 'none'}")
    missing = [t for t in image_topics if t not in images]
    if missing:
        raise BagError(f"image topic(s) {', '.join(missing)} not in the bag (or not sensor_msgs Image/"
                       f"CompressedImage); the bag's image topics: {', '.join(sorted(images)) or 'none'}")
    vocab_like = _topics_of(reader, (STRING_TYPE, VOCABULARY_TYPE))
    if vocab_topics is None:   # auto: our Vocabulary type, and String topics named like the node's input
        vocab_topics = [t for t, m in sorted(vocab_like.items())
                        if m == VOCABULARY_TYPE or t.endswith("vocabulary_text")]
    bad = [t for t in vocab_topics if t not in vocab_like]
    if bad:
        raise BagError(f"vocabulary topic(s) {', '.join(bad)} not in the bag as {STRING_TYPE} or "
                       f"{VOCABULARY_TYPE}; candidates: {', '.join(sorted(vocab_like)) or 'none'}")
    return list(image_topics), list(vocab_topics)


def check_topics(src: Path, image_topics: Sequence[str], vocab_topics: Optional[Sequence[str]]) -> None:
    """The topic checks of :func:`process_bag`, before a model is built for nothing."""
    with AnyReader([Path(src)], default_typestore=typestore()) as reader:
        _select_topics(reader, image_topics, vocab_topics)


def _vocabulary_of(msg, msgtype: str) -> Vocabulary:
    return Vocabulary.parse(msg.data) if msgtype == STRING_TYPE else vocabulary_from_classes(msg.classes)


class _Run:
    """One pass over the input: copy every message, segment frames in batches, write
    results right after their image, commit each batch to the resume state."""

    def __init__(self, reader, writer, typestore, cache: ResultCache, segmenter, batch_size: int,
                 vocabulary: Vocabulary, image_topics, vocab_topics, start_time: int,
                 bar: tqdm, on_batch: Optional[Callable[[int], None]], output_layout: str = "node"):
        self.reader, self.writer, self.typestore = reader, writer, typestore
        self.types = rosbags_types(typestore)
        self.cache, self.segmenter, self.batch_size = cache, segmenter, batch_size
        self.bar, self.on_batch = bar, on_batch
        self.image_topics, self.vocab_topics = set(image_topics), set(vocab_topics)
        self.summary = BagSummary()
        self.topics = result_topics(image_topics, output_layout)
        outputs = {VOCABULARY_TOPIC} | {o for pair in self.topics.values() for o in pair}
        kept = [c for c in reader.connections if c.topic not in outputs]
        self.summary.dropped_topics = sorted({c.topic for c in reader.connections if c.topic in outputs})
        self.connmap, self.convmap = create_connections_converters(kept, None, reader, writer)
        self.out = {}
        for pan, sem in self.topics.values():
            self.out[pan] = writer.add_connection(pan, PANOPTIC_TYPE, typestore=typestore)
            self.out[sem] = writer.add_connection(sem, IMAGE_TYPE, typestore=typestore)
        self.out[VOCABULARY_TOPIC] = writer.add_connection(VOCABULARY_TOPIC, VOCABULARY_TYPE, typestore=typestore,
                                                           offered_qos_profiles=LATCH)
        self.pending: List[tuple] = []          # ("msg", connection, time, bytes) | ("frame", index, topic, time)
        self.pending_bytes = 0
        self.results: Dict[int, Tuple[bytes, Optional[bytes]]] = {}
        self.batch: List[Frame] = []
        self.vocabulary, self.version = vocabulary, 0
        self.set_vocabulary(vocabulary, start_time, None)   # at the bag's first record time

    # -- output
    def header(self, stamp_ns: int, frame_id: str = ""):
        t = self.typestore.types
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id=frame_id)

    def serialize(self, msg, msgtype: str) -> bytes:
        return bytes(self.typestore.serialize_cdr(msg, msgtype))

    def set_vocabulary(self, vocabulary: Vocabulary, time: int, header) -> None:
        self.vocabulary, self.version = vocabulary, self.version + 1
        self.summary.vocabulary_version = self.version
        msg = vocabulary_message(vocabulary, self.version, header or self.header(time), self.types)
        self.add(self.out[VOCABULARY_TOPIC], time, self.serialize(msg, VOCABULARY_TYPE))

    def add(self, connection, time: int, data) -> None:
        self.pending.append(("msg", connection, time, data))
        self.pending_bytes += len(data)

    def flush(self) -> None:
        """Writes everything up to the first frame still waiting for its result."""
        done = 0
        for item in self.pending:
            if item[0] == "msg":
                self.writer.write(item[1], item[2], item[3])
            else:
                _, index, topic, time = item
                if index not in self.results:
                    break
                panoptic, semantic = self.results.pop(index)
                pan, sem = self.topics[topic]
                self.writer.write(self.out[pan], time, panoptic)
                if semantic is not None:
                    self.writer.write(self.out[sem], time, semantic)
            done += 1
        del self.pending[:done]
        self.pending_bytes = sum(len(item[3]) for item in self.pending if item[0] == "msg")

    # -- frames
    def result_messages(self, result: PanopticResult, header) -> Tuple[bytes, bytes]:
        return (self.serialize(panoptic_message(result, header, self.types), PANOPTIC_TYPE),
                self.serialize(label_image(result.semantic_map, header, self.types), IMAGE_TYPE))

    def run_batch(self) -> None:
        if not self.batch:
            return
        results = self.segmenter([f.image for f in self.batch], self.vocabulary, vocabulary_version=self.version)
        rows = [(f.index, *self.result_messages(r, f.header)) for f, r in zip(self.batch, results)]
        self.cache.put(rows)
        for index, panoptic, semantic in rows:
            self.results[index] = (panoptic, semantic)
        self.summary.computed += len(self.batch)
        self.bar.update(len(self.batch))
        self.batch = []
        self.flush()
        if self.on_batch is not None:
            self.on_batch(len(self.cache))

    def bad_frame(self, frame: Frame, topic: str, time: int, err: Exception) -> None:
        """No image: an empty result (0x0 id image, no segments) keeps one result per frame."""
        empty = PanopticResult(segment_map=np.zeros((0, 0), np.int32), segments=[],
                               semantic_map=np.zeros((0, 0), np.int32), class_names=self.vocabulary.names,
                               class_is_thing=self.vocabulary.is_thing, vocabulary_version=self.version)
        panoptic = self.serialize(panoptic_message(empty, frame.header, self.types), PANOPTIC_TYPE)
        self.results[frame.index] = (panoptic, None)
        self.summary.bad_frames.append(f"{topic} at {time} ns: {err}")
        tqdm.write(f"ovseg-bag: frame {frame.index} ({topic}, record time {time}): {err}; "
                   f"writing an empty result", file=sys.stderr)
        self.bar.update(1)

    def on_image(self, conn, time: int, raw) -> None:
        index = self.summary.frames
        self.summary.frames += 1
        self.pending.append(("frame", index, conn.topic, time))
        cached = self.cache.get(index)
        if cached is not None:
            self.results[index] = cached
            self.bar.update(1)
            return
        frame = Frame(index, None, None)
        try:
            msg = self.reader.deserialize(raw, conn.msgtype)
            frame.header = self.header(header_stamp_ns(msg.header), msg.header.frame_id)
            frame.image = to_rgb(msg)
        except (BadImage, AnyReaderError) as err:   # undecodable pixels, or a corrupt message
            if frame.header is None:
                frame.header = self.header(time)
            self.bad_frame(frame, conn.topic, time, err)
            return
        self.batch.append(frame)
        if len(self.batch) >= self.batch_size:
            self.run_batch()

    def on_vocabulary(self, conn, time: int, raw) -> None:
        """A vocabulary different from the current one switches it (an equal one, e.g. the
        node's echo on ~/vocabulary of a ~/vocabulary_text request, changes nothing)."""
        try:
            msg = self.reader.deserialize(raw, conn.msgtype)
            vocabulary = _vocabulary_of(msg, conn.msgtype)
        except (ValueError, AnyReaderError) as err:
            self.summary.bad_vocabularies.append(f"{conn.topic} at {time} ns: {err}")
            tqdm.write(f"ovseg-bag: vocabulary on {conn.topic} at record time {time} refused, keeping "
                       f"version {self.version}: {err}", file=sys.stderr)
            return
        if not vocabulary_changes(self.vocabulary, vocabulary):   # the node's rule
            return
        self.run_batch()        # frames before the message keep the old vocabulary
        header = self.header(header_stamp_ns(msg.header), msg.header.frame_id) \
            if hasattr(msg, "header") else None
        self.set_vocabulary(vocabulary, time, header)

    def run(self) -> BagSummary:
        for conn, record_time, raw in self.reader.messages():
            key = (conn.id, conn.owner)
            if key in self.connmap:   # else one of our output topics, recorded earlier: replaced
                self.add(self.connmap[key], record_time, self.convmap[conn.msgtype](raw))
            if conn.topic in self.image_topics:
                self.on_image(conn, record_time, raw)
            elif conn.topic in self.vocab_topics:
                self.on_vocabulary(conn, record_time, raw)
            if not self.batch:
                self.flush()
            elif self.pending_bytes > MAX_PENDING_BYTES:
                self.run_batch()
        self.run_batch()
        self.flush()
        if self.pending:
            raise RuntimeError(f"{len(self.pending)} messages left unwritten (a frame without a result)")
        return self.summary


def first_vocabulary(reader, vocab_topics: Sequence[str]) -> Optional[Vocabulary]:
    """The first valid vocabulary recorded in the bag (used from the start when no
    --vocab is given)."""
    conns = [c for c in reader.connections if c.topic in set(vocab_topics)]
    if not conns:
        return None
    for conn, _, raw in reader.messages(connections=conns):
        try:
            return _vocabulary_of(reader.deserialize(raw, conn.msgtype), conn.msgtype)
        except ValueError:
            continue
    return None


def process_bag(src, dst, segmenter, image_topics: Sequence[str], vocabulary=None,
                vocab_topics: Optional[Sequence[str]] = None, batch_size: int = 4,
                storage: Optional[str] = None, model: Optional[dict] = None, restart: bool = False,
                progress: bool = True, on_batch: Optional[Callable[[int], None]] = None,
                output_layout: str = "node") -> BagSummary:
    """Segments every frame of ``src`` on ``image_topics`` and writes ``dst`` (a rosbag2
    folder). ``vocabulary`` (text or Vocabulary) is used until the bag switches; without
    it, the bag's first one is. ``vocab_topics`` None: auto-detect; []: ignore the bag's.
    ``model`` describes how ``segmenter`` was built (resume refuses a different one);
    ``output_layout``: where the results go (:func:`result_topics`);
    ``on_batch(frames_committed)`` runs after every commit."""
    src, dst = Path(src), Path(dst)
    check_input(src)
    if dst.exists():
        raise BagError(f"{dst} exists; choose another output path or delete it")
    if batch_size < 1:
        raise BagError(f"--batch-size must be at least 1, got {batch_size}")
    storage = storage or input_storage(src)
    if storage not in STORAGES:
        raise BagError(f"unknown storage {storage!r}; choose {' or '.join(STORAGES)}")
    store = typestore()
    start = time.perf_counter()
    with AnyReader([src], default_typestore=store) as reader:
        image_topics, vocab_topics = _select_topics(reader, image_topics, vocab_topics)
        result_topics(image_topics, output_layout)   # names that cannot be made fail before any work
        if vocabulary is not None:
            vocabulary = Vocabulary.from_any(vocabulary)
        else:
            vocabulary = first_vocabulary(reader, vocab_topics)
            if vocabulary is None:
                raise BagError(f"no vocabulary: give --vocab, or record one in the bag on a "
                               f"{VOCABULARY_TYPE} topic or a {STRING_TYPE} topic ending in vocabulary_text")
        settings = {"input": input_fingerprint(src), "image_topics": image_topics, "vocab_topics": vocab_topics,
                    "vocabulary": vocabulary.to_text(), "batch_size": batch_size, "storage": storage,
                    "model": model or {}, "output_layout": output_layout}
        partial = partial_dir(dst)
        if restart and partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        cache = ResultCache(partial / "results.sqlite", settings)
        try:
            done = len(cache)
            if done:
                tqdm.write(f"ovseg-bag: resuming: {done} frame(s) already segmented in {partial}", file=sys.stderr)
            tmp = partial / "bag"
            if tmp.exists():
                shutil.rmtree(tmp)       # an incomplete bag of the killed run; rebuilt from the state
            total = sum(c.msgcount for c in reader.connections if c.topic in image_topics)
            writer = Writer(tmp, version=Writer.VERSION_LATEST,
                            storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
            with writer, tqdm(total=total, unit="frame", desc="ovseg-bag", disable=not progress,
                              file=sys.stderr, smoothing=0.1) as bar:
                summary = _Run(reader, writer, store, cache, segmenter, batch_size, vocabulary,
                               image_topics, vocab_topics, reader.start_time, bar, on_batch, output_layout).run()
        finally:
            cache.close()
    tmp.rename(dst)          # atomic: OUT appears complete or not at all
    shutil.rmtree(partial)
    summary.seconds = time.perf_counter() - start
    return summary


# ---------------------------------------------------------------------------- ground truth

@dataclass
class GroundTruth:
    """A COCO-panoptic set whose images are frames of the bag, keyed by (topic key or
    None, stamp in ns)."""

    categories: List[dict]
    annotations: Dict[Tuple[Optional[str], int], dict]
    png_dir: Path

    @property
    def names(self) -> List[str]:
        return [c["name"] for c in self.categories]


_GT_NAME = re.compile(r"(?:(?P<topic>.+?)[_/-])?(?P<stamp>\d+)")


def load_ground_truth(gt_dir: Path, gt_json: Optional[Path] = None) -> GroundTruth:
    """``gt_dir`` holds ``panoptic.json`` (or ``--gt-json``) and the panoptic PNGs in
    ``gt_dir/panoptic/``, ``gt_dir/<json stem>/`` or ``gt_dir`` itself: the layout
    ``ovseg segment`` writes and COCO's. A GT image belongs to the frame whose *header*
    stamp, in nanoseconds, is the number ending its PNG's name; with several image
    topics the name starts with the topic, slashes as underscores:
    ``1700000000123456789.png``, ``camera_front_image_raw_1700000000123456789.png``.

    All of it is checked here, before any frame is segmented: the JSON is COCO-panoptic,
    every PNG exists and decodes, its segments' categories are listed and their areas
    agree with the PNG. A problem raises :class:`BagError` naming the file."""
    gt_dir = Path(gt_dir)
    gt_json = Path(gt_json) if gt_json else gt_dir / "panoptic.json"
    layout = (f"expected {gt_dir}/panoptic.json (or --gt-json) and the panoptic PNGs in "
              f"{gt_dir}/panoptic/, named STAMP_NS.png or TOPIC_STAMP_NS.png")
    if not gt_json.is_file():
        raise BagError(f"no ground-truth JSON at {gt_json}; {layout}")
    try:
        data = check_panoptic_json(load_json(gt_json, "ground-truth"), gt_json, "ground-truth")
    except InputError as err:
        raise BagError(str(err)) from None
    for png_dir in (gt_dir / "panoptic", gt_dir / gt_json.stem, gt_dir):
        if data["annotations"] and (png_dir / data["annotations"][0]["file_name"]).is_file():
            break
    else:
        if data["annotations"]:
            raise BagError(f"the PNG {data['annotations'][0]['file_name']} named in {gt_json} is in none of "
                           f"{gt_dir}/panoptic/, {gt_dir}/{gt_json.stem}/, {gt_dir}/; {layout}")
    annotations = {}
    for ann in data["annotations"]:
        m = _GT_NAME.fullmatch(PurePosixPath(ann["file_name"]).with_suffix("").as_posix())
        if m is None:
            raise BagError(f"GT file {ann['file_name']!r} does not end in a stamp; {layout}")
        topic = m.group("topic").replace("/", "_") if m.group("topic") else None
        annotations[(topic, int(m.group("stamp")))] = ann
    listed = {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        _check_gt_image(png_dir / ann["file_name"], ann, listed, gt_json)
    return GroundTruth(data["categories"], annotations, png_dir)


def _check_gt_image(png: Path, ann: dict, listed: set, gt_json: Path) -> None:
    """One GT image fit to score: its PNG decodes, its categories are in the JSON, its
    areas are the PNG's pixel counts (else IoU could pass 1)."""
    try:
        ids = read_panoptic_png(str(png), "GT PNG")
    except InputError as err:
        raise BagError(str(err)) from None
    unlisted = sorted({s["category_id"] for s in ann["segments_info"]} - listed)
    if unlisted:
        raise BagError(f"{gt_json}: {ann['file_name']}: category ids {unlisted} are not in the JSON's categories; "
                       f"add them or fix the segments")
    values, counts = np.unique(ids, return_counts=True)
    pixels = dict(zip(values.tolist(), counts.tolist()))
    for s in ann["segments_info"]:
        if "area" in s and pixels.get(s["id"], 0) != s["area"]:
            raise BagError(f"{png}: segment {s['id']} has {pixels.get(s['id'], 0)} pixels but area {s['area']} "
                           f"in {gt_json}; fix the PNG or the area (its pixel count)")


def _class_lut(class_names: Sequence[str], gt: GroundTruth) -> np.ndarray:
    """Vocabulary index -> GT category index; classes the GT does not know -> len(GT)."""
    index = {n.casefold(): i for i, n in enumerate(gt.names)}
    return np.array([index.get(n.casefold(), len(gt.names)) for n in class_names], np.int64)


def evaluate_bag(bag: Path, image_topics: Sequence[str], gt: GroundTruth, progress: bool = True,
                 output_layout: str = "node") -> dict:
    """PQ and mIoU of the results in an ``ovseg-bag`` output against ``gt``.

    Classes are matched to GT categories by name (case-insensitive). A predicted class
    the GT does not list can match nothing: its pixels count against the GT classes they
    cover (missed GT segments are false negatives, mIoU loses them), but it adds no
    category of its own to the means."""
    n = len(gt.names)
    unprefixed = [k for k in gt.annotations if k[0] is None]
    if len(image_topics) > 1 and unprefixed:
        raise BagError(f"{len(unprefixed)} GT file(s) name no topic (e.g. {unprefixed[0][1]}.png) but the bag "
                       f"has {len(image_topics)} image topics; name them TOPIC_STAMP_NS.png, e.g. "
                       f"{stamp_key(image_topics[0])}_{unprefixed[0][1]}.png")

    def gt_key(topic: str, stamp: int):
        """The GT entry of a frame: named with its topic, or (one image topic) without."""
        for key in ((stamp_key(topic), stamp), (None, stamp)):
            if key in gt.annotations:
                return key
        return None

    cat_index = {c["id"]: i for i, c in enumerate(gt.categories)}
    pq, sem = PQStat(n + 1), SemanticStat(n + 1, ignore_label=max(255, n + 1))
    unknown: Dict[str, int] = {}
    matched = set()
    semantic: Dict[Tuple[str, int], np.ndarray] = {}
    with AnyReader([Path(bag)], default_typestore=typestore()) as reader:
        topics = result_topics(image_topics, output_layout)
        wanted = {o: t for t, pair in topics.items() for o in pair}
        conns = [c for c in reader.connections if c.topic in wanted]
        total = sum(c.msgcount for c in conns)
        panoptic: Dict[Tuple[str, int], object] = {}
        for conn, _, raw in tqdm(reader.messages(connections=conns), total=total, unit="msg",
                                 desc="evaluate", disable=not progress, file=sys.stderr):
            msg = reader.deserialize(raw, conn.msgtype)
            topic = wanted[conn.topic]
            key = gt_key(topic, header_stamp_ns(msg.header))
            if key is None:
                continue
            store = panoptic if conn.topic == topics[topic][0] else semantic
            store[key] = msg
        for key, msg in panoptic.items():
            ann = gt.annotations[key]
            where = f"GT {ann['file_name']}"
            gt_map = read_panoptic_png(str(gt.png_dir / ann["file_name"]))
            unlisted = {s["category_id"] for s in ann["segments_info"]} - set(cat_index)
            if unlisted:
                raise BagError(f"{where}: category ids {sorted(unlisted)} are not in the GT JSON's categories")
            gt_segments = [{**s, "category_id": cat_index[s["category_id"]]} for s in ann["segments_info"]]
            lut = _class_lut(msg.class_names, gt)
            pred_map = label_array(msg.id_image)
            if pred_map.size == 0:
                raise BagError(f"{where}: the frame could not be decoded (empty result) "
                               f"but has ground truth; fix or remove that GT image")
            for s in msg.segments:
                if lut[s.class_index] == n:
                    unknown[s.class_name] = unknown.get(s.class_name, 0) + 1
            pq += pq_prediction(gt_map, gt_segments, pred_map,
                                [{"id": s.id, "category_id": int(lut[s.class_index])} for s in msg.segments], n + 1)
            labels = np.full(gt_map.shape, sem.ignore_label, np.int64)
            for s in gt_segments:
                labels[gt_map == s["id"]] = s["category_id"]
            if key in semantic:
                classes = resize_labels(label_array(semantic.pop(key)), gt_map.shape)
                sem.update(lut[classes], labels)
            matched.add(key)
    is_thing = [bool(c.get("isthing", 0)) for c in gt.categories]
    semantic_summary = sem.summary(gt.names + ["(not in the ground truth)"])
    semantic_summary["per_class"].pop("(not in the ground truth)")
    return {"frames": len(matched), "gt_images": len(gt.annotations),
            "gt_without_frame": sorted(f"{k[0] + '_' if k[0] else ''}{k[1]}" for k in set(gt.annotations) - matched),
            "segments_of_classes_not_in_gt": unknown,
            "panoptic": PQStat(n, pq.sums[:n]).summary(gt.names, is_thing),
            "semantic": semantic_summary}


def format_evaluation(report: dict) -> str:
    miou = report["semantic"]["mIoU"]
    lines = [f"ground truth: {report['frames']} of {report['gt_images']} GT image(s) matched a frame",
             format_table(report["panoptic"]),
             f"mIoU {100 * miou:.1f}" if miou is not None else "mIoU: no GT pixels"]
    if report["gt_without_frame"]:
        lines.append(f"GT images without a frame (stamp not in the bag): {', '.join(report['gt_without_frame'][:5])}"
                     + (" ..." if len(report["gt_without_frame"]) > 5 else ""))
    if report["segments_of_classes_not_in_gt"]:
        lines.append(f"segments of classes the GT does not list (never matched): "
                     f"{report['segments_of_classes_not_in_gt']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    from ovseg_core.cli import add_model_arguments

    p = argparse.ArgumentParser(prog="ovseg-bag", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="rosbag2 folder, .db3/.mcap file, or ROS 1 .bag")
    p.add_argument("output", type=Path, help="output rosbag2 folder (must not exist)")
    p.add_argument("--image-topics", nargs="+", required=True, metavar="TOPIC",
                   help="sensor_msgs/Image or CompressedImage topics to segment")
    p.add_argument("--vocab", help='initial vocabulary, e.g. "car; road [stuff]; person,child" '
                                   '(default: the first one recorded in the bag)')
    p.add_argument("--vocab-topics", nargs="*", metavar="TOPIC",
                   help=f"topics whose {STRING_TYPE} / {VOCABULARY_TYPE} messages switch the vocabulary "
                        f"(default: every {VOCABULARY_TYPE} topic and String topics ending in "
                        f"vocabulary_text; give the flag alone to ignore the bag's)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per forward")
    p.add_argument("--output-layout", choices=OUTPUT_LAYOUTS, default="node",
                   help="node: results on /ovseg/NAME/panoptic, .../semantic, as the node publishes them; "
                        "camera: beside each camera (/front/ovseg/panoptic)")
    add_model_arguments(p)
    p.add_argument("--storage", choices=STORAGES, help="output storage (default: the input's; ROS 1 -> sqlite3)")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run's state instead of resuming")
    p.add_argument("--gt-dir", type=Path, help="COCO-panoptic ground truth (docs/evaluation.md): report PQ and mIoU")
    p.add_argument("--gt-json", type=Path, help="the GT JSON if not GT_DIR/panoptic.json")
    p.add_argument("--eval-json", type=Path, help="write the PQ/mIoU numbers here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _file_identity(path: Optional[str]) -> Optional[list]:
    if not path or not Path(path).is_file():
        return path
    data = Path(path).read_bytes()
    return [str(Path(path).resolve()), hashlib.sha1(data).hexdigest()]


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    gt = None
    try:
        check_input(args.input)
        if args.output.exists():
            raise BagError(f"{args.output} exists; choose another output path or delete it")
        vocabulary = Vocabulary.parse(args.vocab) if args.vocab is not None else None
        check_topics(args.input, args.image_topics, args.vocab_topics)
        result_topics(args.image_topics, args.output_layout)
        if args.gt_dir is not None:
            gt = load_ground_truth(args.gt_dir, args.gt_json)
        if args.eval_json is not None and args.eval_json.is_dir():
            raise BagError(f"--eval-json {args.eval_json} is a folder; give a file name")
    except (BagError, ValueError) as err:
        print(f"ovseg-bag: {err}", file=sys.stderr)
        return 2
    except AnyReaderError as err:
        print(f"ovseg-bag: cannot read {args.input}: {err}", file=sys.stderr)
        return 2
    try:
        from ovseg_core.cli import model_from_args
        segmenter, overrides = model_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"ovseg-bag: {err}", file=sys.stderr)
        return 2
    model = {"preset": args.preset, "weights": _file_identity(args.weights), "device": str(segmenter.device),
             "overrides": overrides, "seed": args.seed}
    try:
        summary = process_bag(args.input, args.output, segmenter, args.image_topics, vocabulary,
                              args.vocab_topics, args.batch_size, args.storage, model, args.restart,
                              progress=not args.quiet, output_layout=args.output_layout)
    except BagError as err:
        print(f"ovseg-bag: {err}", file=sys.stderr)
        return 2
    except (AnyReaderError, WriterError) as err:
        print(f"ovseg-bag: cannot read {args.input} or write {args.output}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ovseg-bag: interrupted; the same command resumes from {partial_dir(args.output)}",
              file=sys.stderr)
        return 130
    rate = summary.computed / summary.seconds if summary.seconds else 0.0
    print(f"ovseg-bag: wrote {args.output}: {summary.frames} frame(s), {summary.computed} segmented now "
          f"({rate:.1f} frames/s), vocabulary version {summary.vocabulary_version}", file=sys.stderr)
    if summary.dropped_topics:
        print(f"ovseg-bag: replaced the input's {', '.join(summary.dropped_topics)} with new results",
              file=sys.stderr)
    if gt is not None:
        report = evaluate_bag(args.output, args.image_topics, gt, progress=not args.quiet,
                              output_layout=args.output_layout)
        print(format_evaluation(report))
        if args.eval_json:
            try:
                dump_json(report, args.eval_json)
            except OSError as err:
                print(f"ovseg-bag: {args.eval_json}: cannot write the evaluation ({err.strerror or err}); "
                      f"the results bag {args.output} is complete", file=sys.stderr)
                return 2
    failed = summary.bad_frames or summary.bad_vocabularies
    if failed:
        print(f"ovseg-bag: {len(summary.bad_frames)} undecodable frame(s) (empty results), "
              f"{len(summary.bad_vocabularies)} refused vocabulary message(s)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
