"""fp16 TensorRT engines from an ``ovseg export`` folder (``ovseg export --tensorrt``), for
Jetson-class GPUs. Needs CUDA and the ``tensorrt`` Python package (JetPack ships it);
never run on the machines this project is developed on (docs/deployment.md).

An engine is built for one GPU and one TensorRT version: build it on the robot. Dynamic
dimensions get an optimisation profile from 1 to the ``max_*`` given here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from .onnx_export import MANIFEST, sha256


def require_tensorrt():
    """The tensorrt module, or an error that says what is missing and how to get it."""
    import torch
    if not torch.cuda.is_available():
        raise ValueError("TensorRT engines need a CUDA GPU and none is visible here; build them on the robot "
                         "(Jetson: JetPack's TensorRT), or serve the ONNX models with runtime: onnxruntime")
    try:
        import tensorrt
    except ImportError as err:
        raise ImportError(f"TensorRT engines need the tensorrt Python package ({err}); on a Jetson it comes with "
                          f"JetPack (python3-libnvinfer), elsewhere pip install tensorrt") from err
    return tensorrt


def _profile_shapes(name: str, shape, manifest: Dict, max_batch: int, max_classes: int, max_synonyms: int):
    """(min, opt, max) for one input: dynamic dimensions (-1) from 1 to their maximum."""
    limits = {"images": [max_batch], "masks": [max_batch, 4 * manifest["num_queries"]],
              "text_embeddings": [max_synonyms], "class_table": [max_classes, 8], "seen": [max_classes],
              "tokens": [256]}   # TextEncoder encodes at most text.chunk_size (256) prompts a call
    dynamic = iter(limits.get(name, []))
    lo, opt, hi = [], [], []
    for d in shape:
        if d >= 0:
            lo.append(d), opt.append(d), hi.append(d)
        else:
            top = next(dynamic, max_batch)
            lo.append(1), opt.append(max(1, top // 2)), hi.append(top)
    return tuple(lo), tuple(opt), tuple(hi)


def build_engine(onnx_path: Path, engine_path: Path, manifest: Dict, fp16: bool = True, max_batch: int = 4,
                 max_classes: int = 256, max_synonyms: int = 512, workspace_gb: float = 2.0) -> Path:
    """One ONNX model -> a serialized TensorRT engine (fp16 where the GPU has it)."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch: a flag before TensorRT 10 (JetPack 6.0 has 8.6), the only mode since.
    explicit = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and getattr(builder, "platform_has_fast_fp16", True):
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, *_profile_shapes(tensor.name, tuple(tensor.shape), manifest, max_batch,
                                                        max_classes, max_synonyms))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ValueError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    engine_path.write_bytes(bytes(engine))
    return engine_path


def build_engines(folder, manifest: Optional[Dict] = None, fp16: bool = True, log=print) -> Dict:
    """Engines for every model of an export, recorded in its manifest under ``tensorrt``."""
    trt = require_tensorrt()
    folder = Path(folder)
    manifest = manifest or json.loads((folder / MANIFEST).read_text())
    engines = {}
    for key, entry in manifest["files"].items():
        path = build_engine(folder / entry["path"], folder / f"{key}.{'fp16' if fp16 else 'fp32'}.engine",
                            manifest, fp16)
        engines[key] = {"path": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}
        log(f"built {path}")
    manifest["tensorrt"] = {"version": trt.__version__, "fp16": fp16, "engines": engines}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
