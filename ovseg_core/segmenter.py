"""The user-facing pipeline: images + vocabulary -> panoptic results.

image -> proposals (frozen Mask2Former) -> mask classification (CLIP) -> class
probabilities -> panoptic merge + semantic map -> PanopticResult, for a batch at once.
"""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .config import InferenceConfig, PresetConfig
from .postprocess import MAX_BYTES, postprocess, split_components
from .profiling import StageTimer
from .resize import batch_for_stage, check_resize_mode, move_masks, resize_image, valid_fractions
from .structures import MaskProposals, PanopticResult
from .text import ClassEmbeddings, TextEncoder
from .vocabulary import Vocabulary

ImageLike = Union[np.ndarray, torch.Tensor]


_FLOAT_SLACK = 1e-3     # resampling overshoot tolerated (and clamped) around [0, 1]


def _channel_hint(channels: int) -> str:
    if channels == 4:
        return "for RGBA drop the alpha channel (image[..., :3], or image[:3] channels-first)"
    if channels == 1:
        return "for grayscale repeat the channel three times"
    return "give an RGB image"


def image_to_tensor(image: ImageLike, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 numpy (RGB, always channels-last, as PIL and OpenCV give) or a torch
    image ([3,H,W] / [H,W,3], uint8 or float in [0, 1]; a [3, W, 3] tensor is read
    channels-first, torch's convention) -> float32 [3, H, W] in [0, 1] on ``device``.
    Anything else (other dtypes, float images in 0..255, NaN) is refused: it would give a
    wrong result silently."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 RGB HxWx3, got dtype {image.dtype}; "
                             f"convert with (img * 255).astype(np.uint8) or pass a float torch tensor")
        if image.ndim != 3 or image.shape[-1] != 3:
            hint = (f"for channels-first use image.transpose(1, 2, 0)" if image.ndim == 3 and image.shape[0] == 3
                    else _channel_hint(image.shape[-1] if image.ndim == 3 else 1))
            raise ValueError(f"numpy images must be RGB HxWx3 (channels last), got shape {image.shape}; {hint}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif not isinstance(image, torch.Tensor):
        raise TypeError(f"an image must be a numpy array or torch tensor, got {type(image).__name__}")
    elif image.dim() != 3 or 3 not in (image.shape[0], image.shape[-1]):
        channels = image.shape[0] if image.dim() == 3 and image.shape[0] in (1, 4) else (
            image.shape[-1] if image.dim() == 3 else 1)
        raise ValueError(f"an image must be RGB HxWx3 or 3xHxW, got shape {tuple(image.shape)}; "
                         f"{_channel_hint(channels)}")
    elif image.shape[0] != 3:
        image = image.permute(2, 0, 1)
    if image.dtype == torch.bool or not (image.dtype == torch.uint8 or image.is_floating_point()):
        raise ValueError(f"an image tensor must be uint8 (0..255) or float (0..1), got {image.dtype}; "
                         f"convert with .to(torch.uint8) for 0..255 values")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"empty image of shape {tuple(image.shape)}; give an image of at least 1x1 pixel")
    image = image.to(device)
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    image = image.float()
    if not torch.isfinite(image).all():
        raise ValueError("the image has NaN or infinite values; give finite values in [0, 1]")
    low, high = image.aminmax()
    if low < -_FLOAT_SLACK or high > 1 + _FLOAT_SLACK:
        raise ValueError(f"float images must lie in [0, 1], got values in [{low.item():.3g}, {high.item():.3g}]; "
                         f"divide 0..255 values by 255 (or pass uint8)")
    return image.clamp(0, 1)


def class_probabilities(logits: torch.Tensor, objectness: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CLIP logits [.., Q, K(+1)] and proposal objectness [.., Q] -> [.., Q, K + 1]
    distributions whose last column is void.

    A proposal's non-void mass is its objectness (Mask2Former's 1 - p(no object)) times
    the classifier's class distribution; a learned void column, where present, takes its
    share of that mass too.
    """
    probs = logits.float().softmax(-1)[..., :num_classes] * objectness[..., None].float()
    return torch.cat([probs, (1 - probs.sum(-1, keepdim=True)).clamp_min(0)], dim=-1)


resize_batch = resize_image   # a [B, 3, H, W] batch squashed to a size (training's square crops)


@dataclass
class Layout:
    """A batch laid out for both stages: each stage's [B, 3, H, W] batch, each image's
    (h, w) at its top-left, and the fraction of the batch that image fills (the rest is
    padding)."""
    proposal_batch: torch.Tensor
    proposal_sizes: List[Tuple[int, int]]
    clip_batch: torch.Tensor
    clip_sizes: List[Tuple[int, int]]

    @property
    def proposal_valid(self):
        return valid_fractions(self.proposal_sizes, self.proposal_batch.shape[-2:])

    @property
    def clip_valid(self):
        return valid_fractions(self.clip_sizes, self.clip_batch.shape[-2:])

    @property
    def clip_padded(self) -> bool:
        return any(tuple(s) != tuple(self.clip_batch.shape[-2:]) for s in self.clip_sizes)


def _check_one_vocabulary(vocabulary, images) -> None:
    """A batch shares one vocabulary; a list of vocabularies (one per image) would
    otherwise fail deep inside name parsing with a misleading message."""
    if not isinstance(vocabulary, (list, tuple)):
        return
    per_image = any(not isinstance(v, str) for v in vocabulary) or (
        isinstance(images, (list, tuple)) and len(images) == len(vocabulary) > 1
        and any(";" in v for v in vocabulary))
    if per_image:
        raise TypeError("one vocabulary serves the whole batch, but got a list that looks like one vocabulary "
                        "per image; call once per vocabulary (group the images that share one), or give one "
                        "vocabulary: a list of class names or a str like \"car; road [stuff]\"")


class Segmenter:
    """Open-vocabulary panoptic segmentation. Call it with one image or a list.

    ``proposals`` maps [B, 3, H, W] images in [0, 1] to :class:`MaskProposals`;
    ``classifier`` is a mask classifier from ``ovseg_core.modeling.classifiers``.
    ``proposal_resize`` / ``clip_resize``: ``longest_side`` (the presets' default) fits
    each image inside the stage's size keeping its aspect ratio and pads a batch of
    several sizes; ``square`` squashes it to that size (the classifier's own ``resize``
    must agree, as ``build_segmenter`` makes it).
    """

    def __init__(self, proposals: nn.Module, classifier: nn.Module, text_encoder: TextEncoder,
                 proposal_size: Tuple[int, int], clip_size: Tuple[int, int],
                 inference: Optional[InferenceConfig] = None, device: Union[str, torch.device] = "cpu",
                 amp_dtype: Optional[torch.dtype] = None, seen_classes: Sequence[str] = (),
                 name: str = "custom", config: Optional[PresetConfig] = None, trainable: Sequence[str] = (),
                 proposal_resize: str = "square", clip_resize: str = "square"):
        self.proposals = proposals
        self.classifier = classifier
        self.text_encoder = text_encoder
        self.proposal_size = tuple(proposal_size)
        self.clip_size = tuple(clip_size)
        self.proposal_resize = check_resize_mode(proposal_resize, "proposals.resize")
        self.clip_resize = check_resize_mode(clip_resize, "clip.resize")
        self.inference = inference or InferenceConfig()
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.seen_classes = frozenset(seen_classes)
        self.name = name
        self.config = config                # the preset it was built from, if any
        self.last_timings: Dict[str, float] = {}   # seconds per stage of the last call (profiling.STAGES)
        self.trainable = list(trainable)    # parameter names (in classifier) its policy trains

    def to(self, device: Union[str, torch.device]) -> "Segmenter":
        """Move every model (e.g. to the CPU to free GPU memory while a node is inactive).
        Cached class embeddings are keyed by device, so nothing stale is reused."""
        self.device = torch.device(device)
        self.proposals.to(self.device)
        self.classifier.to(self.device)
        self.text_encoder.model.to(self.device)
        return self

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def encode_vocabulary(self, vocabulary) -> Tuple[Vocabulary, ClassEmbeddings]:
        vocab = Vocabulary.from_any(vocabulary)
        return vocab, self.text_encoder.encode(vocab)

    def seen_mask(self, vocab: Vocabulary) -> Optional[torch.Tensor]:
        if not self.seen_classes:
            return None
        return torch.tensor([n in self.seen_classes for n in vocab.names], device=self.device)

    def _clip_multiple(self) -> int:
        """CLIP's patch size: a padded CLIP batch is rounded up to it, so no content is
        dropped by the patch grid."""
        classifier = getattr(self.classifier, "inner", self.classifier)       # evaluate.py's recorder
        classifier = getattr(classifier, "first", classifier)                  # an ensemble's halves share it
        encoder = getattr(classifier, "encoder", None)
        return int(getattr(encoder, "patch_size", 1))

    def layout(self, images: Union[torch.Tensor, Sequence[torch.Tensor]]) -> Layout:
        """[3, h, w] images in [0, 1] (a list of any sizes, or a [B, 3, H, W] batch) -> both
        stages' batches. Padding is each model's mean colour (0 after its normalisation),
        as Mask2Former pads."""
        prop_mean = getattr(self.proposals, "pixel_mean", None)
        prop, prop_sizes = batch_for_stage(images, self.proposal_size, self.proposal_resize,
                                           pad_value=None if prop_mean is None else prop_mean.flatten())
        clip, clip_sizes = batch_for_stage(images, self.clip_size, self.clip_resize, self._clip_multiple())
        return Layout(prop, prop_sizes, clip, clip_sizes)

    def propose(self, layout: Layout) -> MaskProposals:
        """The mask generator's proposals for ``layout``'s batch, split into connected parts
        where ``inference.split_components`` asks for it."""
        with self.autocast():
            proposals = self.proposals(layout.proposal_batch)
        return split_components(proposals, self.inference.split_components)

    def _logits(self, layout: Layout, vocabulary, proposals, classifier=None, text=None,
                timer: Optional[StageTimer] = None, **kwargs):
        """-> (vocabulary, proposals in their own frame, their valid fractions, the classifier's output).

        Proposals from the mask generator cover its (padded) batch; given ones cover each
        image whole. Either way they are moved onto CLIP's frame, off on its padding.
        ``timer`` times the vocabulary, proposals and classifier stages."""
        stage = timer.stage if timer is not None else (lambda name: contextlib.nullcontext())
        with stage("vocabulary"):
            vocab, text = (self.encode_vocabulary(vocabulary) if text is None
                           else (Vocabulary.from_any(vocabulary), text))
        with self.autocast():
            if proposals is None:
                with stage("proposals"):
                    proposals = self.propose(layout)
                valid = layout.proposal_valid
            else:
                valid = [(1.0, 1.0)] * len(layout.clip_sizes)
            with stage("classifier"):
                moved = move_masks(proposals.masks, valid, layout.clip_valid)
                for_clip = proposals if moved is proposals.masks else MaskProposals(moved, proposals.objectness)
                if layout.clip_padded:
                    kwargs["image_sizes"] = layout.clip_sizes
                out = (classifier or self.classifier)(layout.clip_batch, for_clip, text, self.seen_mask(vocab),
                                                      **kwargs)
        return vocab, proposals, valid, out

    def _batch_layout(self, batch: torch.Tensor) -> Layout:
        if batch.dim() != 4:
            raise ValueError(f"want a [B, 3, H, W] batch in [0, 1], got shape {tuple(batch.shape)}")
        return self.layout(batch)

    def logits(self, batch: torch.Tensor, vocabulary, proposals: Optional[MaskProposals] = None,
               classifier: Optional[nn.Module] = None, text: Optional[ClassEmbeddings] = None, **kwargs):
        """What training differentiates: a [B, 3, H, W] batch in [0, 1] -> (proposals,
        the classifier's output). ``classifier`` replaces ours for this call (training
        passes its DistributedDataParallel wrapper); ``text`` replaces the cached class
        embeddings of ``vocabulary`` (text-tower training); ``kwargs`` go to the classifier.
        Given ``proposals`` cover each image whole (as the ground truth does)."""
        _, proposals, _, out = self._logits(self._batch_layout(batch), vocabulary, proposals, classifier, text,
                                            **kwargs)
        return proposals, out

    def predict(self, batch: torch.Tensor, vocabulary, proposals: Optional[MaskProposals] = None):
        """The differentiable core on a [B, 3, H, W] batch in [0, 1]: returns the
        proposals and the [B, Q, K + 1] class probabilities (last column void).
        Pass ``proposals`` to classify given masks (e.g. ground truth)."""
        vocab, proposals, _, logits = self._logits(self._batch_layout(batch), vocabulary, proposals)
        return proposals, class_probabilities(logits, proposals.objectness, len(vocab))

    @torch.no_grad()
    def __call__(self, images: Union[ImageLike, Sequence[ImageLike]], vocabulary,
                 vocabulary_version: Optional[int] = None,
                 proposals: Optional[MaskProposals] = None) -> Union[PanopticResult, List[PanopticResult]]:
        """One image -> one result; a list (or a [B, 3, H, W] / [B, H, W, 3] tensor, a
        [B, H, W, 3] numpy array) -> a list, computed as one batch. ``proposals`` replaces
        the mask generator (oracle masks). One vocabulary serves the whole batch."""
        if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
            images = list(images)
        _check_one_vocabulary(vocabulary, images)
        single = not isinstance(images, (list, tuple))
        images = [images] if single else images
        if not images:
            return []
        timer = StageTimer(self.device)
        with timer.stage("preprocess"):
            tensors = [image_to_tensor(im, self.device) for im in images]
            layout = self.layout(tensors)       # each image resized straight to the model sizes
        vocab, proposals, valid, logits = self._logits(layout, vocabulary, proposals, timer=timer)
        with timer.stage("merge"):
            probs = class_probabilities(logits, proposals.objectness, len(vocab))
            results = self._postprocess_batch([(p, m, v, t.shape[-2:], vocab, vocabulary_version)
                                               for p, m, v, t in zip(probs, proposals.masks, valid, tensors)])
        self.last_timings = timer.seconds()
        return results[0] if single else results

    def _postprocess_batch(self, items) -> List[PanopticResult]:
        """Post-process a batch's images side by side on the CPU, one torch thread each.

        At camera resolution the merge and semantic map cost far more than the batched
        forward, and one image's many mid-sized ops leave torch's threads waiting on each
        other (worst on shared cores), so two 1080p cameras in one call were no faster than
        one after the other. Images of one call are independent: a worker per thread, each
        single-threaded, keeps every core busy. ``torch.set_num_threads`` in a worker sets
        that thread's OpenMP and MKL threads (and torch's default for threads started
        meanwhile; it is put back when the worker is done). Small images and other devices
        stay one after the other: nothing to gain there."""
        threads = torch.get_num_threads()
        workers = min(len(items), threads)
        large = all(4 * 3 * m.shape[0] * size[0] * size[1] > MAX_BYTES for _, m, _, size, _, _ in items)
        if workers < 2 or self.device.type != "cpu" or not large:
            return [self._postprocess(*item) for item in items]

        def run(item):
            torch.set_num_threads(max(1, threads // workers))
            try:
                return self._postprocess(*item)
            finally:
                torch.set_num_threads(threads)
        with ThreadPoolExecutor(workers, thread_name_prefix="ovseg-postprocess") as pool:
            return list(pool.map(run, items))

    def _postprocess(self, probs, masks, valid, size, vocab: Vocabulary, version) -> PanopticResult:
        # The masks stay at their own resolution; only the image's part (never the padding)
        # is resampled, a band at a time.
        segment_map, segments, semantic = postprocess(
            probs, masks, valid, size, vocab.names, vocab.is_thing,
            object_mask_threshold=self.inference.object_mask_threshold,
            overlap_threshold=self.inference.overlap_threshold)
        return PanopticResult(segment_map=segment_map, segments=segments,
                              semantic_map=semantic, class_names=vocab.names,
                              class_is_thing=vocab.is_thing, vocabulary_version=version)
