"""The training loop: SMART/FISA and Mask-Adapter on one CPU or many GPUs (torchrun).

The frozen mask generator runs under ``no_grad``; the classifier runs through the same
``Segmenter.logits`` path inference uses, wrapped in DistributedDataParallel when there
are several processes. Loss terms are sums divided by counts summed over all
processes, so the gradient of one step does not depend on how the batch is split.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..build import build_from_config
from ..config import DATA_DIR
from ..modeling.classifiers import GeometricEnsemble, MaskAdapterClassifier, MaskAttentionClassifier
from ..structures import MaskProposals
from .checkpoint import git_revision, load_checkpoint, save_checkpoint, write_yaml
from .data import StepSampler, TrainingSet, build_source, collate
from .distributed import barrier, global_sum, init_distributed, local_rank
from .losses import IGNORE, classification_sums, consistency_sum, mask_sums
from .matching import hungarian_match, iou_match, resize_targets
from .recipe import Recipe, model_preset, recipe_to_dict

# Keys a resumed run may change: where data lives and how the run reports, not what it learns.
RESUMABLE_CHANGES = ("data.root", "data.num_workers", "log_every", "checkpoint_every", "eval.")
GT_LOGIT = 20.0  # ground-truth masks as logits (sigmoid(20) = 1 - 2e-9), as OracleProposals


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (exists, or belongs to another recipe)."""


def _flatten(d: dict, prefix: str = "") -> Dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_differences(old: dict, new: dict) -> List[str]:
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)]


def param_groups(module: torch.nn.Module, names: List[str], new: set, optim) -> List[dict]:
    """CLIP's pre-trained tensors at lr x clip_lr_multiplier, new modules at lr; no weight
    decay on biases, norms and embeddings (detectron2's WEIGHT_DECAY_NORM/EMBED = 0)."""
    params = dict(module.named_parameters())
    groups: Dict[tuple, List[torch.nn.Parameter]] = {}
    for name in names:
        p = params[name]
        decay = p.ndim >= 2 and not name.endswith(("positional_embedding", "class_embedding", "void_embedding",
                                                   "token_embedding.weight"))
        lr = optim.lr if name in new else optim.lr * optim.clip_lr_multiplier
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": optim.weight_decay if decay else 0.0}
            for (lr, decay), ps in groups.items()]


def warmup_poly(warmup: int, max_iters: int, power: float) -> Callable[[int], float]:
    """detectron2's WarmupPolyLR factor: linear warm-up from 0.001, then (1 - t/T)^power."""
    def factor(step: int) -> float:
        poly = (1 - step / max_iters) ** power
        if step < warmup:
            alpha = step / warmup
            return poly * (0.001 * (1 - alpha) + alpha)
        return poly
    return factor


def trained_classifier(classifier: torch.nn.Module, method: str, where: str) -> torch.nn.Module:
    """The classifier a method trains: the preset's own, or the half of a geometric
    ensemble that is of the method's kind and has trainable parameters (SMART: usually
    the first, in-vocabulary half; Mask-Adapter: either, e.g. the second half in place of
    FC-CLIP's out-of-vocabulary mask pooling). Its loss sees that half alone."""
    kind = MaskAdapterClassifier if method == "mask_adapter" else MaskAttentionClassifier
    halves = [classifier.first, classifier.second] if isinstance(classifier, GeometricEnsemble) else [classifier]
    chosen = [h for h in halves if isinstance(h, kind) and any(p.requires_grad for p in h.parameters())]
    if len(chosen) != 1:
        types = ", ".join(type(h).__name__ for h in halves)
        raise ValueError(f"{where}: method {method} trains a {kind.__name__} with trainable parameters; the preset "
                         f"has {types} ({len(chosen)} trainable of that kind). Set model: {{classifier.type: "
                         f"{'mask_adapter' if method == 'mask_adapter' else 'mask_attention'}}} or the method")
    return chosen[0]


