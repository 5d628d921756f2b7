"""CLIP ViT image encoder with one mask token per proposal (MaskCLIP's mask attention).

One residual stream ``[CLS, patches | mask tokens]`` runs through every block. CLS and
patches attend to each other exactly as in CLIP, so CLIP's own outputs are unchanged by
the mask tokens; mask token i attends to CLS and to the patches that contain any pixel
of mask i; nobody attends to mask tokens. Norms, projections and MLPs run once over all
tokens; attention runs as two calls over the same keys: the image part keeps the fast
unmasked kernel and the mask part costs Q x (1 + N) instead of (Q + 1 + N)^2.

q, k and v are separate ``nn.Linear`` layers (open_clip fuses them) so that Query
Projection Tuning can train q alone: a gradient hook on the fused weight is not enough,
AdamW's decoupled weight decay would still move k and v.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .distribution_adapter import ADAPTER_LAYERS, DistributionAdapter
from .sma import SemanticGuidedAttention


class SplitAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections, from an open_clip block."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not mha.batch_first or mha._qkv_same_embed_dim is False:
            raise ValueError("expected open_clip's batch_first MultiheadAttention with fused in_proj")
        width = mha.embed_dim
        self.num_heads = mha.num_heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.out_proj = nn.Linear(width, width)
        self.load_fused(mha.in_proj_weight.data, mha.in_proj_bias.data)
        self.out_proj.load_state_dict(mha.out_proj.state_dict())
        self.to(mha.in_proj_weight.device, mha.in_proj_weight.dtype)

    @torch.no_grad()
    def load_fused(self, weight: torch.Tensor, bias: torch.Tensor):
        for proj, w, b in zip((self.q_proj, self.k_proj, self.v_proj), weight.chunk(3), bias.chunk(3)):
            proj.weight.copy_(w)
            proj.bias.copy_(b)

    def fused(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """open_clip's in_proj weight and bias (a LoRA's update merged in)."""
        projs = [merged_linear(p) for p in (self.q_proj, self.k_proj, self.v_proj)]
        return torch.cat([w for w, _ in projs]), torch.cat([b for _, b in projs])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, h: torch.Tensor, n_img: int, q_mask_input: Optional[torch.Tensor] = None,
                mask_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """h: normalised [CLS, patches | mask tokens], the first ``n_img`` being the image.
        Keys and values come from the image tokens only; the mask tokens' queries are
        projected from ``q_mask_input`` (SMA's output) when given."""
        b, t, d = h.shape
        img = h[:, :n_img]
        k = self._heads(self.k_proj(img))
        v = self._heads(self.v_proj(img))
        q_src = h if q_mask_input is None else torch.cat([img, q_mask_input], dim=1)
        q = self._heads(self.q_proj(q_src))
        out = F.scaled_dot_product_attention(q[:, :, :n_img], k, v)
        if t > n_img:
            out_mask = F.scaled_dot_product_attention(q[:, :, n_img:], k, v, attn_mask=mask_bias.to(q.dtype))
            out = torch.cat([out, out_mask], dim=2)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


def max_pool_to(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Adaptive max-pooling of [N, C, h, w] to ``size``. When the size divides (h, w) it
    is a plain max-pool with the same windows, which ONNX can express (its exporter has
    no adaptive max-pool for inputs of unknown size)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % size[0] == 0 and w % size[1] == 0:
        kernel = (h // size[0], w // size[1])
        return x if kernel == (1, 1) else F.max_pool2d(x, kernel, kernel)
    return F.adaptive_max_pool2d(x, size)


def merged_linear(linear: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a Linear, or of a peft LoRA Linear with its update merged in."""
    base = getattr(linear, "base_layer", linear)
    weight = base.weight
    for name in getattr(linear, "active_adapters", ()):
        if name in getattr(linear, "lora_A", {}):
            weight = weight + linear.get_delta_weight(name)
    return weight, base.bias


class MaskTokenBlock(nn.Module):
    """One CLIP residual block, reusing open_clip's norms, MLP and layer scales."""

    def __init__(self, block: nn.Module, sma: Optional[SemanticGuidedAttention] = None):
        super().__init__()
        if hasattr(block, "ln_1_kv") or not isinstance(block.attn, nn.MultiheadAttention):
            raise ValueError("only plain open_clip ResidualAttentionBlocks are supported")
        self.ln_1, self.ln_2, self.mlp = block.ln_1, block.ln_2, block.mlp
        self.ls_1, self.ls_2 = block.ls_1, block.ls_2
        self.attn = SplitAttention(block.attn)
        self.sma = sma

    def forward(self, x: torch.Tensor, n_img: int, mask_bias=None, text=None) -> torch.Tensor:
        """One residual stream [CLS, patches | mask tokens]: norms, projections and the MLP
        run once over all tokens; only attention treats the two groups differently."""
        h = self.ln_1(x)
        has_masks = x.shape[1] > n_img
        q_input = self.sma(h[:, n_img:], text) if (self.sma is not None and has_masks) else None
        x = x + self.ls_1(self.attn(h, n_img, q_input, mask_bias))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


def _open_clip_key(key: str) -> str:
    return key.replace("blocks.", "transformer.resblocks.", 1) if key.startswith("blocks.") else key


class MaskCLIPEncoder(nn.Module):
    """The visual tower of an open_clip ViT, able to embed one region per mask token.

    sma_layers: indices of blocks (negative from the end) whose mask tokens first
    cross-attend to the vocabulary's text embeddings (SMART's Semantic-guided Mask
    Attention). distribution_adapter_layers: conv layers of SMART's Distribution Adapter
    on the proposals (0: none; the paper's is 2).
    """

    def __init__(self, visual: nn.Module, text_dim: Optional[int] = None,
                 sma_layers: Sequence[int] = (), sma_residual: bool = True,
                 distribution_adapter_layers: int = 0):
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok" \
                or getattr(visual, "final_ln_after_pool", False):
            raise ValueError("MaskCLIPEncoder needs an open_clip ViT with CLS-token pooling "
                             "(pool_type='tok', no attentional pooler)")
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre, self.ln_post, self.proj = visual.ln_pre, visual.ln_post, visual.proj
        self.patch_size = int(self.conv1.kernel_size[0])
        self.native_grid = tuple(int(g) for g in visual.grid_size)
        self.width = int(self.class_embedding.shape[0])
        self.output_dim = int(self.proj.shape[1])
        blocks = list(visual.transformer.resblocks)
        chosen = sorted({i % len(blocks) for i in sma_layers})
        if chosen and text_dim is None:
            raise ValueError("sma_layers needs text_dim (the CLIP text embedding size)")
        self.sma_layers = chosen
        self.blocks = nn.ModuleList(
            MaskTokenBlock(b, SemanticGuidedAttention(self.width, text_dim, b.attn.num_heads, sma_residual)
                           if i in chosen else None)
            for i, b in enumerate(blocks))
        if isinstance(distribution_adapter_layers, bool) or distribution_adapter_layers not in ADAPTER_LAYERS:
            raise ValueError(f"distribution_adapter_layers must be one of {ADAPTER_LAYERS} "
                             f"(0: no adapter, 2: the paper's), not {distribution_adapter_layers!r}")
        self.distribution_adapter = DistributionAdapter(distribution_adapter_layers) \
            if distribution_adapter_layers else None
        self._pos_cache: Dict[Tuple, torch.Tensor] = {}
        self.bias_chunk: Optional[int] = None  # masks per adapter call on the CPU; None: by size

    # ---- open_clip state-dict layout (fused in_proj) -------------------------------
    def open_clip_state_dict(self) -> Dict[str, torch.Tensor]:
        """The encoder's CLIP weights in open_clip's ``visual.*`` layout (without the prefix)."""
        out = {}
        for key, value in self.state_dict().items():
            if ".sma." in key or key.startswith("distribution_adapter."):
                continue
            if any(f"attn.{p}_proj." in key for p in ("q", "k", "v", "out")):
                continue
            out[_open_clip_key(key)] = value
        for i, block in enumerate(self.blocks):
            prefix = f"transformer.resblocks.{i}.attn."
            w, b = block.attn.fused()
            out[prefix + "in_proj_weight"], out[prefix + "in_proj_bias"] = w.detach(), b.detach()
            w, b = merged_linear(block.attn.out_proj)
            out[prefix + "out_proj.weight"], out[prefix + "out_proj.bias"] = w.detach(), b.detach()
        return out

    @torch.no_grad()
    def load_open_clip_state_dict(self, state: Dict[str, torch.Tensor]):
        """Loads open_clip ``visual.*`` weights (prefix stripped); strict on both sides."""
        expected = self.open_clip_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        bad_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or bad_shape:
            raise ValueError(f"open_clip visual weights do not fit this encoder: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shape {bad_shape[:5]}")
        if any(".lora_" in key for key in self.state_dict()):
            raise ValueError("this encoder has LoRA layers: load open_clip weights before adding them")
        own = self.state_dict()
        for key, value in state.items():
            if key.endswith("attn.in_proj_weight") or key.endswith("attn.in_proj_bias"):
                continue
            own_key = key.replace("transformer.resblocks.", "blocks.", 1)
            own[own_key].copy_(value)
        for i, block in enumerate(self.blocks):
            prefix = f"transformer.resblocks.{i}.attn."
            block.attn.load_fused(state[prefix + "in_proj_weight"], state[prefix + "in_proj_bias"])

    # ---- forward ---------------------------------------------------------------------
    def grid(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        # Python ints even while tracing: an ONNX export is for one input size, and pooling
        # to the grid needs a constant output size (ovseg_core/export).
        return int(image_size[0]) // self.patch_size, int(image_size[1]) // self.patch_size

    def position_embedding(self, grid: Tuple[int, int]) -> torch.Tensor:
        """CLIP's position embeddings bilinearly resized to ``grid``.

        The resized table is cached (one size: the serving size) only while it cannot
        need a gradient: a cached tensor has no graph, so handing it to a pass that trains
        ``positional_embedding`` would silently cut that parameter's gradient.
        """
        pos = self.positional_embedding
        if tuple(grid) == self.native_grid:
            return pos
        cacheable = not (torch.is_grad_enabled() and pos.requires_grad)
        key = (tuple(grid), pos.device, pos.dtype, pos._version)
        if cacheable and key in self._pos_cache:
            return self._pos_cache[key]
        patches = pos[1:].float().reshape(1, *self.native_grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bilinear", align_corners=False)
        resized = torch.cat([pos[:1].float(), patches.flatten(2).transpose(1, 2)[0]]).to(pos.dtype)
        if cacheable:
            self._pos_cache = {key: resized}
        return resized

    def frame_position_embedding(self, grid: Tuple[int, int],
                                 frame: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Position embeddings for a ``grid`` of patches at the top-left of a ``frame``
        (pixels): the table is resized to the frame's grid and cropped, so a patch gets the
        same embedding whether its image is 2:1 or the same content inside a padded square,
        and whatever else is in the batch. Without a frame, the table is resized to ``grid``."""
        if frame is None:
            return self.position_embedding(grid)
        full = tuple(max(g, -(-f // self.patch_size)) for g, f in zip(grid, frame))
        table = self.position_embedding(full)
        if full == tuple(grid):
            return table
        patches = table[1:].reshape(*full, -1)[:grid[0], :grid[1]].reshape(grid[0] * grid[1], -1)
        return torch.cat([table[:1], patches])

    def content_patches(self, image_size: Tuple[int, int], image_sizes) -> Optional[torch.Tensor]:
        """[B, gh, gw] bool: the patches holding any pixel of their image (each image is the
        top-left ``image_sizes[i]`` of a padded batch of ``image_size``); None when every
        patch does."""
        if image_sizes is None:
            return None
        grid = self.grid(image_size)
        limits = torch.tensor([[-(-int(h) // self.patch_size), -(-int(w) // self.patch_size)]
                               for h, w in image_sizes], device=self.class_embedding.device)
        rows = torch.arange(grid[0], device=limits.device)[None, :, None] < limits[:, 0, None, None]
        cols = torch.arange(grid[1], device=limits.device)[None, None, :] < limits[:, 1, None, None]
        inside = rows & cols
        return None if bool(inside.all()) else inside

    def padding_bias(self, image_size: Tuple[int, int], image_sizes) -> Optional[torch.Tensor]:
        """[B, 1, 1, 1 + N] additive bias (0 / -inf) that closes the patches that are wholly
        padding to the mask tokens; None when no patch is."""
        inside = self.content_patches(image_size, image_sizes)
        if inside is None:
            return None
        allowed = torch.cat([inside.new_ones(len(inside), 1), inside.flatten(1)], dim=1)
        bias = torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, float("-inf"))
        return bias[:, None, None]

    def attention_bias(self, masks: torch.Tensor, image_size: Tuple[int, int],
                       adapted: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, Q, h, w] mask logits -> [B, 1, Q, 1 + N] additive bias (0 allowed / -inf).

        A patch is allowed if any mask pixel inside the patch's footprint is in the mask
        (sigmoid >= 0.5, i.e. logit >= 0): an adaptive max-pool of the logits at the
        mask's own resolution, so no image-sized copy of every mask is ever made.
        CLS is always allowed, so an empty mask still has a well-defined output.
        ``adapted``: :meth:`adapted_masks` of these masks when the caller has it already
        (training supervises it), so the adapter does not run twice.
        """
        b, q = masks.shape[:2]
        grid = self.grid(image_size)
        if adapted is not None:
            pooled = max_pool_to(adapted.flatten(0, 1)[:, None], grid)
        else:
            pooled = self._per_mask(masks, lambda c: max_pool_to(self._adapt(c, grid), grid), grid)
        pooled = pooled.reshape(b, q, grid[0] * grid[1])
        allowed = torch.cat([pooled.new_ones(b, q, 1, dtype=torch.bool), pooled >= 0], dim=2)
        bias = torch.zeros_like(allowed, dtype=torch.float32).masked_fill(~allowed, float("-inf"))
        if self.distribution_adapter is not None and torch.is_grad_enabled():
            # Straight-through: the forward pass keeps the exact 0/-inf rule, the gradient
            # reaches the adapter as if the bias were log(sigmoid(pooled logit)).
            soft = torch.cat([pooled.new_zeros(b, q, 1), F.logsigmoid(pooled)], dim=2)
            bias = bias + (soft - soft.detach())
        return bias[:, None]

    def adapted_masks(self, masks: torch.Tensor, image_size: Tuple[int, int]) -> Optional[torch.Tensor]:
        """[B, Q, h, w] mask logits -> the Distribution Adapter's output logits
        [B, Q, h', w'] at its working resolution (at most 4 x 4 samples per patch), the
        tensor the attention bias max-pools to the patch grid; None without an adapter.

        Training supervises it with ground-truth masks (Dice + BCE): through the bias
        alone the adapter gets gradient only inside the mask (outside is -inf)."""
        if self.distribution_adapter is None:
            return None
        grid = self.grid(image_size)
        adapted = self._per_mask(masks, lambda c: self._adapt(c, grid), self._working_size(masks, grid))
        return adapted.reshape(*masks.shape[:2], *adapted.shape[-2:])

    def _working_size(self, masks: torch.Tensor, grid: Tuple[int, int]) -> Tuple[int, int]:
        return min(int(masks.shape[-2]), 4 * grid[0]), min(int(masks.shape[-1]), 4 * grid[1])

    def _adapt(self, logits: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """[N, 1, h, w] logits -> the adapter's output (the logits unchanged without one).

        The adapter works at no more than 4 x 4 samples per patch: finer detail could only
        reach the patch grid through a max. Max-pooling to exactly 4x the grid and then to
        the grid gives the same windows as pooling to the grid at once."""
        if self.distribution_adapter is None:
            return logits
        fine = self._working_size(logits, grid)
        if fine != tuple(logits.shape[-2:]):
            logits = max_pool_to(logits, fine)
        return self.distribution_adapter(logits)

    def _per_mask(self, masks: torch.Tensor, fn, empty_size: Tuple[int, int]) -> torch.Tensor:
        """``fn`` over [B, Q, h, w] masks as [N, 1, h, w] chunks, concatenated."""
        logits = masks.float().flatten(0, 1)[:, None]
        if not len(logits):
            return logits.new_zeros(0, 1, *empty_size)
        # On the CPU, chunks of ~2M adapter activations (8 channels) stay in cache: 4 masks
        # at 256 x 256 (3x faster than all 100 at once), all of them at 32 x 32 (where
        # small chunks were 7x slower); same numbers. A GPU takes them all at once.
        # An ONNX export (tracing) takes them all at once too: chunk sizes would freeze the number of masks.
        chunk = len(logits) if logits.device.type != "cpu" or torch.jit.is_tracing() else \
            self.bias_chunk or max(1, (1 << 21) // (8 * logits.shape[-2] * logits.shape[-1]))
        if chunk >= len(logits):
            return fn(logits)
        return torch.cat([fn(c) for c in logits.split(chunk)])

    def forward(self, images: torch.Tensor, masks: Optional[torch.Tensor] = None,
                text: Optional[torch.Tensor] = None, adapted: Optional[torch.Tensor] = None,
                image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                frame: Optional[Tuple[int, int]] = None) -> Dict[str, torch.Tensor]:
        """images: [B, 3, H, W] CLIP-normalised; masks: [B, Q, h, w] logits or None;
        text: [T, text_dim] vocabulary embeddings, needed when SMA layers exist.
        image_sizes: each image's (h, w) at the top-left of a padded batch: patches that are
        wholly padding are closed to every mask token, whatever its mask. CLS and patches
        see the padding (the mean colour) as Mask2Former does, so an image padded in a batch
        is processed as that padded image would be. frame: the input size whose position
        embeddings the grid is cut from (see :meth:`frame_position_embedding`).

        Returns ``image`` [B, E] (CLIP's image embedding), ``tokens`` [B, gh, gw, width]
        (last-block patch tokens), ``patches`` (the same through CLIP's head, [.., E]) and,
        with masks, ``masks`` [B, Q, E]."""
        if self.sma_layers and masks is not None and text is None:
            raise ValueError("this encoder has Semantic-guided Mask Attention layers: pass the "
                             "vocabulary's text embeddings")
        size = images.shape[-2:]
        grid = self.grid(size)
        x = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.frame_position_embedding(grid, frame).to(x.dtype)
        x = self.ln_pre(x)
        n_img = x.shape[1]
        bias = None
        if masks is not None:
            x = torch.cat([x, x[:, :1].expand(-1, masks.shape[1], -1)], dim=1)
            bias = self.attention_bias(masks, size, adapted)
            padding = self.padding_bias(size, image_sizes)
            bias = bias if padding is None else bias + padding
            text = text.to(x.dtype) if text is not None else None
        for block in self.blocks:
            x = block(x, n_img, bias, text)
        x_img, x_mask = x[:, :n_img], (x[:, n_img:] if masks is not None else None)
        tokens = x_img[:, 1:].reshape(x_img.shape[0], *grid, -1)
        out = {"image": self.head(x_img[:, 0]), "tokens": tokens, "patches": self.head(tokens)}
        if x_mask is not None:
            out["masks"] = self.head(x_mask)
        return out

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's output head (ln_post, proj): width -> joint embedding space."""
        return self.ln_post(tokens) @ self.proj

    # ---- the modules that are not CLIP's (trainable.py trains them under every policy) --
    def new_module_parameters(self) -> Iterable[Tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if ".sma." in name or name.startswith("distribution_adapter."):
                yield name, p
