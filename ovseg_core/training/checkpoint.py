"""Run directories and checkpoints.

A checkpoint holds only what training changes: the trained tensors as our safetensors
delta (the file the segmenter, ``ovseg segment`` and the node load) and, beside it,
optimizer, scheduler, grad-scaler and RNG state (``torch.load(weights_only=True)``).
Each is written into ``checkpoints/step_NNNNNNN.tmp`` and renamed when complete, so a
run killed at any moment resumes from the last whole checkpoint.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

from ..weights import load_delta, save_delta

KEEP = 2  # checkpoints kept besides the newest delta.safetensors at the top


def git_revision(repo: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return (rev or "unknown (not a git checkout)") + (" (uncommitted changes)" if dirty else "")


def write_yaml(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def checkpoints(run_dir: Path) -> List[Path]:
    return sorted((run_dir / "checkpoints").glob("step_[0-9]*[0-9]"))


def save_checkpoint(run_dir: Path, step: int, module, names: List[str], preset: str,
                    state: Dict[str, Any]) -> Path:
    final = run_dir / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_delta(module, names, str(tmp / "delta.safetensors"), preset)
    torch.save({**state, "step": step}, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    top = run_dir / "delta.safetensors"
    shutil.copyfile(final / "delta.safetensors", run_dir / "delta.safetensors.tmp")
    (run_dir / "delta.safetensors.tmp").replace(top)
    for old in checkpoints(run_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(run_dir: Path, module, names: List[str], preset: str) -> Optional[Dict[str, Any]]:
    """Loads the newest whole checkpoint's tensors into ``module``; returns its state
    (None when the run has none yet)."""
    found = checkpoints(run_dir)
    if not found:
        return None
    load_delta(module, names, str(found[-1] / "delta.safetensors"), preset)
    return torch.load(found[-1] / "state.pt", map_location="cpu", weights_only=True)
