"""Which parameters training may change. Names the papers' choices explicitly.

``query_projection`` is SMART's Query Projection Tuning (FISA: Strategic Image-Mask
Optimization): CLIP's query projections in every block plus the new modules (SMA's
g_q/g_k/g_v, the Distribution Adapter, the learned void embedding, a Mask-Adapter
head). Everything else, k, v, out_proj, MLPs, norms, embeddings, the text tower and
the mask generator, is frozen (``requires_grad=False``), so no optimizer can move it,
weight decay included: AdamW skips parameters without a gradient.
"""
from typing import List

from torch import nn

POLICIES = ("frozen", "new_modules", "query_projection", "full_clip")


def apply_trainable(classifier: nn.Module, policy: str, *frozen_modules: nn.Module) -> List[str]:
    """Sets requires_grad on ``classifier`` by ``policy`` and freezes ``frozen_modules``
    (the text tower, the proposal model). Returns the trainable parameter names."""
    if policy not in POLICIES:
        raise ValueError(f"unknown trainable policy {policy!r}; choose one of {POLICIES}")
    for module in (classifier, *frozen_modules):
        module.requires_grad_(False)
    chosen = dict(classifier.new_parameters()) if policy != "frozen" else {}
    if policy == "query_projection":
        for prefix, m in _classifiers(classifier):
            chosen.update((prefix + "encoder." + n, p) for n, p in m.encoder.query_projection_parameters())
    elif policy == "full_clip":
        for prefix, m in _classifiers(classifier):
            chosen.update((prefix + "encoder." + n, p) for n, p in m.encoder.named_parameters())
    for p in chosen.values():
        p.requires_grad_(True)
    return sorted(chosen)


def _classifiers(module: nn.Module, prefix: str = ""):
    """The MaskClassifiers inside ``module`` (itself, or both halves of an ensemble)."""
    if hasattr(module, "encoder"):
        yield prefix, module
    for name in ("first", "second"):
        if hasattr(module, name):
            yield from _classifiers(getattr(module, name), f"{prefix}{name}.")


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
