"""Under DDP, the batch-pooled sums of every Dice-type term (clDice, Skeleton Recall, cbDice, weighted
soft Dice) are added across processes with gradients intact (gloo, CPU, two processes)."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunet_ext.losses import (CenterlineBoundaryDiceLoss, SkeletonRecallLoss, SoftClDiceLoss,
                               WeightedSoftDiceLoss)

TERMS = ("cldice", "skeleton_recall", "cbdice", "weighted_dice")


def _term(name: str):
    return {"cldice": lambda: SoftClDiceLoss(batch_dice=True),
            "skeleton_recall": lambda: SkeletonRecallLoss(batch_dice=True),
            "cbdice": lambda: CenterlineBoundaryDiceLoss(batch_dice=True),
            "weighted_dice": lambda: WeightedSoftDiceLoss((1.0, 3.0), batch_dice=True)}[name]()


def _batch():
    """probabilities, target, and the extra arguments of every term (auxiliary targets)."""
    rng = np.random.default_rng(0)
    probabilities = torch.from_numpy(rng.random((4, 2, 6, 10, 10)))
    target = torch.from_numpy((rng.random((4, 2, 6, 10, 10)) > 0.6).astype(np.float64))
    extra = {"cldice": (), "weighted_dice": (), "skeleton_recall": (None, target * torch.from_numpy(rng.random(target.shape) > 0.5)),
             "cbdice": (None, torch.from_numpy(rng.random((4, 4, 6, 10, 10))) * torch.cat([target, target], 1))}
    return probabilities, target, extra


def _loss(name, probabilities, target, extra, samples):
    args = tuple(a if a is None else a[samples] for a in extra[name])
    return _term(name)(probabilities, target[samples], *args)


def _worker(rank: int, world_size: int, port: int, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        probabilities, target, extra = _batch()
        share = slice(rank * 2, rank * 2 + 2)
        for name in TERMS:
            mine = probabilities[share].clone().requires_grad_()
            loss = _loss(name, mine, target, extra, share)
            loss.backward()
            results[(rank, name)] = (loss.item(), mine.grad.numpy().copy())
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_processes_agree_with_one_process_on_the_whole_batch():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)

    probabilities, target, extra = _batch()
    for name in TERMS:
        whole = probabilities.clone().requires_grad_()
        loss = _loss(name, whole, target, extra, slice(None))
        loss.backward()
        for rank in (0, 1):
            value, grad = results[(rank, name)]
            assert value == pytest.approx(loss.item(), rel=1e-12), name
            # every process computes the same global loss, and the backward of the gather sums what all of
            # them send back: world_size × the gradient for its own samples, which DDP's averaging of the
            # parameter gradients (÷ world_size) turns into exactly the single-process gradient — the same
            # convention as nnU-Net's AllGatherGrad for batch Dice
            assert np.allclose(grad, 2 * whole.grad[rank * 2: rank * 2 + 2].numpy(), atol=1e-12), name
