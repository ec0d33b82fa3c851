"""Distributed data-parallel training of an accelerated model (2 CPU processes, gloo).

One optimizer step of ``DistributedDataParallel(accelerate(model))`` must give the
parameters and BN running statistics of the same DDP step of the unconverted
torchvision model: the fused units' gradients all-reduce like the plain modules',
and their BN updates (batch statistics of each rank's own batch) are the same.

Each pairing runs both models in the same memory format, on 4 images of 128x128 per
rank. Smaller problems make this network's float32 gradient ill-conditioned: at batch
2 and 64x64 (stage 4 is 2x2, its BNs normalise 8 values per channel) plain PyTorch
alone, NCHW vs channels_last, differs by up to ~0.5 in conv1's weight gradient, and
any change of summation order in one kernel (same accuracy against float64) moves it
by ~15 %. ``accelerate()`` runs in channels_last by default.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import shufflenet_kernels as sk

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD_SIZE = 2
BATCH, SIZE = 4, 128  # per rank
# name -> (accelerated, channels_last)
MODELS = {
    "reference-cl": (False, True),
    "accelerated-cl": (True, True),  # accelerate()'s default: channels_last on entry
    "reference-nchw": (False, False),
    "accelerated-nchw": (True, False),
}
PAIRS = [("accelerated-cl", "reference-cl"), ("accelerated-nchw", "reference-nchw")]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_step_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One SGD step of each model under DDP on this rank's own batch; saves the state_dicts."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        results: dict[str, dict[str, torch.Tensor]] = {}
        for name, (accelerated, channels_last) in MODELS.items():
            torch.manual_seed(0)  # the same initial weights on every rank and for every model
            model = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
            g = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
            x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
            target = torch.randint(0, 10, (BATCH,), generator=g)
            if accelerated:
                model = sk.accelerate(model, channels_last=channels_last)
            elif channels_last:
                model = model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            model.train()
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
            opt.zero_grad()
            loss = F.cross_entropy(ddp(x), target)
            loss.backward()
            opt.step()
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state["__loss__"] = loss.detach().reshape(1)
            results[name] = state
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_step_matches_unconverted_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    mp.spawn(_ddp_step_worker, args=(WORLD_SIZE, _free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    torch.manual_seed(0)
    initial = torchvision.models.shufflenet_v2_x0_5(num_classes=10).state_dict()
    for rank, res in enumerate(ranks):
        for fast_name, ref_name in PAIRS:
            ref, fast = res[ref_name], res[fast_name]
            assert list(fast) == list(ref)
            for key, value in ref.items():
                torch.testing.assert_close(
                    fast[key], value, rtol=1e-5, atol=1e-5,
                    msg=lambda m, key=key, rank=rank, pair=fast_name: f"rank {rank}, {pair}, {key}: {m}")
    for name in MODELS:
        mine, other = ranks[0][name], ranks[1][name]
        for key, value in mine.items():
            if key.endswith(("running_mean", "running_var", "__loss__")):  # each rank's own batch
                assert not torch.equal(value, other[key]), f"{name}, {key}"
            else:  # parameters: averaged gradients, the same step on every rank
                torch.testing.assert_close(value, other[key], rtol=0, atol=0,
                                           msg=lambda m, key=key, name=name: f"{name}, {key}: {m}")
        moved = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, mine[k])]
        assert "conv1.0.weight" in moved and "fc.weight" in moved and len(moved) > len(initial) // 2, name
