"""Hypothesis corruptions of valid input files, shared by the fuzz tests (issue 15):
truncated or non-JSON files, keys deleted or given values of other types, ids out of
range, PNGs cut short, of other sizes or modes, replaced by bytes, or missing."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import List

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

# Quick and repeatable by design (a few seconds each, same cases every run);
# OVSEG_FUZZ_EXAMPLES=500 searches longer with fresh random cases.
_EXAMPLES = os.environ.get("OVSEG_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_EXAMPLES or 25), deadline=None, derandomize=not _EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ODD_INTS = st.sampled_from([0, -1, 1, 2, 255, 2 ** 24 - 1, 2 ** 24, 2 ** 31, 2 ** 63, -(2 ** 63)])
SCALARS = (st.none() | st.booleans() | ODD_INTS | st.integers() | st.floats() | st.text(max_size=6))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def _paths(obj, prefix=()) -> List[tuple]:
    """Every location inside a parsed JSON document, as a key/index path."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def corrupt_json(data: st.DataObject, path: Path) -> str:
    """Corrupts the JSON file at ``path`` in place; returns what was done."""
    text = path.read_text()
    kind = data.draw(st.sampled_from(["truncate", "bytes", "delete", "replace", "replace", "replace"]), label="json")
    if kind == "truncate":
        path.write_text(text[:data.draw(st.integers(0, max(0, len(text) - 1)))])
    elif kind == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=40)))
    else:
        doc = json.loads(text)
        where = data.draw(st.sampled_from(_paths(doc)), label="where")
        if not where:
            doc = data.draw(JSON_VALUES)
        else:
            parent = doc
            for step in where[:-1]:
                parent = parent[step]
            if kind == "delete":
                del parent[where[-1]]
            else:
                parent[where[-1]] = data.draw(JSON_VALUES)
        path.write_text(json.dumps(doc))
    return f"{kind} {path.name}"


def corrupt_png(data: st.DataObject, path: Path) -> str:
    """Corrupts the image file at ``path`` in place; returns what was done."""
    kinds = ["truncate", "bytes", "resize", "mode", "delete", "folder"]
    if path.suffix != ".png":          # JPEG holds fewer modes: no mode changes
        kinds.remove("mode")
    kind = data.draw(st.sampled_from(kinds), label="image")
    if kind == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
    elif kind == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=60)))
    elif kind == "resize":
        with Image.open(path) as im:
            w, h = im.size
            dw, dh = data.draw(st.tuples(st.integers(-3, 3), st.integers(-3, 3)).filter(lambda d: d != (0, 0)))
            im.resize((max(1, w + dw), max(1, h + dh)), Image.NEAREST).save(path)
    elif kind == "mode":
        mode = data.draw(st.sampled_from(["L", "P", "RGBA", "1", "LA", "RGB", "I;16"]))
        with Image.open(path) as im:
            if mode == "I;16":
                out = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
            else:
                out = im.convert(mode)
        out.save(path)
    elif kind == "delete":
        path.unlink()
    else:
        path.unlink()
        path.mkdir()
    return f"{kind} {path.name}"


def corrupt_some(data: st.DataObject, files: List[Path]) -> List[str]:
    """One or two corruptions among ``files`` (JSON or image, by suffix)."""
    done = []
    for path in data.draw(st.lists(st.sampled_from(files), min_size=1, max_size=2, unique=True), label="files"):
        corrupt = corrupt_json if path.suffix == ".json" else corrupt_png
        done.append(corrupt(data, path))
    return done


def fresh_copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def strict_json(path: Path):
    """The file parsed as standard JSON: NaN / Infinity (which Python writes) fail."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def numbers(obj):
    """Every number in a parsed JSON document (bools excluded)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def assert_metrics_in_range(summary: dict):
    """PQ/SQ/RQ, IoU and accuracies on the 0-1 scale (0-100 %), finite."""
    keys = {"pq", "sq", "rq", "iou", "acc", "accuracy", "mIoU", "fwIoU", "mACC", "pACC", "mIoU_seen",
            "mIoU_unseen", "hIoU", "mean_class_accuracy"}

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in keys and v is not None:
                    assert isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1, (k, v)
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
    walk(summary)


def assert_one_line_naming(err: str, prefix: str, folder: Path):
    """A refusal: one stderr line with the tool's prefix, naming a file under ``folder``."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err and str(folder) in lines[0], err
