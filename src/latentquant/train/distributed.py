"""Processes and devices of a run: torchrun's ranks, the device of each, and bf16 autocast.

One process: ``latentquant train ...``. Several: ``torchrun --nproc_per_node=N
-m latentquant train ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`setup_distributed` reads them and starts the process group (gloo on
CPU, NCCL on GPU). Only rank 0 (``Dist.master``) writes anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel

from latentquant.quantize import USAGE_BUFFERS, LatentQuantize
from latentquant.validation import UserError


@dataclass
class Dist:
    """This process's place among the ranks, and its device."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device: str) -> Dist:
    """Read torchrun's RANK / LOCAL_RANK / WORLD_SIZE; start the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank if world > 1 else None)
    if world > 1 and not tdist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    return Dist(rank, local_rank, world, dev)


def close_distributed(dist: Dist) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place; return once the backend has let go of it.

    Gloo runs a collective on a worker thread, which drops the finished work,
    and with it its reference to ``tensor``, a moment after ``all_reduce``
    returns. Releasing a tensor that Python also holds takes the GIL; were the
    worker still waiting for it when the interpreter shuts down, Python ends
    the thread inside C++ code and the process aborts ("terminate called
    without an active exception"). Waiting here, with the GIL released, until
    ``tensor`` is ours alone means no worker holds a Python tensor at exit.
    """
    tdist.all_reduce(tensor)
    if tdist.get_backend() == "gloo":
        wait_released(tensor)
    return tensor


def wrap_ddp(net: torch.nn.Module, model: torch.nn.Module, dist: Dist, find_unused: bool = False) -> torch.nn.Module:
    """``net`` (``model``, compiled or not) in DistributedDataParallel. DDP copies rank 0's
    buffers to every rank before each forward, except the quantizers' usage counts
    (``LatentQuantize(track_usage=True)``): those are each rank's own, summed when read."""
    own = [
        f"{name}.{b}" if name else b
        for name, m in model.named_modules()
        if isinstance(m, LatentQuantize) and m.track_usage
        for b in USAGE_BUFFERS
    ]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, own)
    return DistributedDataParallel(
        net,
        device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
        find_unused_parameters=find_unused,
    )


def wait_released(*tensors: torch.Tensor, timeout: float = 60.0) -> None:
    """Sleep until no one but the caller holds ``tensors`` (see :func:`all_reduce_sum`)."""
    deadline = time.monotonic() + timeout
    while any(t._use_count() > 1 for t in tensors) and time.monotonic() < deadline:
        time.sleep(1e-4)


def resolve_device(device: str, local_rank: int | None = None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` -> ``cuda:<local_rank>`` under torchrun."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available; valid here: cpu")
        if device == "cuda" and local_rank is not None:
            device = f"cuda:{local_rank}"
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device 'mps' requested but MPS is not available; valid here: cpu")
    return torch.device(device)


def make_autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    """A context factory: bf16 autocast ('bf16', or 'auto' on a CUDA device that supports it), else nothing."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16":
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return nullcontext
