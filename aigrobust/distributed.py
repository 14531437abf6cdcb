"""torchrun helpers: rank and world size (gloo on the CPU, NCCL on GPUs), a barrier, and the clean-up."""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist


def rank_and_world(device: Any) -> tuple[int, int]:
    """(rank, world size) under torchrun (gloo on the CPU, NCCL on GPUs); (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if getattr(device, "type", "cpu") == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def joined_rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the process group already joined; (0, 1) where none was."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier(world: int) -> None:
    """Wait for every rank (a no-op for one process)."""
    if world > 1:
        dist.barrier()


def finish() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
