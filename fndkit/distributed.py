"""Several processes, one training run: ``torchrun``, ``torch.distributed`` and DDP.

    torchrun --nproc_per_node=2 -m fndkit train --run-dir R --stage teacher

torchrun starts the processes and gives each ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` joins them into one process group
(NCCL when training on GPUs, gloo on CPU; process ``LOCAL_RANK`` takes GPU ``LOCAL_RANK``). With one
process (plain ``python``, a notebook, or torchrun with one process) no group exists and every
helper here is the identity, so the single-process code path is exactly what it was.

What the trainer keeps (see :func:`fndkit.train.fit`):

- ``batch_size`` is the **global** batch: each of the W processes takes ``batch_size / W`` of each
  step's positive pairs (``batch_size`` must be a multiple of W), and the learning rate is scaled
  with the global batch as in one process (``TrainConfig.scaled_lr``). The processes split the very
  batches one process would train on (:class:`fndkit.data.datasets.GlobalBatchSampler`, a seeded
  ``DistributedSampler`` with ``set_epoch``), the step's negatives are drawn for the global batch
  from the same (seed, epoch, step) generator on every process (each keeps those its pairs use),
  and so are the contrastive views; DDP averages the per-process gradients of per-process mean
  losses, which is the gradient of the global batch's mean loss. So W processes follow the
  single-process run, up to the order of floating-point sums.
- Each process encodes its own positives and every negative its pairs use: with shared negatives
  (N = the global batch by default, as in one process) that is all N on every process, so a
  process encodes B / W + N outfits per step; ``negatives="per_pair"`` splits all of it.
- The FND teacher's item-feature cache (:func:`fndkit.objectives.prepare_teacher`) is built once
  per process, over every item of the training positives: it is built once per stage, on every
  GPU at the same time, so it costs what it costs in one process.
- The contrastive term (eq. 17) is over the **global** batch: each process's projections are
  gathered with :func:`gather_with_grad` (every process computes the same NT-Xent over all 2B views,
  and the gradient reaching each process's own rows is summed over processes).
- Validation and test scoring (:func:`fndkit.evaluate.evaluate`) are split: each process encodes
  its share of the unique items (the features are gathered, so every process holds the whole
  cache) and scores the candidates of its users (user id mod W); the scores are gathered on every
  process, which all compute the same metrics, so LR schedule and early stopping decide alike.
- Only rank 0 writes the run folder (config, checkpoints, ``last.pt``, history, metrics); the
  others wait for it at a barrier after every epoch. Stage decisions (reuse, refuse, resume) are
  taken by rank 0 and broadcast (:func:`run_on_main`); a resumed run restores every process from
  ``last.pt``. Every process reads the run folder (data, ``last.pt``, the best checkpoint), so on
  several machines it must lie on a file system they all see.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .repro import resolve_device

# The environment torchrun gives every process it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 1800  # a collective that waits longer means a process died or hangs


class DistributedError(RuntimeError):
    """A process group cannot be formed, or a step taken by rank 0 failed; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# where this process stands


def is_active() -> bool:
    """True inside a process group of two or more processes."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Rank 0, the one process that writes files (a single process is rank 0)."""
    return rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 outside torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={value!r} is not an integer; launch with torchrun, which "
                               f"sets it") from None


