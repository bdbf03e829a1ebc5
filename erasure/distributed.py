"""Several processes (``torchrun --nproc_per_node N``, ``accelerate launch``): who am I, how many are we.

:func:`process_state` is accelerate's ``PartialState`` when launched on several processes (or when the caller
set one up), else a one-process stand-in, so that a plain call leaves accelerate's global state alone
(creating it would fix its device for any ``Accelerator`` the program makes later). Generation, evaluation and
the trainers (ESD's pool and gradients) shard with it.

The state is created with ``cpu=True`` for a CPU model: without it accelerate ignores a torchrun launch on a
machine with no GPU and every process would think it is alone. ``ACCELERATE_USE_CPU=1`` forces the same.
"""

from __future__ import annotations

import contextlib
import os


def process_state(device):
    """accelerate's ``PartialState`` under a multi-process launch, else :class:`OneProcess`."""
    from accelerate import PartialState
    from accelerate.utils import get_int_from_env

    if PartialState._shared_state != {}:  # already set up by the caller (Accelerator, PartialState(...))
        return PartialState()
    world = get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)
    if world <= 1:
        return OneProcess(device)
    flag = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in {"1", "true", "yes", "on"}
    return PartialState(cpu=flag or getattr(device, "type", str(device)) == "cpu")


class OneProcess:
    """The part of ``PartialState``'s interface used here, for a single process."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def __init__(self, device) -> None:
        self.device = device

    def wait_for_everyone(self) -> None:
        pass

    @contextlib.contextmanager
    def split_between_processes(self, inputs):
        yield inputs


def all_reduce_sum(tensors) -> None:
    """Sum each tensor over the processes, in place (nothing with one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
