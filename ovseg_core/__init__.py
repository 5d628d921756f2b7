"""ovseg: open-vocabulary panoptic segmentation (SMART/FISA, Mask-Adapter) without ROS imports."""
from .structures import MaskProposals, PanopticResult, Segment
from .vocabulary import Vocabulary


def build_segmenter(*args, **kwargs):
    """See :func:`ovseg_core.build.build_segmenter` (imported lazily: torch, open_clip and
    transformers load only when a model is built)."""
    from .build import build_segmenter as _build
    return _build(*args, **kwargs)


__all__ = ["build_segmenter", "MaskProposals", "PanopticResult", "Segment", "Vocabulary"]