def init_from_env(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Join the process group torchrun describes and return the device this process trains on.

    One process (``WORLD_SIZE`` unset or 1): nothing is initialised and ``device`` is returned as
    it is (the stage checks it). Several: NCCL when ``device`` resolves to CUDA (process
    ``LOCAL_RANK`` on GPU ``LOCAL_RANK``, made the current device, so ``"cuda"`` means it), gloo on CPU.
    """
    world = env_world_size()
    if world <= 1:
        return device
    if not isinstance(device, str):
        raise DistributedError(f"device={device!r} must be 'auto', 'cuda' or 'cpu'")
    resolved = resolve_device(device)
    if is_active():
        return resolved
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} is not set; start the "
                               f"processes with torchrun (torchrun --nproc_per_node={world} -m fndkit train ...)")
    local = int(os.environ["LOCAL_RANK"])
    if resolved.startswith("cuda"):
        if resolved != "cuda":
            raise DistributedError(f"device={device!r} puts every process on one GPU; use device='auto' "
                                   f"(or 'cuda'): process LOCAL_RANK trains on GPU LOCAL_RANK")
        if local >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} "
                                   f"GPU(s); start at most that many processes per node "
                                   f"(torchrun --nproc_per_node={torch.cuda.device_count()})")
        torch.cuda.set_device(local)
        backend = "nccl"
    elif resolved == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(f"device={device!r}: several processes train on CUDA GPUs (NCCL) or on "
                               f"CPU (gloo); use device='auto', 'cuda' or 'cpu'")
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return resolved


def shutdown() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (a no-op for one process)."""
    if not is_active():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _comm_device() -> torch.device:
    """Where the backend takes tensors: the current GPU for NCCL, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# rank 0 decides, everyone follows


def run_on_main(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` on rank 0 only, its result broadcast to every process.

    For steps that write or decide (a stage's reuse / refuse / resume). An exception on rank 0 is
    raised there as it is, and on every other process as a :class:`DistributedError` naming it,
    so that no process waits forever for the others.
    """
    if not is_active():
        return fn(*args, **kwargs)
    payload: list[Any] = [None]
    error = None
    if is_main():
        try:
            payload[0] = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # every process must learn that rank 0 stopped
            error = exc
            payload[0] = ("error", f"{type(exc).__name__}: {exc}")
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    status, value = payload[0]
    if status == "error":
        raise DistributedError(f"rank 0 stopped with {value}")
    return value


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` for one process)."""
    if not is_active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_over_processes(sums: dict[str, float]) -> dict[str, float]:
    """Key by key, the sum of every process's ``sums`` (an epoch's summed step statistics)."""
    if not is_active():
        return sums
    total: dict[str, float] = {}
    for part in all_gather_object(sums):
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


# ---------------------------------------------------------------------------------------------
# tensors across processes


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows of ``x`` ([n_r, ...], n_r may differ), concatenated in rank order,
    on ``x``'s device. Not differentiable (see :func:`gather_with_grad`)."""
    if not is_active():
        return x
    shapes = all_gather_object(tuple(x.shape))
    trailing = next((s[1:] for s in shapes if s[0] > 0), tuple(x.shape[1:]))
    if any(s[0] > 0 and s[1:] != trailing for s in shapes):
        raise DistributedError(f"processes hold rows of different shapes {shapes}; they must agree after "
                               f"the first dimension")
    longest = max(s[0] for s in shapes)
    padded = torch.zeros((longest, *trailing), dtype=x.dtype, device=_comm_device())
    padded[:x.shape[0]] = x.to(padded.device)
    parts = [torch.empty_like(padded) for _ in shapes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s[0]] for p, s in zip(parts, shapes)]).to(x.device)


def gather_interleaved(x: torch.Tensor) -> torch.Tensor:
    """The global batch from every process's equal share [b, ...]: row ``j * W + r`` is process
    r's row j — the order of the batch one process would load (each process holds the rows
    ``r::W`` of it, :class:`fndkit.data.datasets.GlobalBatchSampler`). [b * W, ...]"""
    if not is_active():
        return x
    w = world_size()
    flat = all_gather_rows(x)
    if flat.shape[0] != w * x.shape[0]:
        raise DistributedError(f"processes hold batches of different sizes ({flat.shape[0]} rows in all, "
                               f"{x.shape[0]} here); every process must load batch_size / world_size pairs")
    return flat.reshape(w, x.shape[0], *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])


def own_rows(batch_rows: int) -> np.ndarray:
    """This process's rows of a global batch of ``batch_rows`` (see :func:`gather_interleaved`)."""
    return np.arange(rank(), batch_rows, world_size())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums, over processes, the gradient reaching each process's rows."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows, ctx.rank = x.shape[0], rank()
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every process's loss depends on every process's rows
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows of ``x`` [b, ...] (equal b), concatenated in rank order, keeping the
    gradient: when every process computes the same loss of the gathered rows and DDP averages
    the gradients, each parameter gets the gradient of that one loss. ``x`` for one process."""
    if not is_active():
        return x
    return _GatherWithGrad.apply(x)


@dataclass(frozen=True)
class BatchShard:
    """A process's part of a global batch: the global batch's positive outfits [B, S] and the rows
    of it this process trains on [b] (what draws made for the global batch are cut down to)."""

    positives: np.ndarray
    rows: np.ndarray


# ---------------------------------------------------------------------------------------------
# the training step


class _Step(nn.Module):
    """``objective(model, batch)`` as a module's forward, so that DDP sees the step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, objective, batch):
        return objective(self.model, batch)


def training_step(model: nn.Module) -> Callable[[Any, Any], Any]:
    """A callable ``step(objective, batch) -> (loss, stats)``: ``objective(model, batch)`` for one
    process; under torchrun the same call inside a DistributedDataParallel forward, so that
    ``loss.backward()`` averages the gradients over processes (DDP also starts every process
    from rank 0's weights). ``model`` itself stays unwrapped: checkpoints keep its own keys."""
    if not is_active():
        return lambda objective, batch: objective(model, batch)
    # static_graph: DDP learns in the first step which parameters the objective leaves out (a
    # baseline may never use some), without searching the graph for them every step
    return nn.parallel.DistributedDataParallel(_Step(model), static_graph=True)
