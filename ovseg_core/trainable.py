"""Which parameters training may change: the papers' Table 3 ablations, one name each.

Every policy but ``frozen`` trains the new modules (SMA's g_q/g_k/g_v, the Distribution
Adapter, the learned void embedding, a Mask-Adapter head) and adds a part of CLIP's
visual tower:

- ``new_modules``: nothing of CLIP.
- ``query_projection`` (also ``q``): SMART's Query Projection Tuning (FISA: Strategic
  Image-Mask Optimization), the query projections f_q of every block.
- ``k``, ``v``, ``qk``, ``qv``, ``kv``, ``qkv``: those attention projections.
- ``mlp``: the blocks' MLPs.
- ``full_clip``: every visual-tower parameter.
- ``lora``: a LoRA of rank ``lora_rank`` on q, k, v and out_proj of every block (peft),
  B zero-initialised so an untrained LoRA is the identity.

Everything else, the text tower and the mask generator included, is frozen
(``requires_grad=False``), so no optimizer can move it, weight decay included: AdamW
skips parameters without a gradient. In a geometric ensemble the policy applies to the
first (in-vocabulary) classifier; the second, out-of-vocabulary half is frozen CLIP: its
CLIP never trains, and its own new modules (a Mask-Adapter head) only under
``second_policy="new_modules"``.
"""
import re
from typing import Dict, Iterable, List, Tuple

from torch import nn

PROJECTIONS = ("q", "k", "v", "qk", "qv", "kv", "qkv")
POLICIES = ("frozen", "new_modules", "query_projection", *PROJECTIONS, "mlp", "full_clip", "lora")
SECOND_POLICIES = ("frozen", "new_modules")
LORA_TARGETS = r"blocks\.\d+\.attn\.(q|k|v|out)_proj"   # module names inside a MaskCLIPEncoder


def apply_trainable(classifier: nn.Module, policy: str, *frozen_modules: nn.Module, lora_rank: int = 8,
                    second_policy: str = "frozen") -> List[str]:
    """Sets requires_grad on ``classifier`` by ``policy`` and freezes ``frozen_modules``
    (the text tower, the proposal model). ``lora`` adds LoRA layers to the encoder (once;
    call this before loading a delta). A text tower attached as ``classifier.text_tower``
    (preset ``text.trainable``) trains whole, but for CLIP's logit scale. Returns the
    trainable parameter names."""
    check_policy(policy, lora_rank)
    if second_policy not in SECOND_POLICIES:
        raise ValueError(f"the out-of-vocabulary half of an ensemble is frozen CLIP: its trainable policy "
                         f"must be one of {SECOND_POLICIES}, not {second_policy!r}")
    for module in (classifier, *frozen_modules):
        module.requires_grad_(False)
    chosen: Dict[str, nn.Parameter] = {}
    for prefix, half, half_policy in _halves(classifier, policy, second_policy):
        if half_policy == "frozen":
            continue
        chosen.update((prefix + n, p) for n, p in half.new_parameters())
        if half_policy == "lora":
            add_lora(half.encoder, lora_rank)
        chosen.update((prefix + "encoder." + n, p) for n, p in half.encoder.named_parameters()
                      if _trains(n, half_policy))
    text_tower = getattr(classifier, "text_tower", None)
    if text_tower is not None:
        chosen.update(("text_tower." + n, p) for n, p in text_tower.named_parameters()
                      if n not in ("logit_scale", "logit_bias"))
    for p in chosen.values():
        p.requires_grad_(True)
    return sorted(chosen)


