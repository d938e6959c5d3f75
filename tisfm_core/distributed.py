"""DistributedDataParallel set-up under torchrun (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os

import torch

from .devices import resolve_device
from .errors import TisfmError


def init_from_env(device="auto"):
    """Join the process group torchrun describes in the environment.

    Returns
    -------
    tuple (rank, world_size)
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise TisfmError("--distributed needs torchrun (RANK and WORLD_SIZE are not set); run e.g. "
                         "torchrun --nproc_per_node=2 -m tisfm_core train --distributed ...")
    dev = resolve_device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
    return rank, world
