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


class WeightAverage:
    """Running equal-weight mean of a network's floating-point state (parameters and float buffers);
    integer buffers (batch norm's counters) are copied from the latest network."""

    def __init__(self, start_epoch: int, every: int = 1):
        self.start_epoch, self.every = int(start_epoch), int(every)
        self.n_averaged = 0
        self.average: dict[str, torch.Tensor] | None = None

    def due(self, epoch: int) -> bool:
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every == 0

    @torch.no_grad()
    def update(self, network: nn.Module, epoch: int) -> bool:
        """Add the network's current weights if ``epoch`` is an averaging epoch; True if added."""
        if not self.due(epoch):
            return False
        state = network.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items()}
        else:
            n = self.n_averaged
            for key, value in state.items():
                if value.is_floating_point():
                    self.average[key].mul_(n / (n + 1)).add_(value.detach(), alpha=1 / (n + 1))
                else:
                    self.average[key].copy_(value)
        self.n_averaged += 1
        return True

    def state_dict(self) -> dict:
        average = None if self.average is None else {k: v.detach().cpu() for k, v in self.average.items()}
        return {"start_epoch": self.start_epoch, "every": self.every, "n_averaged": self.n_averaged, "average": average}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | str = "cpu") -> None:
        self.n_averaged = int(state["n_averaged"])
        average = state["average"]
        self.average = None if average is None else {k: v.to(device) for k, v in average.items()}


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