class Trainer:
    """One training run. ``validate(segmenter) -> {metric: value}`` runs on rank 0."""

    def __init__(self, recipe: Recipe, run_dir: Path, resume: bool = False, overwrite: bool = False,
                 device: Optional[str] = None, validate: Optional[Callable] = None, progress: bool = True):
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.rank, self.world = init_distributed(device)
        self.is_main = self.rank == 0
        self.validate = validate
        where = f"recipe {recipe.name!r}"
        self._check_run_dir(resume, overwrite)

        cfg = model_preset(recipe)
        if device is not None:
            cfg.device = device
        if self.world > 1 and torch.cuda.is_available() and cfg.device in ("auto", "cuda"):
            cfg.device = f"cuda:{local_rank()}"
        self.preset_config = cfg
        torch.manual_seed(recipe.seed)  # new modules start alike on every process
        self.segmenter = build_from_config(cfg)
        self.classifier = self.segmenter.classifier
        self.names = list(self.segmenter.trainable)
        if not self.names:
            raise ValueError(f"{where}: preset {recipe.preset!r} trains nothing (classifier.trainable: "
                             f"{cfg.classifier.trainable}); set model: {{classifier.trainable: query_projection}}")
        self.trained = trained_classifier(self.classifier, recipe.method, where)
        self.device = self.segmenter.device

        source = build_source(recipe.data, where)
        self.vocab = source.vocabulary
        self.dataset = TrainingSet(source, recipe.data, recipe.seed)

        # New modules and LoRA matrices start from scratch: the full lr; CLIP's own tensors x 0.1.
        halves = [("first.", self.classifier.first), ("second.", self.classifier.second)] \
            if isinstance(self.classifier, GeometricEnsemble) else [("", self.classifier)]
        new = {prefix + n for prefix, half in halves for n, _ in half.new_parameters()}
        new |= {n for n in self.names if ".lora_" in n}
        self.optimizer = torch.optim.AdamW(param_groups(self.classifier, self.names, new, recipe.optim),
                                           lr=recipe.optim.lr, weight_decay=recipe.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_poly(recipe.optim.warmup_iters, recipe.optim.max_iters, recipe.optim.poly_power))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.segmenter.amp_dtype == torch.float16)
        # preset text.trainable: the text tower trains too, its embeddings recomputed every step
        self.text_tower = getattr(self.classifier, "text_tower", None)
        self.model = self.trained
        if self.world > 1:
            module = self.trained if self.text_tower is None else _WithTextTower(self.trained, self.text_tower)
            self.model = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        self.step = 0
        if resume:
            state = load_checkpoint(self.run_dir, self.classifier, self.names, cfg.name)
            if state is not None:
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                self.scaler.load_state_dict(state["scaler"])
                torch.set_rng_state(state["torch_rng"])
                self.step = int(state["step"])
        self.progress = progress and self.is_main
        if self.is_main:
            self._write_run_files()
        barrier()

    # ---- run directory ----------------------------------------------------------------
    def _check_run_dir(self, resume: bool, overwrite: bool):
        recipe_file = self.run_dir / "recipe.yaml"
        if resume:
            if not recipe_file.is_file():
                raise RunDirError(f"--resume: {self.run_dir} holds no run (no recipe.yaml); "
                                  f"start it without --resume")
            import yaml
            old = yaml.safe_load(recipe_file.read_text())
            diff = recipe_differences(old, recipe_to_dict(self.recipe))
            if diff:
                raise RunDirError(f"--resume: {self.run_dir} was started with another recipe; differing keys: "
                                  f"{'; '.join(diff[:8])}. Resume with the same recipe, or start a new run")
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not overwrite:
                raise RunDirError(f"{self.run_dir} already holds a run; pass --resume to continue it, "
                                  f"--overwrite to start it again, or choose another --name")
            barrier()
            if self.rank == 0:
                import shutil
                shutil.rmtree(self.run_dir)
            barrier()

    def _write_run_files(self):
        run = self.run_dir
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_yaml(run / "recipe.yaml", recipe_to_dict(self.recipe))
        preset = dataclasses.asdict(self.preset_config)
        preset.update(weights=None, device="auto")
        write_yaml(run / "preset.yaml", preset)
        (run / "git.txt").write_text(git_revision(DATA_DIR) + "\n")
        from ..trainable import describe_trainable, format_trainable
        table = format_trainable(describe_trainable(self.classifier, self.names))
        (run / "trainable.txt").write_text(table + "\n\ntrained tensors:\n" + "\n".join(self.names) + "\n")
        print(f"training {self.recipe.name} ({self.recipe.method}) on {self.recipe.data.dataset}, "
              f"{len(self.dataset)} images, {self.world} process(es), device {self.device}\n{table}",
              file=sys.stderr)

    # ---- one step ---------------------------------------------------------------------
    def smart_losses(self, batch: dict, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """CE of every proposal against its matched segment's class (void when unmatched,
        nothing when it lies on ignored pixels); Dice + BCE of the Distribution Adapter's
        output for matched proposals against their segments."""
        rc, m = self.recipe, self.recipe.matcher
        proposals, (logits, adapted) = self.segmenter.logits(images, self.vocab, classifier=self.model,
                                                             text=self._text(), return_adapted_masks=True)
        k = len(self.vocab)
        void = k if logits.shape[-1] == k + 1 else None
        b, q = logits.shape[:2]
        masks = proposals.masks
        targets = torch.full((b, q), IGNORE if void is None else void, dtype=torch.long, device=self.device)
        ignore = resize_targets(batch["ignore"].to(self.device), masks.shape[-2:]) > 0.5
        inside = masks > 0
        on_ignore = (inside & ignore[:, None]).flatten(2).sum(-1) * 2 > inside.flatten(2).sum(-1).clamp_min(1)
        targets[on_ignore] = IGNORE
        matched = []
        for i in range(b):
            gt = batch["masks"][i].to(self.device)
            if m.type == "hungarian":
                rows, cols = hungarian_match(masks[i], gt, m.cost_bce, m.cost_dice)
            else:
                rows, cols = iou_match(masks[i], gt, m.iou_threshold, m.iou_pairs, self._generator(batch, i))
            targets[i, rows.to(self.device)] = batch["classes"][i].to(self.device)[cols]
            matched.append((rows, gt[cols.to(self.device)]))
        ce, ce_count = classification_sums(logits, targets, void, rc.loss.void_weight)
        out = {"ce": (ce, ce_count)}
        num = sum(len(r) for r, _ in matched)
        if adapted is not None:
            if num:
                pred = torch.cat([adapted[i, r.to(self.device)] for i, (r, _) in enumerate(matched)])
                gts = torch.cat([resize_targets(g, adapted.shape[-2:]) for _, g in matched])
                dice, bce = mask_sums(pred, gts)
            else:
                dice = bce = adapted.sum() * 0.0
            count = torch.tensor(float(num), device=self.device)
            out.update(dice=(dice, count), bce=(bce, count))
        return out

    def mask_adapter_losses(self, batch: dict, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Ground-truth masks (warm-up), then ground-truth plus IoU-matched predicted masks
        (mixed), all classified with CE; each predicted mask's embedding is pulled toward
        its ground-truth mask's (mask consistency)."""
        rc = self.recipe
        mixed = self.step >= rc.mask_adapter.gt_warmup_iters
        size = tuple(s // 4 for s in self.segmenter.proposal_size)
        # the predicted masks are needed before the classifier's input can be assembled; they
        # are the ones inference classifies (split into connected parts where the preset says so)
        predicted = self.segmenter.propose(self.segmenter.layout(images)) if mixed else None
        if predicted is not None:
            size = tuple(predicted.masks.shape[-2:])
        per_image, pairs = [], []
        for i in range(len(images)):
            gt = batch["masks"][i].to(self.device)
            classes = batch["classes"][i].to(self.device)
            gt_logits = (resize_targets(gt, size) > 0.5).float() * (2 * GT_LOGIT) - GT_LOGIT
            if predicted is not None:
                rows, cols = iou_match(predicted.masks[i], gt, rc.matcher.iou_threshold, rc.matcher.iou_pairs,
                                       self._generator(batch, i))
                rows, cols = rows.to(self.device), cols.to(self.device)
                gt_logits = torch.cat([gt_logits, predicted.masks[i][rows]])
                classes = torch.cat([classes, classes[cols]])
                pairs.append((i, len(gt) + torch.arange(len(rows), device=self.device), cols))
            per_image.append((gt_logits, classes))
        width = max(1, max(len(c) for _, c in per_image))
        masks = torch.full((len(images), width, *size), -GT_LOGIT, device=self.device)
        targets = torch.full((len(images), width), IGNORE, dtype=torch.long, device=self.device)
        for i, (lg, c) in enumerate(per_image):
            masks[i, :len(c)], targets[i, :len(c)] = lg, c
        proposals = MaskProposals(masks=masks, objectness=(targets != IGNORE).float())
        _, (logits, embeddings) = self.segmenter.logits(images, self.vocab, proposals=proposals,
                                                        classifier=self.model, text=self._text(),
                                                        return_embeddings=True)
        ce, ce_count = classification_sums(logits[..., :len(self.vocab)], targets, None, 1.0)
        out = {"ce": (ce, ce_count)}
        if mixed:
            num = sum(len(p) for _, p, _ in pairs)
            if num:
                pred = torch.cat([embeddings[i, p] for i, p, _ in pairs])
                gts = torch.cat([embeddings[i, c] for i, _, c in pairs])
                cons = consistency_sum(pred, gts)
            else:
                cons = embeddings.sum() * 0.0
            out["consistency"] = (cons, torch.tensor(float(num), device=self.device))
        return out

    def _text(self):
        """Class embeddings with gradients when the text tower trains (None: the cached ones)."""
        return None if self.text_tower is None else self.segmenter.text_encoder.encode_differentiable(self.vocab)

    def _generator(self, batch: dict, i: int) -> torch.Generator:
        """Random choices of the matcher, fixed by the sample's global position."""
        seed = int(np.random.default_rng([self.recipe.seed, 4, batch["positions"][i]]).integers(1 << 62))
        return torch.Generator().manual_seed(seed)

    def train_step(self, batch: dict) -> Dict[str, float]:
        self.trained.train()
        start = time.perf_counter()
        images = batch["images"].to(self.device, non_blocking=True).float().div_(255)
        losses = self.smart_losses(batch, images) if self.recipe.method == "smart" \
            else self.mask_adapter_losses(batch, images)
        counts = global_sum(torch.stack([c.float() for _, c in losses.values()]))
        weights = dataclasses.asdict(self.recipe.loss)
        total, report = 0.0, {}
        for (name, (value, _)), count in zip(losses.items(), counts):
            term = value / count.clamp_min(1e-6)
            report[name] = float(term.detach())
            total = total + weights[name] * term
        report["loss"] = sum(weights[n] * report[n] for n in losses)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total * self.world).backward()
        if self.recipe.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            report["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.recipe.optim.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        report["seconds"] = time.perf_counter() - start
        report["lr"] = max(g["lr"] for g in self.optimizer.param_groups)
        return report

    # ---- the run ----------------------------------------------------------------------
    def checkpoint(self):
        if self.is_main:
            save_checkpoint(self.run_dir, self.step, self.classifier, self.names, self.preset_config.name, {
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state()})
        barrier()

    def run_validation(self) -> Optional[dict]:
        if self.validate is None:
            return None
        metrics = None
        if self.is_main:
            self.classifier.eval()
            if self.text_tower is not None:
                self.segmenter.text_encoder.cache.clear()  # embeddings of the tower as it is now
            metrics = self.validate(self.segmenter)
            self.trained.train()
            with open(self.run_dir / "validation.jsonl", "a") as f:
                import json
                f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        barrier()
        return metrics

    def fit(self, stop_at: Optional[int] = None) -> int:
        """Trains until max_iters (or ``stop_at`` steps, for runs split across sessions);
        returns the step reached. Checkpoints every ``checkpoint_every`` steps and at the end."""
        rc = self.recipe
        end = min(rc.optim.max_iters, stop_at if stop_at is not None else rc.optim.max_iters)
        sampler = StepSampler(self.step, end, rc.optim.batch_size, self.rank, self.world)
        loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate,
                            num_workers=rc.data.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        writer = self._writer()
        log = self._csv()
        bar = tqdm(total=end, initial=self.step, unit="it", desc=rc.name, disable=not self.progress, file=sys.stderr)
        proposal_time = _ProposalTimer(self.segmenter)
        for batch in loader:
            with proposal_time:
                report = self.train_step(batch)
            report["proposal_share"] = proposal_time.share(report["seconds"])
            report["images_per_second"] = rc.optim.batch_size / report["seconds"]
            report["peak_memory_mb"] = _peak_memory_mb(self.device)
            bar.update(1)
            bar.set_postfix(loss=f"{report['loss']:.3f}", lr=f"{report['lr']:.2e}")
            if not math.isfinite(report["loss"]):
                raise FloatingPointError(f"step {self.step}: the loss is {report['loss']}; lower optim.lr or "
                                         f"check the data (the last checkpoint is intact)")
            if self.is_main and (self.step % rc.log_every == 0 or self.step == end):
                log(report)
                for k, v in report.items():
                    writer.add_scalar(f"train/{k}", v, self.step)
            if rc.eval.every and self.step % rc.eval.every == 0 and self.step < rc.optim.max_iters:
                self._log_validation(writer, self.run_validation())
            if self.step % rc.checkpoint_every == 0 and self.step < end:
                self.checkpoint()
        bar.close()
        self.checkpoint()
        if self.step >= rc.optim.max_iters:
            self._log_validation(writer, self.run_validation())
        writer.close()
        return self.step

    def _log_validation(self, writer, metrics):
        if metrics and self.is_main:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and v is not None:
                    writer.add_scalar(f"val/{k}", v, self.step)
            tqdm.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                                         if isinstance(v, (int, float))), file=sys.stderr)

    def _writer(self):
        if not self.is_main:
            return _NullWriter()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("training logs to TensorBoard: pip install tensorboard "
                              "(or pip install -e .[train])") from err
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step or None)

    def _csv(self):
        path = self.run_dir / "metrics.csv"
        fields = ["step", "loss", "ce", "dice", "bce", "consistency", "lr", "grad_norm", "seconds",
                  "images_per_second", "proposal_share", "peak_memory_mb"]

        def write(report):
            new = not path.exists()
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow({"step": self.step, **{k: (f"{v:.6g}" if isinstance(v, float) else v)
                                                  for k, v in report.items()}})
        return write


class _WithTextTower(torch.nn.Module):
    """The trained classifier and the text tower as one module for DistributedDataParallel
    (so both are synchronised); forward is the classifier's."""

    def __init__(self, classifier, text_tower):
        super().__init__()
        self.classifier, self.text_tower = classifier, text_tower

    def forward(self, *args, **kwargs):
        return self.classifier(*args, **kwargs)


class _NullWriter:
    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


class _ProposalTimer:
    """Times the frozen mask generator inside a step (its share of the step time)."""

    def __init__(self, segmenter):
        self.module = segmenter.proposals
        self.device = segmenter.device
        self.seconds = 0.0
        self._start = None
        self._handles = []

    def _pre(self, *args):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._start = time.perf_counter()

    def _post(self, *args):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - self._start

    def __enter__(self):
        self.seconds = 0.0
        self._handles = [self.module.register_forward_pre_hook(self._pre),
                         self.module.register_forward_hook(self._post)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()

    def share(self, total: float) -> float:
        return self.seconds / total if total > 0 else 0.0


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
