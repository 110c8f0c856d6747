"""Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018): the equal-weight mean of the network weights at the end of the epochs
``start_epoch, start_epoch + every, …``.

Normalisation statistics. nnU-Net's networks normalise with instance norm (``InstanceNorm3d/2d`` with
``track_running_stats=False``): the statistics are computed from each image at every forward pass, in
training and at inference alike, so there are no running statistics to go stale and the averaged affine
parameters are used as they are. A network with batch norm (some plans choose it) does keep running
statistics, which do not match averaged weights; for such networks :func:`recompute_batch_norm` runs
training batches through the averaged network to recompute them (as ``torch.optim.swa_utils.update_bn``
does).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

__all__ = ["WeightAverage", "has_running_statistics", "recompute_batch_norm"]


def _storage_key(tensor: torch.Tensor) -> tuple:
    """Identifies the memory a state-dict entry views (shared modules give several keys one storage)."""
    return (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype)


class WeightAverage:
    """Running equal-weight mean of a network's floating-point state (parameters and float buffers);
    integer buffers (batch norm's counters) are copied from the latest network.

    Only distinct storages are averaged: nnU-Net's networks reach the encoder through the decoder too, so
    their state dict names one tensor under several keys (188 keys, 68 storages for a 3D U-Net);
    :attr:`aliases` maps every key to the key whose tensor holds its values. The average lives on
    ``device`` (default the CPU: it is touched once per averaged epoch and costs no accelerator memory).
    """

    def __init__(self, start_epoch: int, every: int = 1, device: torch.device | str = "cpu"):
        self.start_epoch, self.every = int(start_epoch), int(every)
        self.device = torch.device(device)
        self.n_averaged = 0
        #: the averaged tensors, one per distinct storage (by the first key that names it)
        self.average: dict[str, torch.Tensor] | None = None
        #: every state-dict key -> the key in :attr:`average` that holds its values
        self.aliases: dict[str, str] = {}

    def due(self, epoch: int) -> bool:
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every == 0

    @staticmethod
    def distinct(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """``(one tensor per distinct storage, key -> canonical key)`` of a state dict."""
        canonical: dict[tuple, str] = {}
        unique, aliases = {}, {}
        for key, value in state.items():
            identity = _storage_key(value)
            if identity not in canonical:
                canonical[identity] = key
                unique[key] = value
            aliases[key] = canonical[identity]
        return unique, aliases

    @torch.no_grad()
    def update(self, network: nn.Module, epoch: int) -> bool:
        """Add the network's current weights if ``epoch`` is an averaging epoch; True if added."""
        if not self.due(epoch):
            return False
        unique, aliases = self.distinct(network.state_dict())
        if self.average is None or self.n_averaged == 0:
            self.average = {k: v.detach().to(self.device, copy=True) for k, v in unique.items()}
            self.aliases = aliases
        else:
            n = self.n_averaged
            for key, value in unique.items():
                value = value.detach().to(self.device)
                if value.is_floating_point():
                    self.average[key].mul_(n / (n + 1)).add_(value, alpha=1 / (n + 1))
                else:
                    self.average[key].copy_(value)
        self.n_averaged += 1
        return True

    def full_state(self) -> dict[str, torch.Tensor]:
        """The average as a complete state dict (aliased keys share one tensor, as in the network)."""
        if self.average is None:
            raise ValueError("no weights have been averaged yet")
        return {key: self.average[canonical] for key, canonical in self.aliases.items()}

    def nbytes(self) -> int:
        """Memory held by the average."""
        return sum(v.numel() * v.element_size() for v in (self.average or {}).values())

    def state_dict(self, with_average: bool = True) -> dict:
        average = None if self.average is None or not with_average else \
            {k: v.detach().cpu() for k, v in self.average.items()}
        return {"start_epoch": self.start_epoch, "every": self.every, "n_averaged": self.n_averaged,
                "average": average, "aliases": dict(self.aliases) if with_average else None}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | str | None = None) -> None:
        if device is not None:
            self.device = torch.device(device)
        self.n_averaged = int(state["n_averaged"])
        average = state["average"]
        if average is None:
            self.average, self.aliases = None, {}
            return
        self.average = {k: v.to(self.device) for k, v in average.items()}
        # checkpoints written before storages were deduplicated hold every key
        self.aliases = dict(state.get("aliases") or {k: k for k in average})


def has_running_statistics(network: nn.Module) -> bool:
    """Whether any normalisation layer keeps running statistics (batch norm does; nnU-Net's instance norm
    does not)."""
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats for m in network.modules())


@torch.no_grad()
def recompute_batch_norm(network: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset and recompute the running statistics of every batch-norm layer from ``batches`` (network
    inputs), with a cumulative average; returns the number of batches used. The network is left in
    evaluation mode."""
    layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = {}
    for layer in layers:
        layer.reset_running_stats()
        momenta[layer] = layer.momentum
        layer.momentum = None  # cumulative moving average over all batches
    network.train()
    n = 0
    for batch in batches:
        network(batch)
        n += 1
    for layer, momentum in momenta.items():
        layer.momentum = momentum
    network.eval()
    return n
