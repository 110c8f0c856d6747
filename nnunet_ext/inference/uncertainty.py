"""Streaming moments of per-variant probabilities and the uncertainty maps computed from them.

Pure PyTorch, no nnU-Net import. A *variant* is one prediction that nnU-Net averages into a voxel:
one mirror combination (test-time augmentation) of one sliding-window tile of one fold model. Every
variant ``v`` carries a weight ``w_v``: the gaussian importance of its tile at that voxel (nnU-Net's
own tile weighting), times the fold weight. With ``p_v`` the probability vector of variant ``v``
(softmax over classes for label datasets, sigmoid per region for region datasets),
``W = sum_v w_v`` and per channel ``c``:

* mean probability ``mu_c = sum_v w_v p_{v,c} / W``
* variance ``var_c = sum_v w_v (p_{v,c} - mu_c)^2 / W``
* mean variant entropy ``E[H] = sum_v w_v H(p_v) / W``

The maps (one value per voxel):

* ``variance``: ``(1/C) sum_c var_c`` (mean over the C classes/regions; in [0, 0.25])
* ``entropy``: predictive entropy of the mean, ``H(mu) = -sum_c mu_c ln mu_c`` for labels (in
  [0, ln C]), the mean over regions of the binary entropy
  ``-(mu_c ln mu_c + (1 - mu_c) ln(1 - mu_c))`` for regions (in [0, ln 2]); nats
* ``mutual_information``: ``H(mu) - E[H]`` (epistemic part of the entropy; >= 0 by Jensen)

All three are exactly zero where every variant gives the same probabilities: the accumulation uses
Welford/Chan updates (running means and sums of squared deviations), which add exact zeros when
the values agree, instead of ``E[p^2] - E[p]^2`` which leaves rounding noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch

#: the uncertainty maps this module computes, in the order they are documented
KINDS: Tuple[str, ...] = ("variance", "entropy", "mutual_information")

# probabilities are clamped away from 0 before the logarithm; 0 * log(0) is taken as 0
_EPS = 1e-12


def check_kinds(kinds: Iterable[str]) -> Tuple[str, ...]:
    """Validate and de-duplicate requested map kinds (order kept).

    Parameters
    ----------
    kinds : iterable of str
        Names from :data:`KINDS`.

    Returns
    -------
    tuple of str

    Raises
    ------
    ValueError
        If a name is not in :data:`KINDS`.
    """
    out = []
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown uncertainty kind {k!r}; choose from {', '.join(KINDS)}")
        if k not in out:
            out.append(k)
    return tuple(out)


def needs(kinds: Sequence[str]) -> Tuple[bool, bool]:
    """Which moments the requested maps need beyond the mean.

    Parameters
    ----------
    kinds : sequence of str
        Names from :data:`KINDS`.

    Returns
    -------
    (second_moment, entropy) : tuple of bool
        ``second_moment`` for ``variance``, ``entropy`` (mean variant entropy) for
        ``mutual_information``.
    """
    return "variance" in kinds, "mutual_information" in kinds


def entropy(p: torch.Tensor, regions: bool) -> torch.Tensor:
    """Entropy (nats) of probability vectors along dim 0.

    Parameters
    ----------
    p : torch.Tensor, shape (C, *S)
        Probabilities: a distribution over C classes (``regions=False``) or C independent region
        probabilities (``regions=True``).
    regions : bool
        False: ``-sum_c p_c ln p_c``. True: mean over the C regions of the binary entropy
        ``-(p_c ln p_c + (1 - p_c) ln(1 - p_c))``.

    Returns
    -------
    torch.Tensor, shape (*S), float32 (float64 for float64 input)
    """
    p = p if p.dtype == torch.float64 else p.float()
    if not regions:
        return -(p * torch.log(p.clamp_min(_EPS))).sum(0)
    q = 1 - p
    h = -(p * torch.log(p.clamp_min(_EPS)) + q * torch.log(q.clamp_min(_EPS)))
    return h.mean(0)


@dataclass
class TileMoments:
    """Unweighted running moments over the variants of one tile (Welford).

    Attributes
    ----------
    n : int
        Number of variants added.
    mean : torch.Tensor, shape (C, *P), float32
        Mean probability over the variants.
    m2 : torch.Tensor or None, shape (C, *P)
        Sum over variants of squared deviations from ``mean`` (None when not requested).
    mean_entropy : torch.Tensor or None, shape (*P)
        Mean over variants of the variant entropy (None when not requested).
    """

    n: int
    mean: torch.Tensor
    m2: Optional[torch.Tensor]
    mean_entropy: Optional[torch.Tensor]

    @classmethod
    def first(cls, p: torch.Tensor, second: bool, with_entropy: bool, regions: bool) -> "TileMoments":
        """Start from one variant.

        Parameters
        ----------
        p : torch.Tensor, shape (C, *P)
            The variant's probabilities.
        second, with_entropy : bool
            Track the sum of squared deviations / the mean variant entropy.
        regions : bool
            Region (sigmoid) probabilities rather than a class distribution (softmax).
        """
        mean = p.float().clone()
        m2 = torch.zeros_like(mean) if second else None
        h = entropy(mean, regions) if with_entropy else None
        return cls(1, mean, m2, h)

    def add(self, p: torch.Tensor, regions: bool) -> None:
        """Add one variant (Welford update: ``mean += d / n``, ``m2 += d * (p - mean_new)``).

        Parameters
        ----------
        p : torch.Tensor, shape (C, *P)
            The variant's probabilities, same shape as ``mean``.
        regions : bool
            As in :meth:`first`.
        """
        p = p.float()
        self.n += 1
        delta = p - self.mean
        self.mean.add_(delta, alpha=1.0 / self.n)
        if self.m2 is not None:
            self.m2.addcmul_(delta, p - self.mean)
        if self.mean_entropy is not None:
            h = entropy(p, regions)
            self.mean_entropy.add_(h - self.mean_entropy, alpha=1.0 / self.n)

    def to(self, device: Union[torch.device, str]) -> "TileMoments":
        """The same moments on ``device`` (``self`` when already there)."""
        if self.mean.device == torch.device(device):
            return self
        return TileMoments(self.n, self.mean.to(device), None if self.m2 is None else self.m2.to(device),
                           None if self.mean_entropy is None else self.mean_entropy.to(device))


class WeightedMoments:
    """Weighted running moments over all variants that cover each voxel of a volume.

    Tiles are merged with Chan's parallel update, so the result does not depend on how the
    variants were grouped, and voxels where all variants agree keep an exactly zero spread.

    Parameters
    ----------
    num_channels : int
        C, number of classes (labels) or regions.
    spatial_shape : tuple of int
        S, the spatial shape of the volume (2 or 3 axes; for 2D configurations run on 3D data the
        slice axis is part of S).
    second : bool
        Track the weighted sum of squared deviations (needed for ``variance``).
    with_entropy : bool
        Track the weighted mean variant entropy (needed for ``mutual_information``).
    device : torch.device or str
        Where the buffers live.

    Attributes
    ----------
    weight : torch.Tensor, shape S, float32
        ``W``, total weight per voxel.
    mean : torch.Tensor, shape (C, *S), float32
        ``mu``, weighted mean probability.
    m2 : torch.Tensor or None, shape (C, *S)
        ``sum_v w_v (p_v - mu)^2``.
    mean_entropy : torch.Tensor or None, shape S
        ``E[H]``.
    """

    def __init__(self, num_channels: int, spatial_shape: Sequence[int], second: bool, with_entropy: bool,
                 device: Union[torch.device, str] = "cpu"):
        shape = tuple(int(s) for s in spatial_shape)
        self.weight = torch.zeros(shape, dtype=torch.float32, device=device)
        self.mean = torch.zeros((num_channels, *shape), dtype=torch.float32, device=device)
        self.m2 = torch.zeros_like(self.mean) if second else None
        self.mean_entropy = torch.zeros(shape, dtype=torch.float32, device=device) if with_entropy else None

    @property
    def spatial_shape(self) -> Tuple[int, ...]:
        return tuple(self.weight.shape)

    def add_tile(self, slicer: tuple, tile: TileMoments, gaussian: Union[torch.Tensor, float]) -> None:
        """Merge a tile's moments into the voxels it covers.

        Every variant of the tile gets weight ``gaussian`` (per voxel), so the tile's weight is
        ``n * gaussian`` and its weighted squared deviations ``gaussian * m2``.

        Parameters
        ----------
        slicer : tuple of slices/ints
            Index of the tile in a (C, *S) array, as nnU-Net's sliding window builds it
            (``slicer[0]`` is the channel slice, ``slicer[1:]`` indexes S).
        tile : TileMoments
            Moments over the tile's variants, spatial shape P = shape of ``self.weight[slicer[1:]]``.
        gaussian : torch.Tensor of shape P, or float
            Importance weight of the tile's voxels (nnU-Net's gaussian, or 1).
        """
        sp = slicer[1:]
        g = gaussian.float() if isinstance(gaussian, torch.Tensor) else float(gaussian)
        w_tile = g * tile.n
        if not isinstance(w_tile, torch.Tensor):
            w_tile = torch.full(tile.mean.shape[1:], w_tile, dtype=torch.float32, device=self.weight.device)
        w_old = self.weight[sp].clone()
        w_new = w_old + w_tile
        ratio = w_tile / w_new  # share of the tile in the merged mean
        mean_view = self.mean[slicer]
        delta = tile.mean - mean_view
        mean_view.addcmul_(delta, ratio)
        if self.m2 is not None:
            # Chan: M2 = M2_a + M2_b + delta^2 * W_a * W_b / (W_a + W_b)
            m2_view = self.m2[slicer]
            if isinstance(g, torch.Tensor):
                m2_view.addcmul_(tile.m2, g)
            else:
                m2_view.add_(tile.m2, alpha=g)
            m2_view.addcmul_(delta * delta, w_old * ratio)
        if self.mean_entropy is not None:
            h_view = self.mean_entropy[sp]
            h_view.addcmul_(tile.mean_entropy - h_view, ratio)
        self.weight[sp] = w_new

    def merge(self, other: "WeightedMoments", other_scale: float = 1.0) -> None:
        """Merge another volume's moments (e.g. another fold model) into this one, in place.

        Parameters
        ----------
        other : WeightedMoments
            Same shapes and tracked moments as ``self``.
        other_scale : float
            Multiplies ``other``'s weights (fold weight); ``self``'s weights stay as they are.
        """
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge moments of shape {tuple(other.mean.shape)} into {tuple(self.mean.shape)}")
        w_b = other.weight * float(other_scale)
        w_new = self.weight + w_b
        ratio = torch.where(w_new > 0, w_b / w_new.clamp_min(torch.finfo(torch.float32).tiny),
                            torch.zeros_like(w_new))
        delta = other.mean - self.mean
        self.mean.addcmul_(delta, ratio)
        if self.m2 is not None:
            self.m2.add_(other.m2, alpha=float(other_scale))
            self.m2.addcmul_(delta * delta, self.weight * ratio)
        if self.mean_entropy is not None:
            self.mean_entropy.addcmul_(other.mean_entropy - self.mean_entropy, ratio)
        self.weight = w_new

    def crop(self, spatial_slicer: tuple) -> "WeightedMoments":
        """A view of a spatial sub-block (used to undo nnU-Net's padding).

        Parameters
        ----------
        spatial_slicer : tuple of slices
            One slice per spatial axis.

        Returns
        -------
        WeightedMoments
            Sharing memory with ``self``.
        """
        out = WeightedMoments.__new__(WeightedMoments)
        full = (slice(None), *spatial_slicer)
        out.weight = self.weight[spatial_slicer]
        out.mean = self.mean[full]
        out.m2 = None if self.m2 is None else self.m2[full]
        out.mean_entropy = None if self.mean_entropy is None else self.mean_entropy[spatial_slicer]
        return out

    def _map(self, fn) -> "WeightedMoments":
        out = WeightedMoments.__new__(WeightedMoments)
        out.weight = fn(self.weight)
        out.mean = fn(self.mean)
        out.m2 = None if self.m2 is None else fn(self.m2)
        out.mean_entropy = None if self.mean_entropy is None else fn(self.mean_entropy)
        return out

    def to(self, device: Union[torch.device, str]) -> "WeightedMoments":
        """The same moments on ``device`` (``self`` when already there)."""
        if self.weight.device == torch.device(device):
            return self
        return self._map(lambda t: t.to(device))

    def clone(self) -> "WeightedMoments":
        """A contiguous copy that shares no memory with ``self``."""
        return self._map(lambda t: t.contiguous().clone())

    def scale_(self, factor: float) -> "WeightedMoments":
        """Multiply every variant weight by ``factor`` (W and the weighted squared deviations), in place."""
        self.weight.mul_(float(factor))
        if self.m2 is not None:
            self.m2.mul_(float(factor))
        return self


def variance_map(moments: WeightedMoments) -> torch.Tensor:
    """Mean over channels of the weighted variance, ``(1/C) sum_c m2_c / W``.

    Parameters
    ----------
    moments : WeightedMoments
        With ``m2`` tracked.

    Returns
    -------
    torch.Tensor, shape S, float32
        Zero where ``W == 0`` (no variant covers the voxel).
    """
    if moments.m2 is None:
        raise ValueError("the variance map needs the second moment; accumulate with second=True")
    c = moments.mean.shape[0]
    w = moments.weight
    var = moments.m2.sum(0) / (c * w.clamp_min(torch.finfo(torch.float32).tiny))
    return torch.where(w > 0, var.clamp_min(0), torch.zeros_like(var))


def predictive_entropy_map(moments: WeightedMoments, regions: bool) -> torch.Tensor:
    """Entropy of the mean probability, ``H(mu)`` (see :func:`entropy`).

    Parameters
    ----------
    moments : WeightedMoments
    regions : bool
        Region (sigmoid) rather than label (softmax) probabilities.

    Returns
    -------
    torch.Tensor, shape S, float32
    """
    return entropy(moments.mean, regions).clamp_min(0)


def mutual_information_map(moments: WeightedMoments, regions: bool) -> torch.Tensor:
    """Mutual information between the prediction and the variant, ``H(mu) - E[H]``.

    Parameters
    ----------
    moments : WeightedMoments
        With ``mean_entropy`` tracked.
    regions : bool
        Region (sigmoid) rather than label (softmax) probabilities.

    Returns
    -------
    torch.Tensor, shape S, float32
        Clamped at 0 (it is >= 0 in exact arithmetic).
    """
    if moments.mean_entropy is None:
        raise ValueError("the mutual information needs the mean variant entropy; accumulate with with_entropy=True")
    return (entropy(moments.mean, regions) - moments.mean_entropy).clamp_min(0)


def uncertainty_maps(moments: WeightedMoments, kinds: Sequence[str], regions: bool) -> Dict[str, torch.Tensor]:
    """All requested maps from accumulated moments.

    Parameters
    ----------
    moments : WeightedMoments
        Accumulated over all variants.
    kinds : sequence of str
        Names from :data:`KINDS`.
    regions : bool
        Region (sigmoid) rather than label (softmax) probabilities.

    Returns
    -------
    dict of str to torch.Tensor
        kind -> map of shape S, float32.
    """
    out = {}
    for k in check_kinds(kinds):
        if k == "variance":
            out[k] = variance_map(moments)
        elif k == "entropy":
            out[k] = predictive_entropy_map(moments, regions)
        else:
            out[k] = mutual_information_map(moments, regions)
    return out


def maps_from_variants(probabilities: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None,
                       kinds: Sequence[str] = KINDS, regions: bool = False) -> Dict[str, torch.Tensor]:
    """Reference computation from a list of variants held in memory (for tests and small data).

    Parameters
    ----------
    probabilities : sequence of torch.Tensor, each shape (C, *S)
        One probability volume per variant.
    weights : sequence of float, optional
        One weight per variant (default: equal).
    kinds : sequence of str
        Names from :data:`KINDS`.
    regions : bool
        Region (sigmoid) rather than label (softmax) probabilities.

    Returns
    -------
    dict of str to torch.Tensor
        kind -> map of shape S (two-pass formulas, float64 internally).
    """
    p = torch.stack([q.double() for q in probabilities])  # (V, C, *S)
    w = torch.ones(len(probabilities), dtype=torch.float64) if weights is None else \
        torch.as_tensor(weights, dtype=torch.float64)
    w = w.reshape(-1, *([1] * (p.ndim - 1)))
    mean = (w * p).sum(0) / w.sum()
    out = {}
    for k in check_kinds(kinds):
        if k == "variance":
            out[k] = ((w * (p - mean) ** 2).sum(0) / w.sum()).mean(0).float()
        elif k == "entropy":
            out[k] = entropy(mean, regions).float()
        else:
            h = torch.stack([entropy(q, regions).double() for q in p])
            hw = (w[:, 0] * h).sum(0) / w.sum()
            out[k] = (entropy(mean, regions).double() - hw).clamp_min(0).float()
    return out
