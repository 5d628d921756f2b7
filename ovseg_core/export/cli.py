"""``ovseg export --preset P [--weights DELTA] --out DIR [--image-size H W]``: the
preset's networks as checked ONNX models (``onnx_export``), and with ``--tensorrt`` fp16
TensorRT engines built from them where CUDA and TensorRT exist."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..config import parse_overrides, preset_names
from .onnx_export import DEFAULT_OPSET, DEFAULT_TOLERANCE, ExportMismatchError


def parser(prog: str = "ovseg export") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True, help=f"model preset: {', '.join(preset_names())} or a YAML path")
    p.add_argument("--weights", help="our trained delta (safetensors) on top of the preset")
    p.add_argument("--out", type=Path, required=True, help="output folder (models + manifest.json)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="the camera's image size the export serves (default: the proposal stage's input size)")
    p.add_argument("--device", default="cpu", help="where to trace and check: cpu (default), cuda, cuda:N")
    p.add_argument("--random-weights", action="store_true",
                   help="the preset's architecture without its pretrained weights (offline trials)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="preset override, e.g. --set clip.input_size=448 (repeatable)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest difference from PyTorch allowed, times the output's scale (default %(default)s)")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build fp16 TensorRT engines (needs CUDA and the tensorrt package)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights a preset does not load")
    return p


def main(argv: Optional[List[str]] = None, prog: str = "ovseg export") -> int:
    args = parser(prog).parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        overrides["precision"] = "fp32"   # the checks compare fp32 outputs; fp16 is TensorRT's
        overrides["runtime"] = "torch"
        if args.random_weights:
            overrides.update({"clip.pretrained": None, "proposals.pretrained": None})
        from .onnx_export import require_onnx
        require_onnx()
        import torch

        from ..build import build_segmenter
        torch.manual_seed(args.seed)
        segmenter = build_segmenter(args.preset, weights=args.weights, device=args.device, overrides=overrides)
        from .onnx_export import export_segmenter
        manifest = export_segmenter(segmenter, args.out, args.image_size, opset=args.opset,
                                    tolerance=args.tolerance, weights=args.weights,
                                    log=lambda m: print(m, file=sys.stderr))
        if args.tensorrt:
            from .tensorrt import build_engines
            build_engines(args.out, manifest, log=lambda m: print(m, file=sys.stderr))
    except (ValueError, FileNotFoundError, ImportError, ExportMismatchError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    for key, entry in manifest["files"].items():
        print(f"  {entry['path']:<18} {entry['bytes'] / 1e6:8.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
