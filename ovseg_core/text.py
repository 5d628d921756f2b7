"""Text side: vocabulary -> CLIP class embeddings (FC-CLIP conventions), and mask
features -> class logits."""
from __future__ import annotations

import contextlib

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .vocabulary import Vocabulary

# ViLD's prompt ensemble, as FC-CLIP uses it: averaging over phrasings and object sizes
# makes a class embedding less sensitive to any one prompt's wording.
VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

# Above this many chunks an encode takes long enough (seconds on a CPU) to deserve a bar.
_PROGRESS_MIN_CHUNKS = 8


@dataclass(eq=False)
class ClassEmbeddings:
    """One L2-normalised row per synonym; ``class_of[s]`` is the class of row s.

    Rows stay per synonym (not averaged per class) because a class scores as its best
    synonym: "person, child, girl" should match a girl as well as "girl" alone does.
    Treat as read-only: TextEncoder hands the same cached object to every caller.
    """

    embeddings: torch.Tensor  # [S, E]
    class_of: torch.Tensor    # [S] long
    num_classes: int
    # [K, M] row indices of each class's synonyms, padded with the class's first row so
    # that a max over the padded table equals the max over the real synonyms.
    _table: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        if self.embeddings.dim() != 2 or self.class_of.shape != self.embeddings.shape[:1]:
            raise ValueError(f"ClassEmbeddings wants embeddings [S, E] and class_of [S]; got "
                             f"{tuple(self.embeddings.shape)} and {tuple(self.class_of.shape)}")
        S = self.embeddings.shape[0]
        class_of = self.class_of.to(self.embeddings.device, torch.long)
        in_range = S > 0 and 0 <= class_of.min() and class_of.max() < self.num_classes
        counts = torch.bincount(class_of, minlength=self.num_classes) if in_range else None
        if counts is None or (counts == 0).any():
            raise ValueError(f"class_of must give every class in [0, {self.num_classes}) at "
                             f"least one row and name no other class; got {class_of.tolist()}")
        order = torch.argsort(class_of, stable=True)
        sorted_class = class_of[order]
        # Rows grouped by class; slot = a row's rank within its class.
        first_row = torch.cumsum(counts, 0) - counts
        slot = torch.arange(S, device=class_of.device) - first_row[sorted_class]
        table = class_of.new_full((self.num_classes, int(counts.max())), -1)
        table[sorted_class, slot] = order
        self.class_of = class_of
        self._table = torch.where(table < 0, table[:, :1], table)

    def to(self, device: Union[str, torch.device]) -> "ClassEmbeddings":
        return ClassEmbeddings(self.embeddings.to(device), self.class_of.to(device),
                               self.num_classes)

    def logits(self, features: torch.Tensor,
               logit_scale: Union[float, torch.Tensor]) -> torch.Tensor:
        """[..., E] L2-normalised features -> [..., K]: per class, the max over its
        synonyms of ``logit_scale * cosine``."""
        if features.shape[-1] != self.embeddings.shape[-1]:
            raise ValueError(f"features have width {features.shape[-1]} but the text "
                             f"embeddings {self.embeddings.shape[-1]}; the text and image "
                             f"sides must come from the same CLIP model")
        # Match the features' dtype so autocast (fp16/bf16) callers need no cast.
        sims = logit_scale * (features @ self.embeddings.to(features.dtype).T)  # [..., S]
        return sims[..., self._table].amax(dim=-1)