def check_policy(policy: str, lora_rank: int = 8):
    """Raises a ValueError naming the valid choices for a bad policy or LoRA rank."""
    if policy not in POLICIES:
        raise ValueError(f"unknown trainable policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == "lora" and (not isinstance(lora_rank, int) or isinstance(lora_rank, bool) or lora_rank < 1):
        raise ValueError(f"lora_rank must be an integer >= 1 (e.g. 8), not {lora_rank!r}")


def _trains(name: str, policy: str) -> bool:
    """Whether ``policy`` trains encoder parameter ``name`` (the new modules aside)."""
    if policy == "full_clip":
        return True
    if policy == "lora":
        return ".lora_" in name
    if policy == "mlp":
        return name.startswith("blocks.") and ".mlp." in name
    letters = "q" if policy == "query_projection" else policy if policy in PROJECTIONS else ""
    return any(f".attn.{x}_proj." in name for x in letters)


def _halves(classifier: nn.Module, policy: str, second_policy: str) -> Iterable[Tuple[str, nn.Module, str]]:
    """(name prefix, MaskClassifier, its policy): the classifier itself, or an ensemble's halves."""
    if hasattr(classifier, "encoder"):
        yield "", classifier, policy
        return
    yield "first.", classifier.first, policy
    yield "second.", classifier.second, second_policy


def add_lora(encoder: nn.Module, rank: int):
    """Wraps the attention projections of every block in peft LoRA layers (rank r,
    alpha = r, so the update is B A x with B = 0 at start). Idempotent for one rank."""
    existing = {m.r["default"] for m in encoder.modules() if hasattr(m, "lora_A") and "default" in m.r}
    if existing:
        if existing != {rank}:
            raise ValueError(f"this encoder already has LoRA of rank {sorted(existing)}; build a fresh "
                             f"model for rank {rank}")
        return
    from peft import LoraConfig, inject_adapter_in_model  # only LoRA runs pay for the import
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=LORA_TARGETS),
                            encoder)


# ---- what a policy trains, in groups (`ovseg params`, the trainer's start) ------------

GROUPS = (  # (group, pattern on the classifier's parameter names), first match wins
    ("CLIP text tower", r"^text_tower\."),
    ("LoRA (q, k, v, out_proj)", r"\.lora_[AB]\."),
    ("CLIP query projections (f_q)", r"\.attn\.q_proj\."),
    ("CLIP key projections", r"\.attn\.k_proj\."),
    ("CLIP value projections", r"\.attn\.v_proj\."),
    ("CLIP attention output", r"\.attn\.out_proj\."),
    ("CLIP MLPs", r"\.blocks\.\d+\.mlp\."),
    ("SMA (g_q, g_k, g_v)", r"\.sma\."),
    ("Distribution Adapter", r"(^|\.)encoder\.distribution_adapter\."),
    ("void embedding", r"(^|\.)void_embedding$"),
    ("Mask-Adapter head", r"(^|\.)adapter\."),
    ("CLIP other (embeddings, norms, proj)", r"(^|\.)encoder\."),
    ("other", r""),
)


def describe_trainable(classifier: nn.Module, names: List[str]) -> Dict[str, Dict[str, int]]:
    """{group: {"tensors": n, "parameters": m}} for the trainable ``names``, groups in
    GROUPS' order, empty ones left out; JSON-ready (the trainer saves it with a run)."""
    params = dict(classifier.named_parameters())
    unknown = sorted(set(names) - set(params))
    if unknown:
        raise ValueError(f"not parameters of this classifier: {unknown[:5]}")
    table = {group: {"tensors": 0, "parameters": 0} for group, _ in GROUPS}
    for name in names:
        group = next(g for g, pattern in GROUPS if re.search(pattern, name))
        table[group]["tensors"] += 1
        table[group]["parameters"] += params[name].numel()
    return {g: row for g, row in table.items() if row["tensors"]}


def format_trainable(table: Dict[str, Dict[str, int]]) -> str:
    """describe_trainable's table as aligned lines with a total."""
    total = sum(row["parameters"] for row in table.values())
    lines = [f"  {group:<38} {row['parameters']:>12,}  ({row['tensors']} tensors)" for group, row in table.items()]
    lines.append(f"  {'trainable total':<38} {total:>12,}  ({total / 1e6:.1f}M)")
    return "\n".join(lines)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
