"""Run-folder layout, atomic writes and self-describing checkpoints.

Every artifact is written to a temporary sibling first and renamed into place, so a crash or a
bad input never leaves a half-written file or folder behind. A checkpoint carries its config as a
plain dict, the state dict, metrics, the fndkit version and the git SHA, so ``load_checkpoint``
needs nothing else (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import contextlib
import errno
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


# A write that fails for want of room or rights: what happened and what to do about it.
_NO_ROOM = "free space there (df -h {where}) and rerun the same command: finished stages are reused and training resumes from its last.pt"
_NO_RIGHTS = "make {where} writable, or pass another run_dir"
WRITE_ERRORS = {errno.ENOSPC: ("the disk is full", _NO_ROOM), errno.EDQUOT: ("the disk quota is used up", _NO_ROOM),
                errno.EROFS: ("the file system is read-only", _NO_RIGHTS),
                errno.EACCES: ("permission denied", _NO_RIGHTS), errno.EPERM: ("permission denied", _NO_RIGHTS)}
TMP_MARK = ".tmp-"  # in the name of atomic_path's temporaries: `.<name>.tmp-XXXX`


def explain_write_error(exc: OSError, path: Path) -> OSError:
    """``exc`` (raised writing ``path``) as the same kind of error whose message names the file,
    the cause and the fix; ``exc`` itself when it is not about room or rights."""
    if exc.errno not in WRITE_ERRORS or getattr(exc, "fndkit_explained", False):
        return exc
    why, fix = WRITE_ERRORS[exc.errno]
    where = next((p for p in Path(path).parents if p.exists()), Path(path).parent)
    explained = type(exc)(exc.errno, f"cannot write {path}: {why} ({exc.strerror}); "
                                     f"{fix.format(where=where)}. {Path(path).name} is left as it was")
    explained.fndkit_explained = True
    return explained


def _fsync_tree(target: Path) -> None:
    """Flush ``target`` (a file, or every file of a folder) to disk before it is renamed into
    place, so that not even a power cut leaves a renamed but empty file."""
    files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Works for files and folders. On an exception the temporary is removed and ``path`` is left
    exactly as it was; a full disk or a read-only folder is reported naming ``path`` and the fix
    (:func:`explain_write_error`). A process killed mid-write leaves only a ``.<name>.tmp-*``
    sibling, which nothing reads (a stage removes it when it starts again).

    keep: when ``path`` is a folder being replaced, names of its files that the new folder keeps
    (hard links to the same files, made at the swap): the stage claim (``.claim.json``), so the
    folder stays claimed by the process that writes it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent))
    except OSError as exc:
        raise explain_write_error(exc, path) from exc
    target = tmp / path.name
    try:
        yield target
        if target.exists():
            _fsync_tree(target)
        if path.is_dir() and not path.is_symlink():
            for name in keep:
                if (path / name).exists() and target.is_dir() and not (target / name).exists():
                    os.link(path / name, target / name)
            backup = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, backup)
            os.replace(target, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(target, path)
    except OSError as exc:
        explained = explain_write_error(exc, path)
        if explained is exc:
            raise
        raise explained from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as pretty JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(obj) + "\n")
    return Path(path)


class CorruptFile(ValueError):
    """A run-folder file exists but cannot be read (not valid JSON, not UTF-8, a truncated or
    foreign checkpoint); the message names the file and the fix."""


DEFAULT_FIX = "delete it and rerun the stage that writes it (overwrite=True)"


def read_json(path: str | os.PathLike, fix: str | None = None) -> Any:
    """The JSON document at ``path``: the one reader of the run folder's JSON files.

    A missing file is a ``FileNotFoundError``; a file that is not UTF-8 or not valid JSON is a
    :class:`CorruptFile` naming it, where it broke and ``fix`` (what to do about it)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start}: not UTF-8"
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    raise CorruptFile(f"{path} is not valid JSON ({where}); {fix or DEFAULT_FIX}")


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
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(payload, f)  # through a Python file, so that a failed write is an OSError
        except RuntimeError as exc:  # ... which torch's zip writer hides behind "enforce fail at ..."
            failed_write = _os_error_in(exc)
            if failed_write is None:
                raise
            raise failed_write from None
    return Path(path)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError among ``exc``'s causes and contexts, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str | None = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); a truncated,
    corrupt or foreign file is a :class:`CorruptFile` naming it. ``mmap``: map the tensors
    instead of reading them (a cheap check that the file loads)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}; run the notebook that trains it first "
            f"(e.g. notebooks/02_teacher.ipynb for run_dir/teacher)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated, corrupt or a foreign pickle: torch says it obscurely
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CorruptFile(f"cannot read checkpoint {path}: it is truncated, corrupt or not an fndkit "
                         f"checkpoint ({type(exc).__name__}: {reason}); delete it and rerun the stage "
                         f"that writes it (overwrite=True)") from None
    if not isinstance(payload, dict) or payload.get("format") != "fndkit-checkpoint-1":
        raise CorruptFile(f"{path} is not an fndkit checkpoint (missing format tag); delete it and rerun "
                         f"the stage that writes it (overwrite=True)")
    return payload
