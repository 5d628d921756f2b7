"""``ovseg export``: a Segmenter's three networks as checked ONNX models, plus a manifest.

- ``proposals.onnx``: images [B, 3, H, W] in [0, 1] (the proposal stage's batch) ->
  mask logits [B, Q, h, w] and objectness [B, Q] (Mask2Former, normalisation inside);
- ``classifier.onnx``: CLIP's batch [B, 3, H', W'] in [0, 1], mask logits [B, Q, h, w],
  the vocabulary's text embeddings [S, E] and its class table [K, M] (ClassEmbeddings)
  -> logits [B, Q, K(+1)], the attention bias and the Distribution Adapter inside;
- ``text.onnx``: CLIP tokens [N, L] -> text features [N, E] (a new vocabulary needs no
  PyTorch model).

Batch, queries, synonyms and classes are dynamic; the image sizes are fixed (pooling to
the patch grid and the position embeddings are laid out for one size), so an export is
for one camera resolution (``image_size``), as TensorRT engines are.

Every model is checked before it is written: onnx.checker, then ONNX Runtime against
PyTorch on ShapesWorld scenes and ShapesWorld classes; outputs that differ by more
than the tolerance (relative to the output's scale, at least 1) abort the export and
nothing lands in the output folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..resize import fitted_size
from ..structures import MaskProposals
from ..text import ClassEmbeddings

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-3      # the acceptance's logits tolerance (fp32)
FILES = {"proposals": "proposals.onnx", "classifier": "classifier.onnx", "text": "text.onnx"}


class ExportMismatchError(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance: the export is wrong."""


def require_onnx():
    """(onnx, onnxruntime), or an ImportError that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"ONNX export and serving need onnx and onnxruntime ({err}); install them with "
                          f"pip install 'ovseg[export]' (or pip install onnx onnxruntime; onnxruntime-gpu "
                          f"for CUDA)") from err
    return onnx, onnxruntime


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _text_view(embeddings: torch.Tensor, table: torch.Tensor) -> ClassEmbeddings:
    """ClassEmbeddings from graph inputs: its checks (bincount) are data-dependent and were
    made when the vocabulary was encoded, so the traced graph skips them."""
    text = ClassEmbeddings.__new__(ClassEmbeddings)
    text.embeddings, text._table = embeddings, table
    text.class_of, text.num_classes = None, table.shape[0]
    return text


class ProposalGraph(nn.Module):
    def __init__(self, proposals: nn.Module):
        super().__init__()
        self.proposals = proposals

    def forward(self, images):
        out = self.proposals(images)
        return out.masks, out.objectness


class ClassifierGraph(nn.Module):
    """The classifier as served, on the segmenter's already laid out batch. Objectness
    plays no part in the logits (it is applied after), so it is not an input."""

    def __init__(self, classifier: nn.Module, with_seen: bool):
        super().__init__()
        self.classifier = classifier
        self.with_seen = with_seen

    def forward(self, images, masks, text_embeddings, class_table, seen=None):
        proposals = MaskProposals(masks, masks.new_ones(masks.shape[:2]))
        return self.classifier(images, proposals, _text_view(text_embeddings, class_table),
                               seen if self.with_seen else None)


class TextGraph(nn.Module):
    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, tokens):
        return self.clip.encode_text(tokens)


@dataclasses.dataclass
class Sizes:
    """The fixed spatial sizes of an export (one camera resolution)."""
    image: Tuple[int, int]       # the camera's (H, W)
    proposals: Tuple[int, int]   # the proposal stage's batch
    clip: Tuple[int, int]        # CLIP's batch
    masks: Tuple[int, int]       # the proposals' mask logits


def export_sizes(segmenter, image_size: Optional[Sequence[int]] = None) -> Sizes:
    """The stage sizes an image of ``image_size`` (default: the proposal stage's input
    size) is laid out to. CLIP's size must be a whole number of patches: otherwise a
    single image would be padded, which the fixed-size graph does not take."""
    image = tuple(int(s) for s in (image_size or segmenter.proposal_size))
    if len(image) != 2 or min(image) < 1:
        raise ValueError(f"image size must be H W (two positive ints), got {image_size}")
    prop = fitted_size(image, segmenter.proposal_size, segmenter.proposal_resize)
    clip = fitted_size(image, segmenter.clip_size, segmenter.clip_resize)
    patch = segmenter._clip_multiple()
    if clip[0] % patch or clip[1] % patch:
        raise ValueError(f"images of {image[0]}x{image[1]} give a CLIP input of {clip[0]}x{clip[1]}, not a "
                         f"multiple of its {patch}-px patches (the segmenter would pad it, which a fixed-size "
                         f"export cannot); choose an image size whose aspect ratio gives whole patches "
                         f"(e.g. {segmenter.clip_size[0]}x{segmenter.clip_size[1]} or 4:3), or resize the "
                         f"camera images before segmenting")
    with torch.no_grad():
        masks = segmenter.proposals(torch.zeros(1, 3, *prop, device=segmenter.device)).masks.shape[-2:]
    return Sizes(image, tuple(prop), tuple(clip), tuple(int(m) for m in masks))


# ShapesWorld's classes, some with synonyms (so the class table has several columns); a
# short list because the PyTorch text tower encodes it for the check (14 prompts a name).
CHECK_VOCABULARY = ("red circle, red disc; blue square; green triangle; yellow star; purple hexagon; orange cross; "
                    "sky [stuff]; grass, lawn [stuff]; water [stuff]; road, street [stuff]; brick wall [stuff]; "
                    "snow [stuff]")


def check_inputs(segmenter, sizes: Sizes, num_images: int = 2, seed: int = 0):
    """Real inputs for the checks: ShapesWorld scenes at the camera size and
    CHECK_VOCABULARY. -> (layout, proposals, vocabulary, text)."""
    from ..shapes.world import generate_scene
    images = [torch.from_numpy(generate_scene(seed + i, size=sizes.image).image).permute(2, 0, 1).float() / 255
              for i in range(num_images)]
    layout = segmenter.layout([im.to(segmenter.device) for im in images])
    vocab, text = segmenter.encode_vocabulary(CHECK_VOCABULARY)
    with torch.no_grad():
        proposals = segmenter.proposals(layout.proposal_batch)
    return layout, proposals, vocab, text


def _worst(got: np.ndarray, want: np.ndarray) -> Tuple[float, float]:
    """(max abs difference, the output's scale: max(1, max |want|))."""
    if got.shape != want.shape:
        return float("inf"), 1.0
    if want.size == 0:
        return 0.0, 1.0
    return float(np.abs(got.astype(np.float64) - want).max()), max(1.0, float(np.abs(want).max()))


def compare(name: str, got: Sequence[np.ndarray], want: Sequence[torch.Tensor], tolerance: float) -> Dict:
    """Raises ExportMismatchError when an output differs by more than ``tolerance`` times
    its scale; returns the differences (for the manifest)."""
    report = {}
    for i, (g, w) in enumerate(zip(got, want)):
        diff, scale = _worst(np.asarray(g), w.detach().float().cpu().numpy())
        report[f"output{i}"] = {"max_abs_diff": diff, "scale": scale}
        if not diff <= tolerance * scale:
            raise ExportMismatchError(
                f"{name}: ONNX Runtime's output {i} differs from PyTorch's by {diff:.3g} (allowed "
                f"{tolerance:g} x {scale:.3g}); nothing was written. The graph does not reproduce the "
                f"model; report it with the preset and the image size")
    return report


def _session(path: Path, device: torch.device):
    _, ort = require_onnx()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), providers=providers)