class EmbeddingCache:
    """Thread-safe LRU of ClassEmbeddings. Share one between TextEncoders to reuse
    entries across pipelines; keys carry the model key so models never share rows."""

    def __init__(self, max_size: int = 8):
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._entries: "OrderedDict[Hashable, ClassEmbeddings]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Optional[ClassEmbeddings]:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: ClassEmbeddings) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class TextEncoder:
    """Encodes vocabularies with a CLIP text tower, caching the results.

    ``model`` is an open_clip CLIP (anything with ``encode_text(tokens)``); ``tokenizer``
    maps a list of str to a LongTensor of tokens. ``model_key`` must name the weights
    (e.g. preset name + weights file): it is part of every cache key.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, model_key: str,
                 templates: Sequence[str] = VILD_TEMPLATES, chunk_size: int = 256,
                 cache: Optional[EmbeddingCache] = None):
        if not model_key:
            raise ValueError("model_key is empty; name the weights (e.g. preset + file) "
                             "so cached embeddings of different models never mix")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        templates = tuple(templates)
        if not templates or any("{}" not in t for t in templates):
            raise ValueError("templates must be non-empty and each contain '{}' where the "
                             "class name goes")
        self.model = model
        self.tokenizer = tokenizer
        self.model_key = model_key
        self.templates = templates
        self.chunk_size = chunk_size
        self.cache = EmbeddingCache() if cache is None else cache
        # Optional folder of encoded vocabularies (safetensors, keyed by model and text), so
        # a restarted process or a second one does not encode a large vocabulary again.
        self.disk_cache: Optional[Path] = None
        # Serialises encoding (so two threads asking for one new vocabulary encode it
        # once) while cache hits, which only take the cache's lock, never wait on it.
        self._encode_lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return torch.device("cpu") if param is None else param.device

    def encode(self, vocabulary: Union[Vocabulary, str, Sequence[str]],
               progress: Optional[Callable[[int, int], None]] = None) -> ClassEmbeddings:
        """Float32 class embeddings on the model's device; cached, so cheap to call on
        every frame. ``progress(done, total)`` is called after each chunk of prompts; an
        exception it raises abandons the encode (e.g. a newer request superseded it)."""
        vocab = Vocabulary.from_any(vocabulary)
        device = self.device
        key = (self.model_key, str(device), self.templates, vocab.key())
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        with self._encode_lock:
            hit = self.cache.get(key)  # another thread may have encoded it meanwhile
            if hit is None:
                hit = self._load(vocab, device)
            if hit is None:
                hit = self._encode(vocab, device, progress)
                self._save(vocab, hit)
            self.cache.put(key, hit)
        return hit

    def encode_differentiable(self, vocabulary) -> ClassEmbeddings:
        """The same embeddings with gradients into the text tower, never cached: for
        training the text encoder too (the papers' ablation), where every step changes it."""
        vocab = Vocabulary.from_any(vocabulary)
        return self._encode(vocab, self.device, grad=True)

    def cached(self, vocabulary) -> bool:
        """Whether encode() would return without running the text tower."""
        vocab = Vocabulary.from_any(vocabulary)
        key = (self.model_key, str(self.device), self.templates, vocab.key())
        path = self._disk_path(vocab)
        return self.cache.get(key) is not None or (path is not None and path.is_file())

    def _disk_path(self, vocab: Vocabulary) -> Optional[Path]:
        if self.disk_cache is None:
            return None
        name = hashlib.sha1(repr((self.model_key, self.templates, vocab.key())).encode()).hexdigest()
        return Path(self.disk_cache) / f"{name}.safetensors"

    def _load(self, vocab: Vocabulary, device: torch.device) -> Optional[ClassEmbeddings]:
        path = self._disk_path(vocab)
        if path is None or not path.is_file():
            return None
        from safetensors.torch import load_file
        try:
            rows = load_file(str(path))
            return ClassEmbeddings(rows["embeddings"].to(device), rows["class_of"].to(device), len(vocab))
        except Exception:  # a truncated or foreign file: encode again (and overwrite it)
            return None

    def _save(self, vocab: Vocabulary, value: ClassEmbeddings) -> None:
        path = self._disk_path(vocab)
        if path is None:
            return
        from safetensors.torch import save_file
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"embeddings": value.embeddings.cpu().contiguous(),
                       "class_of": value.class_of.cpu()}, str(tmp))
            os.replace(tmp, path)   # atomic: readers never see half a file
        except OSError as e:        # a full or read-only disk costs a re-encode, nothing else
            warnings.warn(f"could not store encoded vocabulary in {path.parent}: {e}; "
                          f"set another cache folder or none")

    def _encode(self, vocab: Vocabulary, device: torch.device,
                progress: Optional[Callable[[int, int], None]] = None, grad: bool = False) -> ClassEmbeddings:
        synonyms = [s for c in vocab.classes for s in c.synonyms]
        class_of = [k for k, c in enumerate(vocab.classes) for _ in c.synonyms]
        prompts = [t.format(s) for s in synonyms for t in self.templates]
        starts = range(0, len(prompts), self.chunk_size)
        sums = None
        # no_grad, not inference_mode: training uses these rows in autograd graphs,
        # which inference tensors cannot join. Only one chunk's activations live at once.
        with contextlib.nullcontext() if grad else torch.no_grad():
            for start in tqdm(starts, desc="encoding vocabulary", unit="chunk", leave=False,
                              disable=len(starts) <= _PROGRESS_MIN_CHUNKS):
                tokens = self.tokenizer(prompts[start:start + self.chunk_size]).to(device)
                feats = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
                if sums is None:
                    sums = feats.new_zeros(len(synonyms), feats.shape[-1])
                rows = torch.arange(start, start + len(feats), device=device)
                sums = sums.index_add(0, rows // len(self.templates), feats)
                if progress is not None:
                    progress(min(start + self.chunk_size, len(prompts)), len(prompts))
        # Normalising the template sum gives the same direction as the template mean.
        return ClassEmbeddings(F.normalize(sums, dim=-1),
                               torch.tensor(class_of, device=device), len(vocab))
