"""DDP helpers: the same training module runs alone or under ``torchrun`` (design §6).

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them and joins the process group — NCCL when each rank has a
CUDA device, gloo on CPU. Without them it returns a single-process :class:`DistInfo` and
nothing else changes. Several machines: run on every machine

    torchrun --nnodes=NODES --node_rank=I --nproc_per_node=GPUS \\
             --master_addr=HOST0 --master_port=29500 -m jlml_lib.train ...

(``I`` = 0..NODES-1; ``HOST0`` reachable from all), with the output folder on storage all
machines see or at least rank 0's machine: only global rank 0 writes.
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from jlml_lib.errors import ConfigError

__all__ = ["DistInfo", "init_distributed", "distributed_group", "cpu_threads", "cleanup", "barrier", "all_reduce_sum",
           "free_port"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None          # None: not distributed

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (or stay single-process).

    ``device_kind`` is "cuda" or "cpu": NCCL for CUDA (each rank uses GPU ``LOCAL_RANK``), gloo
    for CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if backend == "nccl":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) "
                              "visible: use --nproc_per_node <= the number of GPUs.")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        kwargs = {"device_id": torch.device("cuda", local)} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local, backend=backend)


@contextlib.contextmanager
def distributed_group(device_kind: str) -> Iterator[DistInfo]:
    """:func:`init_distributed` for the duration of a ``with`` block, then :func:`cleanup`."""
    info = init_distributed(device_kind)
    try:
        yield info
    finally:
        cleanup(info)


def cpu_threads(requested: int, info: DistInfo) -> int:
    """Compute threads for one CPU process: ``requested``, or (0) the cores shared by the processes
    this launcher started on the machine (``LOCAL_WORLD_SIZE`` under torchrun). Each process
    otherwise starts one thread per core, and N processes' spinning threads fight over the same
    cores (benchmarks/NOTES-threads.md)."""
    if requested > 0:
        return requested
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.distributed else 1))
    return max(1, (os.cpu_count() or 1) // max(1, local))


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks (in place, returned); a no-op for one process."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for tests and single-machine launches)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
