"""Argument checks and masking shared by the loss terms (private).

Every term follows the contract of :class:`~nnunet_ext.losses.cldice.SoftClDiceLoss`: probabilities
``(B, C, *S)`` in [0, 1], a float one-hot target of the same shape, a validity mask ``(B, 1, *S)`` (bool,
False on ignored voxels) or ``None``; sums are accumulated in at least float32.
"""
from __future__ import annotations

from numbers import Integral
from typing import Sequence

import torch

REDUCTIONS = ("mean", "none")
MODES = ("softmax", "sigmoid")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return reduction


def check_mode(mode) -> str:
    mode = getattr(mode, "value", mode)  # accepts SegmentationMode members
    if mode not in MODES:
        raise ValueError(f"mode must be 'softmax' or 'sigmoid', got {mode!r}")
    return mode


def check_inputs(probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None,
                 auxiliary: torch.Tensor | None = None, auxiliary_name: str = "auxiliary target",
                 auxiliary_channels: int | None = None) -> None:
    """Raise ``ValueError`` on shapes that do not follow the loss contract."""
    if probabilities.ndim not in (4, 5):
        raise ValueError(f"probabilities must be (B, C, H, W) or (B, C, D, H, W), got {tuple(probabilities.shape)}")
    if probabilities.shape != target.shape:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} and target {tuple(target.shape)} differ")
    if valid is not None:
        expected = (probabilities.shape[0], 1) + tuple(probabilities.shape[2:])
        if tuple(valid.shape) != expected:
            raise ValueError(f"valid must have shape {expected}, got {tuple(valid.shape)}")
        if valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool tensor, got {valid.dtype}")
    if auxiliary is not None:
        channels = probabilities.shape[1] if auxiliary_channels is None else auxiliary_channels
        expected = (probabilities.shape[0], channels) + tuple(probabilities.shape[2:])
        if tuple(auxiliary.shape) != expected:
            raise ValueError(f"{auxiliary_name} must have shape {expected}, got {tuple(auxiliary.shape)}")


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs, the input's dtype for float32/float64."""
    return torch.promote_types(x.dtype, torch.float32)


def detach_ignored(probabilities: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The prediction with its ignored voxels detached: no gradient ever reaches them."""
    return probabilities if valid is None else torch.where(valid, probabilities, probabilities.detach())


def valid_weight(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``(B, 1, *S)`` float mask (all ones without an ignore mask) in ``like``'s dtype and device."""
    if valid is None:
        return torch.ones((like.shape[0], 1) + tuple(like.shape[2:]), dtype=like.dtype, device=like.device)
    return valid.to(like.dtype)


def as_weight_vector(weights, n: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """``weights`` (sequence of n non-negative floats) as a tensor, with a clear error on a wrong length."""
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device).flatten()
    if w.numel() != n:
        raise ValueError(f"{name} has {w.numel()} entries, expected {n} for this input")
    return w


def check_weights(weights: Sequence[float] | None, name: str) -> tuple[float, ...] | None:
    if weights is None:
        return None
    values = tuple(float(w) for w in weights)
    if not values or any(not (w >= 0) for w in values) or not any(w > 0 for w in values):
        raise ValueError(f"{name} must be non-negative, finite and not all zero, got {weights!r}")
    if any(w == float("inf") for w in values):
        raise ValueError(f"{name} must be finite, got {weights!r}")
    return values


def broadcast_channels(vector: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(C,)`` → ``(1, C, 1, ..., 1)`` for an ``ndim``-dimensional tensor."""
    return vector.view(1, -1, *([1] * (ndim - 2)))


def check_logit_inputs(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, mode: str) -> None:
    """Raise ``ValueError`` unless ``logits`` are the raw network output for ``target``'s foreground view:
    ``(B, C + 1, *S)`` (softmax: background first) or ``(B, C, *S)`` (sigmoid) for a ``(B, C, *S)`` target."""
    if logits.ndim not in (4, 5):
        raise ValueError(f"logits must be (B, K, H, W) or (B, K, D, H, W), got {tuple(logits.shape)}")
    extra = 1 if mode == "softmax" else 0
    expected = (target.shape[0], target.shape[1] + extra) + tuple(target.shape[2:])
    if tuple(logits.shape) != expected or target.ndim != logits.ndim:
        what = "C + 1 channels (background first)" if mode == "softmax" else "one channel per region"
        raise ValueError(f"{mode} logits must have shape {expected} ({what}) for a target of shape "
                         f"{tuple(target.shape)}, got {tuple(logits.shape)}")
    check_inputs(logits[:, extra:], target, valid)


def outcome_log_probability(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, mode: str):
    """Log-probability the prediction gives to the true outcome of every voxel, from the logits.

    Checks the shapes (:func:`check_logit_inputs`), detaches the logits on ignored voxels and computes
    with ``log_softmax`` / ``logsigmoid`` in float32 (float64 for float64 logits), so it is exact and has a non-zero gradient however confidently wrong the network is (a probability clamped to
    ``[eps, 1 - eps]`` has none beyond the clamp, and a float16 sigmoid saturates at logits ≈ 8).

    softmax: ``logits (B, C + 1, *S)``, foreground ``target (B, C, *S)``; returns ``log p_true (B, 1, *S)`` and
    the one-hot target over ``C + 1`` classes, background first (``1 - Σ_c t_c``). sigmoid: ``logits`` and
    ``target`` ``(B, C, *S)``; returns ``log p_true (B, C, *S)`` (``log σ(x)`` where the target is 1,
    ``log σ(-x)`` where it is 0) and the target itself.
    """
    check_logit_inputs(logits, target, valid, mode)
    acc = accumulation_dtype(logits)
    logits, target = detach_ignored(logits, valid).to(acc), target.to(acc)
    if mode == "softmax":
        target_background = (1 - target.sum(1, keepdim=True)).clamp(0, 1)
        full_target = torch.cat([target_background, target], 1)
        return (torch.log_softmax(logits, 1) * full_target).sum(1, keepdim=True), full_target
    positive, negative = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
    return target * positive + (1 - target) * negative, target


def check_iterations(iterations) -> int | tuple[int, ...]:
    """Soft-skeleton iteration count(s): a non-negative int, or one per deep-supervision level (highest
    resolution first). Booleans and non-integral numbers are refused (``True`` is not 1 iteration)."""
    values = iterations if isinstance(iterations, (list, tuple)) else [iterations]
    if not values or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 0 for v in values):
        raise ValueError(f"iterations must be a non-negative int or a non-empty sequence of them "
                         f"(one per deep-supervision level), got {iterations!r}")
    return tuple(int(v) for v in values) if isinstance(iterations, (list, tuple)) else int(iterations)


def iterations_at(iterations: int | tuple[int, ...], level: int) -> int:
    """The iteration count of deep-supervision ``level`` (0 = full resolution); levels beyond the
    sequence use its last entry."""
    if isinstance(iterations, tuple):
        return iterations[min(level, len(iterations) - 1)]
    return iterations
