"""The one clock of every bench: wall seconds after the device's queued work, and peak CUDA memory."""

from __future__ import annotations

import time
from typing import Any

import torch

from ..repro import synchronize


class Clock:
    """Wall-clock timer that waits for the device first (CUDA kernels run asynchronously);
    ``device`` None: CUDA wherever it is available."""

    def __init__(self, device: str | None = None):
        self.device = device

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()


def cost_since(t0: float) -> dict:
    """Wall seconds since ``t0`` and the peak CUDA memory since the last reset (GiB); resets it."""
    cost = {"wall_s": round(Clock().now() - t0, 2)}
    if torch.cuda.is_available():
        cost["peak_gpu_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
        cost["peak_gpu_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 3)
        torch.cuda.reset_peak_memory_stats()
    return cost


def measured(fn, *args, **kwargs) -> tuple[Any, dict]:
    """``fn(...)`` and what it cost (:func:`cost_since`, the peak counted from the call)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = Clock().now()
    out = fn(*args, **kwargs)
    return out, cost_since(t0)
