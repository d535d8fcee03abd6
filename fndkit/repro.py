"""Seeds and run metadata: versions, git SHA, device."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np

from . import __version__


def seed_everything(seed: int, deterministic: bool = False) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy Generator for the caller's own draws."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer (e.g. 0)")
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    try:
        import torch
    except ImportError:  # data-only use without torch
        pass
    else:
        torch.manual_seed(int(seed))
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            # TF32 convolutions make item features depend on batch composition (~4e-4 on an H200),
            # so cached and uncached scoring would differ by ~3e-3 after the set transformer
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    return np.random.default_rng(int(seed))


def git_sha() -> str | None:
    """The SHA of the checkout fndkit is imported from, or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def resolve_device(device: str = "auto") -> str:
    """'auto' picks CUDA when present, else CPU; anything else must be a valid torch device."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for CUDA but none is available; use 'cpu' or 'auto'")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ValueError(f"unknown device {device!r}; choose 'auto', 'cpu' or 'cuda[:N]'")
    return device


def synchronize(device: str | None = None) -> None:
    """Wait for the kernels queued on ``device`` (CUDA runs them asynchronously), so that a clock
    read afterwards counts them; ``None``: CUDA wherever it is available. Nothing to wait for on
    CPU. The device wait of :class:`fndkit.bench.clock.Clock`, every bench's timer."""
    import torch

    if torch.cuda.is_available() if device is None else str(device).startswith("cuda"):
        torch.cuda.synchronize()


def machine_label(device: str = "auto") -> str:
    """``cuda-<card>`` (spaces and slashes as dashes) or ``cpu-<n>c``: the one label under which
    results of different machines are kept apart (the paper's sweep, the lab)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return "cuda-" + torch.cuda.get_device_name(0).replace(" ", "-").replace("/", "-")
    return f"cpu-{os.cpu_count()}c"


def run_metadata(device: str | None = None) -> dict:
    """Versions, git SHA, host facts: stored beside every artifact."""
    meta = {
        "fndkit_version": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        meta["torch"] = str(torch.__version__)
        meta["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            meta["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    if device is not None:
        meta["device"] = device
    return meta
