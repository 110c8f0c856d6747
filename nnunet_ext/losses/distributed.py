"""Summing per-process statistics across DDP workers with gradients intact."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_gather_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over all DDP processes; the gradient flows back to every process's own share.

    Returns ``x`` unchanged when no process group is initialised.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.stack(all_gather(x), dim=0).sum(0)
