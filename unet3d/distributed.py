"""Data parallelism under torchrun, for training and prediction: set-up, the main-process gate, reductions.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them everything here
is a no-op for a single process, so the loop reads the same either way.
"""

import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# How long the processes of a run that ended normally wait for each other before leaving (see ``process_group``).
LEAVING_TIMEOUT = timedelta(days=1)


@dataclass(frozen=True)
class Context:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self):
        """Only the main process writes logs, checkpoints, plots and predictions."""
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def from_environment():
    """The Context torchrun describes in the environment (a single process without it)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Context()
    return Context(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))


@contextmanager
def process_group(context, device):
    """Join the process group of ``context`` (NCCL on CUDA, Gloo on CPU) for the block and always leave it,
    on Gloo after every process has ended the block where it ends normally.

    Yields the device this process uses: on CUDA each process takes the GPU of its local rank.
    """
    if not context.enabled:
        yield device
        return
    if not context.is_main:
        logging.getLogger("unet3d").setLevel(logging.WARNING)
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    try:
        yield device
        if backend == "gloo":
            # Leave together: a Gloo process that tears its group down while the other still runs can abort
            # ("terminate called without an active exception"). The main process may predict for long after
            # the others are done, hence no time limit but the day's.
            dist.monitored_barrier(timeout=LEAVING_TIMEOUT)
    finally:
        dist.destroy_process_group()  # after an exception at once: a barrier would wait for processes gone


def data_parallel(model, context, device):
    """``model`` wrapped in DistributedDataParallel when several processes train it, else itself."""
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def barrier(context):
    """Wait for every process (no-op for one)."""
    if context.enabled:
        dist.barrier()


def sum_across(context, *values):
    """Sum floats over all processes; returns a list of floats."""
    if not context.enabled:
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def launch(n_processes, argv, module):
    """Run ``python -m module argv`` (the command's own module) under torchrun with ``n_processes`` processes on
    this node; returns its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_processes}",
               "-m", module, *argv]
    return subprocess.run(command).returncode


def strip_flag(argv, flag):
    """``argv`` without ``flag`` and its value (``--ngpus 2`` or ``--ngpus=2``)."""
    result, skip = [], False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = index + 1 < len(argv)
            continue
        if arg.startswith(flag + "="):
            continue
        result.append(arg)
    return result

