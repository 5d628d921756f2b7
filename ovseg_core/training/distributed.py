"""torchrun plumbing: one process group (NCCL on GPUs, gloo on CPUs) and global sums."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.distributed as dist


def init_distributed(device: Optional[str] = None) -> Tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        on_gpu = torch.cuda.is_available() and not str(device or "auto").startswith("cpu")
        if on_gpu:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of ``value`` over all processes (itself when alone); no gradient flows."""
    value = value.detach().clone()
    if world_size() > 1:
        dist.all_reduce(value)
    return value


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
