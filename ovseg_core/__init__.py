"""ovseg: open-vocabulary panoptic segmentation (SMART/FISA, Mask-Adapter) without ROS imports."""
from .vocabulary import Vocabulary


def __getattr__(name):
    """The result types load torch; imported on first use so that the metrics and
    dataset readers (``ovseg_core.evaluation``, ``ovseg_core.datasets``) stay torch-free."""
    if name in ("MaskProposals", "PanopticResult", "Segment"):
        from . import structures
        return getattr(structures, name)
    raise AttributeError(f"module 'ovseg_core' has no attribute {name!r}")


def build_segmenter(*args, **kwargs):
    """See :func:`ovseg_core.build.build_segmenter` (imported lazily: torch, open_clip and
    transformers load only when a model is built)."""
    from .build import build_segmenter as _build
    return _build(*args, **kwargs)


__all__ = ["build_segmenter", "MaskProposals", "PanopticResult", "Segment", "Vocabulary"]
