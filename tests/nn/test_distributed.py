"""MomentumNet (reversible) under DistributedDataParallel: gloo, two CPU processes."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from mode.nn import MomentumNet


def make_net():
    torch.manual_seed(0)
    blocks = [
        torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 6)) for _ in range(8)
    ]
    return MomentumNet(blocks, gamma=0.9, backprop="reversible").double()


def make_batch():
    return torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def loss_of(net, x):
    return net(x).square().mean()


def worker(rank, world, port, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = DistributedDataParallel(make_net())
        shard = make_batch().chunk(world)[rank]
        loss_of(model, shard).backward()
        results[rank] = [p.grad.clone() for p in model.parameters()]
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradients_equal_single_process_gradients():
    world = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(world, free_port(), results), nprocs=world, join=True)
        distributed = [results[r] for r in range(world)]
    net = make_net()
    loss_of(net, make_batch()).backward()
    single = [p.grad for p in net.parameters()]
    for rank_grads in distributed:
        for a, b in zip(rank_grads, single, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
