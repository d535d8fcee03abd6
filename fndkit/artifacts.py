"""Run-folder layout, atomic writes and self-describing checkpoints.

Every artifact is written to a temporary sibling first and renamed into place, so a crash or a
bad input never leaves a half-written file or folder behind. A checkpoint carries its config as a
plain dict, the state dict, metrics, the fndkit version and the git SHA, so ``load_checkpoint``
needs nothing else (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__
from .repro import git_sha


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=True)


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars plain numbers), so a
    config in memory compares equal to the one saved beside a checkpoint."""
    return json.loads(to_json(obj))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Works for files and folders. On an exception the temporary is removed and ``path`` is left
    exactly as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            backup = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, backup)
            os.replace(target, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as pretty JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(obj) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return json.loads(path.read_text())


def save_checkpoint(path: str | os.PathLike, *, state_dict: dict, config: dict,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Save a self-describing checkpoint (config as a plain dict, never a pickled object)."""
    import torch  # heavy: plain JSON users of this module never pay for it

    payload = {
        "format": "fndkit-checkpoint-1",
        "fndkit_version": __version__,
        "git_sha": git_sha(),
        "config": json.loads(to_json(config)),
        "metrics": json.loads(to_json(metrics or {})),
        "extra": extra or {},
        "state_dict": state_dict,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | None = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}; run the notebook that trains it first "
            f"(e.g. notebooks/02_teacher.ipynb for run_dir/teacher)")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "fndkit-checkpoint-1":
        raise ValueError(f"{path} is not an fndkit checkpoint (missing format tag)")
    return payload
