"""Per-stage latency of a segmentation call, so that "the node is slower than the script"
can be traced to a stage: preprocess (image conversion, resizing for both models),
vocabulary (text encoding; cached after the first call), proposals (the mask generator),
classifier (CLIP mask classification) and merge (panoptic merge + semantic map)."""
from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterable, List, Union

import numpy as np
import torch

STAGES = ("preprocess", "vocabulary", "proposals", "classifier", "merge")


class StageTimer:
    """Wall time per stage of one call. On CUDA each stage is a pair of CUDA events on the
    device's current stream (kernels run asynchronously, so host clocks would time their
    launch, not their work); they are read in :meth:`seconds`, once the call's results are
    on the host, so timing adds no synchronisation of its own. A stage entered several
    times is summed."""

    def __init__(self, device: Union[str, torch.device]):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._spans: Dict[str, List] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        if self.cuda:
            stream = torch.cuda.current_stream(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            try:
                yield
            finally:
                end.record(stream)
                self._spans.setdefault(name, []).append((start, end))
        else:
            start = time.perf_counter()
            try:
                yield
            finally:
                self._spans.setdefault(name, []).append(time.perf_counter() - start)

    def seconds(self) -> Dict[str, float]:
        """Seconds per stage entered, in :data:`STAGES` order."""
        out = {}
        for name in sorted(self._spans, key=lambda n: STAGES.index(n) if n in STAGES else len(STAGES)):
            spans = self._spans[name]
            if self.cuda:
                spans[-1][1].synchronize()
                out[name] = sum(start.elapsed_time(end) for start, end in spans) / 1000.0
            else:
                out[name] = sum(spans)
        return out


def stage_table(timings: Iterable[Dict[str, float]]) -> str:
    """Median and 95th percentile per stage (ms) over calls, and their total."""
    timings = list(timings)
    names = [s for s in STAGES if any(s in t for t in timings)]
    names += sorted({n for t in timings for n in t} - set(names))
    rows = [f"{'stage':<12} {'p50 ms':>9} {'p95 ms':>9}   ({len(timings)} call(s))"]
    for name in names + ["total"]:
        values = [sum(t.values()) if name == "total" else t.get(name, 0.0) for t in timings]
        p50, p95 = np.percentile(values, [50, 95]) * 1000
        rows.append(f"{name:<12} {p50:9.1f} {p95:9.1f}")
    return "\n".join(rows)