@contextlib.contextmanager
def _quiet():
    """The tracer warns about every Python branch on a shape; the checks below are what
    tells whether the graph is right."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _export(module, args, path: Path, names_in, names_out, dynamic, opset: int):
    onnx, _ = require_onnx()
    with _quiet(), torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=names_in,
                          output_names=names_out, dynamic_axes=dynamic, do_constant_folding=True)
    onnx.checker.check_model(str(path))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def export_segmenter(segmenter, out: Path, image_size: Optional[Sequence[int]] = None,
                     opset: int = DEFAULT_OPSET, tolerance: float = DEFAULT_TOLERANCE,
                     weights: Optional[str] = None, log=print) -> Dict:
    """Writes the three models and ``manifest.json`` to ``out``; returns the manifest.
    ``weights``: the delta the segmenter was built with (its hash goes into the manifest).
    The segmenter must run in fp32 (precision: fp32): the checks compare fp32 outputs."""
    onnx, ort = require_onnx()
    if segmenter.amp_dtype is not None:
        raise ValueError(f"export a segmenter built in fp32, not {segmenter.amp_dtype}; build it with "
                         f"precision fp32 (ovseg export does); fp16 comes with the TensorRT engine")
    started = time.perf_counter()
    out = Path(out)
    sizes = export_sizes(segmenter, image_size)
    layout, proposals, vocab, text = check_inputs(segmenter, sizes)
    classifier = segmenter.classifier
    with_seen = bool(segmenter.seen_classes)
    seen = segmenter.seen_mask(vocab)
    tokens = segmenter.text_encoder.tokenizer([f"a photo of a {n}." for n in vocab.names[:8]]) \
        .to(segmenter.text_encoder.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    checks, timings = {}, {}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.partial-") as tmp:
        tmp = Path(tmp)
        # proposals
        t0 = time.perf_counter()
        _export(ProposalGraph(segmenter.proposals), (layout.proposal_batch,), tmp / FILES["proposals"],
                ["images"], ["masks", "objectness"],
                {"images": {0: "batch"}, "masks": {0: "batch"}, "objectness": {0: "batch"}}, opset)
        got = _session(tmp / FILES["proposals"], segmenter.device).run(
            None, {"images": _numpy(layout.proposal_batch)})
        checks["proposals"] = compare("proposals.onnx", got, [proposals.masks, proposals.objectness], tolerance)
        timings["proposals"] = time.perf_counter() - t0
        # classifier, on the real proposals of the check scenes (as the segmenter feeds it)
        t0 = time.perf_counter()
        names = ["images", "masks", "text_embeddings", "class_table"] + (["seen"] if with_seen else [])
        inputs = [layout.clip_batch, proposals.masks, text.embeddings, text._table] + ([seen] if with_seen else [])
        dynamic = {"images": {0: "batch"}, "masks": {0: "batch", 1: "queries"},
                   "text_embeddings": {0: "synonyms"}, "class_table": {0: "classes", 1: "max_synonyms"},
                   "logits": {0: "batch", 1: "queries", 2: "classes_out"}}
        if with_seen:
            dynamic["seen"] = {0: "classes"}
        _export(ClassifierGraph(classifier, with_seen), tuple(inputs), tmp / FILES["classifier"], names,
                ["logits"], dynamic, opset)
        session = _session(tmp / FILES["classifier"], segmenter.device)
        checks["classifier"] = {}
        # Twice: the traced shapes, then other numbers of images, queries and classes, so a
        # dimension frozen by the trace is caught here.
        for label, keep_images, keep_queries, keep_classes in (("as traced", None, None, None),
                                                               ("other sizes", 1, 5, 7)):
            sub_vocab, sub_text = (vocab, text) if keep_classes is None else \
                segmenter.encode_vocabulary("; ".join(c.to_text() for c in vocab.classes[:keep_classes]))
            b = slice(None, keep_images)
            masks = proposals.masks[b, :keep_queries].contiguous()
            feed = {"images": layout.clip_batch[b], "masks": masks, "text_embeddings": sub_text.embeddings,
                    "class_table": sub_text._table}
            sub_seen = segmenter.seen_mask(sub_vocab)
            if with_seen:
                feed["seen"] = sub_seen
            got = session.run(None, {k: _numpy(v) for k, v in feed.items()})
            with torch.no_grad():
                want = classifier(feed["images"], MaskProposals(masks, masks.new_ones(masks.shape[:2])), sub_text,
                                  sub_seen)
            checks["classifier"][label] = compare(f"classifier.onnx ({label})", got, [want], tolerance)
        timings["classifier"] = time.perf_counter() - t0
        # text
        t0 = time.perf_counter()
        clip = segmenter.text_encoder.model
        _export(TextGraph(clip), (tokens,), tmp / FILES["text"], ["tokens"], ["features"],
                {"tokens": {0: "prompts"}, "features": {0: "prompts"}}, opset)
        more = segmenter.text_encoder.tokenizer([f"there is a {n} in the scene" for n in vocab.names[8:11]]) \
            .to(tokens.device)
        session = _session(tmp / FILES["text"], segmenter.device)
        checks["text"] = {}
        for label, batch in (("as traced", tokens), ("other sizes", more)):
            with torch.no_grad():
                want = clip.encode_text(batch)
            checks["text"][label] = compare(f"text.onnx ({label})", session.run(None, {"tokens": _numpy(batch)}),
                                            [want], tolerance)
        timings["text"] = time.perf_counter() - t0

        cfg = segmenter.config
        manifest = {
            "format": FORMAT_VERSION,
            "preset": segmenter.name,
            "config": {k: dataclasses.asdict(getattr(cfg, k)) if getattr(cfg, k) is not None else None
                       for k in MODEL_SECTIONS} if cfg is not None else None,
            "weights": str(weights) if weights else None,
            "weights_sha256": sha256(weights) if weights else None,
            "sizes": dataclasses.asdict(sizes),
            "patch_size": segmenter._clip_multiple(),
            "num_queries": int(proposals.masks.shape[1]),
            "context_length": int(tokens.shape[-1]),
            "seen_classes": sorted(segmenter.seen_classes),
            "opset": opset,
            "tolerance": tolerance,
            "checks": checks,
            "export_seconds": timings,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
            "files": {},
        }
        for key, name in FILES.items():
            manifest["files"][key] = {"path": name, "bytes": (tmp / name).stat().st_size,
                                      "sha256": sha256(tmp / name)}
        manifest["export_seconds"]["total"] = time.perf_counter() - started
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        # Checked: only now does anything reach ``out`` (a previous export there is replaced).
        out.mkdir(parents=True, exist_ok=True)
        for name in list(FILES.values()) + [MANIFEST]:
            shutil.move(str(tmp / name), str(out / name))
    log(f"exported {segmenter.name} for {sizes.image[0]}x{sizes.image[1]} images to {out} in "
        f"{manifest['export_seconds']['total']:.1f} s (checked against PyTorch, tolerance {tolerance:g})")
    return manifest


# The preset sections that decide what the graphs compute; serving checks them against the export.
MODEL_SECTIONS = ("clip", "proposals", "classifier", "ensemble")
