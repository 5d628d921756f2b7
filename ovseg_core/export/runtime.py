"""``runtime: onnxruntime``: the same Segmenter (layout, resizing, merge, semantic map,
vocabulary cache) with its three networks served by ONNX Runtime from an ``ovseg export``
folder. Only the networks change; the PyTorch models are never built.

Execution providers: ``onnx.providers`` in the preset (e.g. [TensorrtExecutionProvider,
CUDAExecutionProvider, CPUExecutionProvider]); by default CUDA on a CUDA device, else CPU.
"""
from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..config import PresetConfig, resolve_path, size_pair
from ..structures import MaskProposals
from ..text import ClassEmbeddings, EmbeddingCache, TextEncoder
from .onnx_export import FORMAT_VERSION, MANIFEST, MODEL_SECTIONS, require_onnx, sha256




def _reexport(cfg: PresetConfig) -> str:
    weights = f" --weights {cfg.weights}" if cfg.weights else ""
    return f"re-export with `ovseg export --preset {cfg.name}{weights} --out DIR`"


def load_manifest(folder, cfg: Optional[PresetConfig] = None) -> Dict:
    """The export's manifest, checked against the preset that is to serve it: same model
    sections, same delta (by hash); anything else would serve another model silently."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no {MANIFEST}: not an ovseg export; write one with "
                                f"`ovseg export --preset PRESET --out {folder}`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: export format {manifest.get('format')!r}, this ovseg reads {FORMAT_VERSION}; "
                         f"re-export with this version")
    missing = [f["path"] for f in manifest["files"].values() if not (folder / f["path"]).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: the export lacks {missing}; copy the whole folder or re-export")
    if cfg is None:
        return manifest
    if manifest["preset"] != cfg.name:
        raise ValueError(f"{folder} was exported from preset {manifest['preset']!r}, not {cfg.name!r}; "
                         f"serve it with --preset {manifest['preset']} or {_reexport(cfg)}")
    ours = {k: dataclasses.asdict(getattr(cfg, k)) if getattr(cfg, k) is not None else None for k in MODEL_SECTIONS}
    theirs = manifest.get("config") or {}
    changed = sorted(f"{section}.{key}" for section in MODEL_SECTIONS
                     for key in set((ours.get(section) or {})) | set((theirs.get(section) or {}))
                     if (ours.get(section) or {}).get(key) != (theirs.get(section) or {}).get(key))
    if changed:
        raise ValueError(f"{folder} was exported with other model settings than preset {cfg.name!r} has now "
                         f"({', '.join(changed[:6])}); {_reexport(cfg)}")
    want = sha256(resolve_path(cfg.weights)) if cfg.weights else None
    if want != manifest.get("weights_sha256"):
        have = manifest.get("weights") or "no delta"
        raise ValueError(f"{folder} was exported with {have}, but the preset names "
                         f"{cfg.weights or 'no delta'} (the files differ); {_reexport(cfg)}")
    return manifest


def providers_for(device: torch.device, asked: Sequence[str] = ()) -> List[str]:
    """ONNX Runtime execution providers: the preset's, else CUDA's on a CUDA device; each
    must be available in the installed onnxruntime build."""
    _, ort = require_onnx()
    available = ort.get_available_providers()
    providers = list(asked) or (["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda"
                                else ["CPUExecutionProvider"])
    absent = [p for p in providers if p not in available]
    if absent:
        hint = ("install onnxruntime-gpu (CUDA) with TensorRT on the library path, or list only "
                "CPUExecutionProvider" if any(p != "CPUExecutionProvider" for p in absent) else "")
        raise ValueError(f"ONNX Runtime execution provider(s) {absent} are not available in this onnxruntime "
                         f"(it has {available}); {hint}")
    return providers


class _Session:
    """An InferenceSession that takes torch tensors and gives them back on the device of
    the first input (wherever the Segmenter has been moved: its ``to`` moves no session)."""

    def __init__(self, path: Path, providers: List[str], device: torch.device):
        _, ort = require_onnx()
        options = ort.SessionOptions()
        # torch does the pre- and post-processing in this process: ORT's threads must not
        # busy-wait between runs (on a few cores they then take the CPU from torch's), and
        # they are as many as torch's.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = device
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs: torch.Tensor) -> List[torch.Tensor]:
        feed = {k: v.detach().cpu().numpy() for k, v in inputs.items() if k in self.names}
        device = next(iter(inputs.values())).device
        return [torch.from_numpy(np.ascontiguousarray(o)).to(device) for o in self.session.run(None, feed)]


def _size_error(stage: str, got, want, manifest) -> ValueError:
    image = manifest["sizes"]["image"]
    return ValueError(f"the ONNX export serves {image[0]}x{image[1]} images (a {stage} batch of {want[0]}x"
                      f"{want[1]}), but this image gives {got[0]}x{got[1]}; resize the images to "
                      f"{image[0]}x{image[1]}, or re-export with `ovseg export ... --image-size H W` of the "
                      f"camera, or use runtime: torch")


class OnnxProposals:
    """Stands in for Mask2FormerProposals: [B, 3, H, W] in [0, 1] -> MaskProposals."""

    def __init__(self, session: _Session, manifest: Dict):
        self.session = session
        self.manifest = manifest
        self.size = tuple(manifest["sizes"]["proposals"])
        # Segmenter.layout pads a batch with the mean colour (ImageNet's, as Mask2Former).
        from transformers.image_utils import IMAGENET_DEFAULT_MEAN
        self.pixel_mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> MaskProposals:
        if tuple(images.shape[-2:]) != self.size:
            raise _size_error("proposal", images.shape[-2:], self.size, self.manifest)
        masks, objectness = self.session(images=images.float())
        return MaskProposals(masks, objectness)

    def to(self, device) -> "OnnxProposals":
        return self   # the session's providers fix where it runs


class OnnxClassifier:
    """Stands in for a MaskClassifier: (images, proposals, text, seen) -> logits."""

    def __init__(self, session: _Session, manifest: Dict):
        self.session = session
        self.manifest = manifest
        self.size = tuple(manifest["sizes"]["clip"])
        # Segmenter._clip_multiple reads the patch size from classifier.encoder.
        self.encoder = types.SimpleNamespace(patch_size=manifest["patch_size"])

    def __call__(self, images: torch.Tensor, proposals: MaskProposals, text: ClassEmbeddings,
                 seen: Optional[torch.Tensor] = None, image_sizes=None) -> torch.Tensor:
        if image_sizes is not None or tuple(images.shape[-2:]) != self.size:
            got = images.shape[-2:] if image_sizes is None else \
                next((s for s in image_sizes if tuple(s) != self.size), images.shape[-2:])
            raise _size_error("CLIP", got, self.size, self.manifest)
        inputs = dict(images=images.float(), masks=proposals.masks.float(), text_embeddings=text.embeddings.float(),
                      class_table=text._table)
        if self.manifest["seen_classes"]:
            inputs["seen"] = seen if seen is not None else torch.zeros(text.num_classes, dtype=torch.bool)
        return self.session(**inputs)[0]

    def to(self, device) -> "OnnxClassifier":
        return self

    def eval(self) -> "OnnxClassifier":
        return self


class OnnxTextModel:
    """Stands in for the CLIP text tower TextEncoder runs: ``encode_text(tokens)``."""

    def __init__(self, session: _Session):
        self.session = session

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.session(tokens=tokens.long())[0]

    def parameters(self):
        """TextEncoder puts its embeddings on its model's device: the segmenter's."""
        return iter([torch.empty(0, device=self.session.device)])

    def to(self, device) -> "OnnxTextModel":
        return self


def build_onnx_segmenter(cfg: PresetConfig, embedding_cache: Optional[EmbeddingCache] = None):
    """A Segmenter for ``cfg`` whose networks are the ONNX models in ``cfg.onnx.dir``."""
    require_onnx()
    import open_clip

    from ..build import resolve_device
    from ..segmenter import Segmenter
    from ..weights import register_clip_configs
    if not cfg.onnx.dir:
        raise ValueError(f"preset {cfg.name!r}: runtime onnxruntime needs onnx.dir, the folder `ovseg export "
                         f"--out` wrote (--onnx-dir on the command line)")
    if cfg.precision not in ("auto", "fp32"):
        raise ValueError(f"preset {cfg.name!r}: precision {cfg.precision} is for runtime torch; the ONNX "
                         f"models are fp32 (fp16 comes with a TensorRT engine)")
    folder = Path(resolve_path(cfg.onnx.dir))
    manifest = load_manifest(folder, cfg)
    device = resolve_device(cfg.device)
    providers = providers_for(device, cfg.onnx.providers)
    run_on = torch.device("cpu") if providers[0] == "CPUExecutionProvider" else device
    session = {k: _Session(folder / f["path"], providers, run_on) for k, f in manifest["files"].items()}
    register_clip_configs()
    tokenizer = open_clip.get_tokenizer(cfg.clip.model)
    text = OnnxTextModel(session["text"])
    model_key = f"onnx|{cfg.name}|{manifest['files']['text']['sha256']}"
    text_encoder = TextEncoder(text, tokenizer, model_key, chunk_size=cfg.text.chunk_size,
                               cache=embedding_cache if embedding_cache is not None
                               else EmbeddingCache(cfg.text.cache_size))
    seen = list(cfg.ensemble.seen_classes) if cfg.ensemble else []
    return Segmenter(OnnxProposals(session["proposals"], manifest), OnnxClassifier(session["classifier"], manifest),
                     text_encoder, proposal_size=size_pair(cfg.proposals.input_size),
                     clip_size=size_pair(cfg.clip.input_size), inference=cfg.inference, device=run_on,
                     amp_dtype=None, seen_classes=seen, name=cfg.name, config=cfg,
                     proposal_resize=cfg.proposals.resize, clip_resize=cfg.clip.resize)
