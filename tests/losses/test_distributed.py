"""N processes with gather_distributed=True equal one process on the full batch: loss and DDP gradients.

Two CPU processes on the gloo backend, rendezvous through a file (no network beyond loopback).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from matrixssl.losses import (
    BarlowTwinsLoss,
    BYOLLoss,
    MatrixSSLLoss,
    MECLoss,
    NTXentLoss,
    SimSiamLoss,
    TCRLoss,
    VICRegLoss,
)

WORLD = 2
BATCH, IN_DIM, OUT_DIM = 16, 6, 10


def make_losses(gather: bool) -> dict[str, nn.Module]:
    return {
        "matrix_ssl": MatrixSSLLoss(gather_distributed=gather),
        "matrix_ssl_paper": MatrixSSLLoss.paper(gather_distributed=gather),
        "mec": MECLoss(eps_squared=8.0, gather_distributed=gather),
        "tcr": TCRLoss(gather_distributed=gather),
        "simclr": NTXentLoss(gather_distributed=gather),
        "byol": BYOLLoss(gather_distributed=gather),
        "simsiam": SimSiamLoss(gather_distributed=gather),
        "barlow_twins": BarlowTwinsLoss(gather_distributed=gather),
        "vicreg": VICRegLoss(gather_distributed=gather),
    }


ONE_VIEW = {"tcr"}  # loss(z), summed over the views
TWO_VIEWS = {"simclr", "barlow_twins", "vicreg"}  # loss(z_1, z_2): no separate targets


def setup() -> tuple[nn.Module, nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    online, target = nn.Linear(IN_DIM, OUT_DIM).double(), nn.Linear(IN_DIM, OUT_DIM).double()
    data = [torch.randn(BATCH, IN_DIM, dtype=torch.float64) for _ in range(2)]
    return online, target, data


def evaluate(name: str, loss_fn: nn.Module, model: nn.Module, target: nn.Module, x1, x2) -> torch.Tensor:
    o1, o2 = model(x1), model(x2)
    with torch.no_grad():
        t1, t2 = target(x1), target(x2)
    if name in ONE_VIEW:
        return loss_fn(o1) + loss_fn(o2)
    return loss_fn(o1, o2) if name in TWO_VIEWS else loss_fn(o1, o2, t1, t2)


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    online, target, (x1, x2) = setup()
    part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    results = {}
    for name, loss_fn in make_losses(gather=True).items():
        model = DistributedDataParallel(online)
        model.zero_grad()
        loss = evaluate(name, loss_fn, model, target, x1[part], x2[part])
        loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in online.parameters()])
        del model  # its reducer holds the process group: it must go before the group is destroyed
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


def test_two_processes_equal_one_process_on_the_full_batch(tmp_path: Path) -> None:
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    online, target, (x1, x2) = setup()
    for name, loss_fn in make_losses(gather=False).items():
        online.zero_grad()
        loss = evaluate(name, loss_fn, online, target, x1, x2)
        loss.backward()
        expected = [p.grad for p in online.parameters()]
        for rank in range(WORLD):
            got_loss, got_grads = torch.load(tmp_path / f"rank{rank}.pt")[name]
            assert got_loss.item() == pytest.approx(loss.item(), rel=1e-5), name
            for got, want in zip(got_grads, expected):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-10, msg=name)
