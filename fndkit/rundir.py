"""The run folder: every path in it, where a relative one points, and each stage's status.

No other module or notebook spells a run-folder path; they ask a :class:`RunFolder`::

    run = RunFolder("outputs/demo")          # relative: the project's outputs/demo
    ds = run.dataset()                        # what 00_data wrote (or a clear error)
    run.stage_dir("teacher"), run.checkpoint("teacher"), run.load_model("student_fnd")

**Where a relative path points.** Notebooks run with the kernel's working directory set to
``notebooks/`` (JupyterLab, ``cd notebooks && papermill …``) or to the repository root
(``papermill notebooks/…``). A relative ``run_dir`` means the same folder in every case: the path
relative to the working directory when it exists there, otherwise relative to the *project root*,
the checkout holding ``notebooks/`` and this package. ``FNDKIT_PROJECT_ROOT`` overrides the root
(tests point it at a temporary project). An installed package used outside a checkout has no
project root: a relative path stays relative to the working directory, and errors say so.

**Stages.** A stage folder (``teacher/``, ``student_fnd/`` …) is *finished* when its
``metrics.json`` exists and every file its reuse needs loads (``checkpoint.pt`` for a trained
model; :meth:`RunFolder.status`'s ``requires``); with ``metrics.json`` but one of those missing or
unreadable it is refused by name (overwrite=True trains it again). Asked again with the same
config it is reused; with another config it is refused (never silently overwritten; the message
names each differing key with both values); a folder with ``last.pt`` but no metrics is resumed
("resuming <stage> from epoch k of n"), any other is started ("starting <stage>"). The device is
no part of a config's identity: where a run happens is not what it is
(:data:`~fndkit.config.RUN_ONLY_KEYS`). Every JSON file of the folder is read through
:meth:`RunFolder.read_json`, so a corrupt one is a :class:`StageError` naming it and the fix. A
training stage never writes into the run's own inputs (:meth:`RunFolder.check_out_name`).

**One writer per stage folder.** :meth:`RunFolder.begin_stage` first *claims* the stage folder:
it creates ``<stage>/.claim.json`` (host, pid, the pid's start time, when, and a heartbeat a daemon
thread refreshes every ``CLAIM_HEARTBEAT_S`` = 10 s) and holds it until :meth:`RunFolder.end_stage`
(the stage finished, failed or was interrupted). Only then does it apply the rules above, so two
processes asking for one stage never both train it. Under torchrun rank 0 alone claims.

Stages that apply their own reuse rule (the data, the pre-training, the analyses) hold the same
claim with :meth:`RunFolder.claimed`.

*A second process waits* for the holder (one line naming its host, pid and start), polling every
``CLAIM_POLL_S``, then applies the same rules: a finished run with the same config is reused, one
with another config is refused by name, a partial one is resumed. We chose waiting as the default
because a parallel sweep that asks for one stage twice (two plans sharing the teacher) should get
one training and two results, not an error. ``claim_timeout`` bounds the wait: ``None`` (default)
waits as long as the holder trains, ``0`` refuses at once and a number of seconds refuses after that
long, both with :class:`StageBusy` naming the holder.

*A claim left by a killed process is taken over*: on the same host when its pid is gone (or a
zombie, or the pid now belongs to a process started at another time: ``/proc/<pid>/stat``'s start
time is compared where there is a ``/proc``), on another host when its heartbeat is older than the
lease ``CLAIM_LEASE_S`` = 60 s (the hosts' clocks must agree to well within that). The taker prints
one line, and the resume rules above follow (a partial stage resumes from its ``last.pt``). Looking
at and replacing a claim happens under an exclusive ``flock`` on ``<stage>/.claim.lock`` (a lock
the kernel drops when its process dies, so it is never stale; the file is removed after each use),
so two waiters never both take over. A claim file that cannot be read (not UTF-8, not JSON, cut
short) is abandoned: a holder writes its claim whole under that lock, so such a file holds no live
holder; it is taken over with the same one line. In a folder this process
may not write (a read-only run folder) there is no claim: a finished stage is reused as before
and the first write fails with the usual error.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import baselines  # noqa: F401  (a run folder may hold baseline checkpoints: register them)
from .artifacts import (TMP_MARK, CorruptFile, explain_write_error, jsonable, load_checkpoint, read_json,
                        write_json)
from .config import PAPER_DEFAULTS, TrainConfig, identity, within_budget
from .data.schema import DatasetError, OutfitDataset
from .models.registry import load_model

DATA = "data"
AUTOENCODER = "autoencoder"
TEACHER = "teacher"
COLD_START = "cold_start"
EXPLORER = "explorer"
FALSE_NEGATIVES = "false_negatives"
NOTEBOOKS = "notebooks"
DECODED_IMAGES = "decoded_images"   # 00_data's decoded image store (fndkit.stages.data)
PRETRAIN = "pretrain"               # the teacher's pre-trained weights (fndkit.stages.pretrain)
# Folders that hold something other than a trained recommender.
NOT_MODELS = frozenset({DATA, AUTOENCODER, COLD_START, EXPLORER, FALSE_NEGATIVES, NOTEBOOKS, DECODED_IMAGES,
                        PRETRAIN})
# The notebook that writes each stage folder (for "rerun X" in an error); a training stage by prefix.
WRITERS = {DATA: "00_data", AUTOENCODER: "01_autoencoder", TEACHER: "02_teacher", COLD_START: "05_cold_start",
           EXPLORER: "06_explorer", FALSE_NEGATIVES: "08_false_negatives", DECODED_IMAGES: "00_data"}
# What a finished stage needs besides its metrics.json and config.json to be reused (see status).
TRAINED_FILES = ("checkpoint.pt",)
# Keys of a stage's config.json that describe where it ran, not what it is: a run folder that was
# moved or reached through another relative path still matches its finished stages.
LOCATION_KEYS = ("run_dir",)
# One writer per stage folder (see the module docstring).
CLAIM_FILE = ".claim.json"
CLAIM_LOCK = ".claim.lock"
CLAIM_LEASE_S = 60.0      # a claim on another host whose heartbeat is older than this is abandoned
CLAIM_HEARTBEAT_S = 10.0  # how often the holder refreshes its heartbeat
CLAIM_POLL_S = 0.5        # how often a waiting process looks again
_HELD: set = set()        # (folder, thread) pairs holding a claim through RunFolder.claimed


class StageError(RuntimeError):
    """A run folder is missing a stage, or holds a different finished one; the message says what to do."""


class StageBusy(StageError):
    """Another live process holds the stage folder's claim and ``claim_timeout`` ran out."""


class StageStatus(str, enum.Enum):
    NEW = "new"
    FINISHED_SAME = "finished-same"      # reuse
    FINISHED_OTHER = "finished-other"    # refuse unless overwrite
    PARTIAL = "partial"                  # resume from last.pt
    EXTEND = "extend"                    # finished at a smaller epoch budget, not stopped early: continue it
    INCOMPLETE = "incomplete"            # metrics.json, but a file its reuse needs is missing or unreadable: refuse


def writer_of(stage: str) -> str:
    """The notebook that writes stage folder ``stage`` (for the fix in an error message)."""
    if stage in WRITERS:
        return f"notebooks/{WRITERS[stage]}.ipynb"
    if stage.startswith("student"):
        return "notebooks/03_student.ipynb"
    if stage.startswith("contrastive"):
        return "notebooks/04_contrastive.ipynb"
    return "the stage that wrote it"


def fix_for(stage: str) -> str:
    """What to do about a corrupt file of stage folder ``stage``."""
    return f"delete the {stage} folder, or rerun {writer_of(stage)} with overwrite=True"


def project_root() -> Path | None:
    """The checkout holding ``notebooks/`` and this package (or ``$FNDKIT_PROJECT_ROOT``); None
    when fndkit is installed outside a checkout."""
    env = os.environ.get("FNDKIT_PROJECT_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    root = Path(__file__).resolve().parent.parent
    return root if (root / "notebooks").is_dir() and (root / "fndkit").is_dir() else None


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path for a path parameter (``run_dir``, ``teacher_dir``, ``source`` …).

    Absolute paths and ``~`` are taken as they are; a relative path that exists relative to the
    working directory means that; otherwise it is relative to :func:`project_root` (or, outside a
    checkout, to the working directory).
    """
    if path is None or (isinstance(path, str) and not path.strip()):
        raise ValueError(f"a path parameter is empty ({path!r}); give a folder such as 'outputs/demo'")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"a path parameter is {path!r} ({type(path).__name__}); give a folder as a "
                         f"string, such as 'outputs/demo'")
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    here = Path.cwd() / p
    root = project_root()
    if here.exists() or root is None:
        return here.resolve()
    return (root / p).resolve()


def portable_path(path: str | os.PathLike) -> str:
    """``path`` as an executed notebook should carry it: a relative path as it was given; an
    absolute one inside the project root as the path relative to that root, so the notebook
    names the same folder in a moved or copied checkout (what a plan builder resolved goes back
    to what the user typed, e.g. ``outputs/demo``). Absolute it stays outside the project root,
    or where the relative form would mean another folder from ``notebooks/`` (the kernels'
    working directory, which :func:`resolve_path` looks at first)."""
    p = Path(path).expanduser()
    root = project_root()
    if not p.is_absolute():
        return str(path)
    if root is None:
        return str(p)
    try:
        rel = Path(os.path.normpath(p)).relative_to(root)
    except ValueError:
        return str(p)
    if not rel.parts or (root / NOTEBOOKS / rel).exists():
        return str(p)
    return rel.as_posix()


def check_run_dir(run_dir: Any) -> Path:
    """The run folder ``run_dir`` names, checked before any work: an existing folder (a read-only
    one too: its finished stages can be reused), or a path where one can be created (not under a
    file, in a folder this process may write). One :class:`StageError` line naming the path and
    the fix otherwise; creates nothing. What the command line calls on ``--run-dir``."""
    if not isinstance(run_dir, (str, os.PathLike)) or not str(run_dir).strip():
        raise StageError(f"run_dir={run_dir!r} must be a folder (a string such as 'outputs/demo')")
    path = resolve_path(run_dir)
    try:
        if path.is_dir():
            return path
        if path.exists():
            raise StageError(f"run_dir={str(run_dir)!r} points at {path}, which is a file, not a folder; "
                             f"pass a folder such as 'outputs/demo'")
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as exc:
        raise StageError(f"run_dir={str(run_dir)!r}: cannot look at {path} ({exc.strerror or exc}); pass "
                         f"another run_dir") from None
    if not existing.is_dir():
        raise StageError(f"run_dir={str(run_dir)!r} ({path}) lies under {existing}, which is a file; "
                         f"pass a folder such as 'outputs/demo'")
    try:  # the one sure test of "may create a folder here" (access() says yes to root on /proc)
        os.rmdir(tempfile.mkdtemp(prefix=".fndkit-check-", dir=existing))
    except OSError as exc:
        raise StageError(f"run_dir={str(run_dir)!r}: cannot create folders in {existing} "
                         f"({exc.strerror or exc}); make it writable, or pass another run_dir") from None
    return path


def _where(path: Path) -> str:
    root = project_root()
    if root is None:
        return (f"{path} (fndkit is installed outside a checkout, so relative paths are taken "
                f"from the working directory {Path.cwd()})")
    return str(path)


class RunFolder:
    """One run folder (``outputs/demo`` …): paths, dataset, stage status, models."""

    def __init__(self, run_dir: str | os.PathLike):
        if not isinstance(run_dir, (str, os.PathLike)):
            raise StageError(f"run_dir={run_dir!r} must be a folder (a string such as 'outputs/demo')")
        self.root = resolve_path(run_dir)
        if self.root.exists() and not self.root.is_dir():
            raise StageError(f"run_dir={str(run_dir)!r} points at {self.root}, which is a file, not a "
                             f"folder; pass a folder such as 'outputs/demo'")
        self._dataset: OutfitDataset | None = None
        self._claims: dict[str, StageClaim] = {}

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # ---------------------------------------------------------------- paths
    @property
    def data_dir(self) -> Path:
        return self.root / DATA

    @property
    def notebooks_dir(self) -> Path:
        return self.root / NOTEBOOKS

    @property
    def report_path(self) -> Path:
        return self.root / "report.md"

    @property
    def pipeline_record(self) -> Path:
        return self.root / "pipeline.json"

    def stage_dir(self, stage: str) -> Path:
        if not isinstance(stage, str) or not stage or "/" in stage or stage in (".", ".."):
            raise StageError(f"stage name (out_name) {stage!r} must be a plain folder name such as "
                             f"'student_fnd'")
        return self.root / stage

    def path(self, stage: str, name: str) -> Path:
        """A file of a stage folder, e.g. ``path('teacher', 'history.json')``."""
        return self.stage_dir(stage) / name

    def metrics_path(self, stage: str) -> Path:
        return self.path(stage, "metrics.json")

    def snapshot_path(self, stage: str, epoch: int) -> Path:
        """Where :class:`fndkit.train.Snapshots` keeps ``stage``'s weights after ``epoch``."""
        return self.path(stage, "snapshots") / f"epoch{int(epoch):03d}.pt"

    def snapshots(self, stage: str) -> dict[int, Path]:
        """``{epoch: checkpoint path}`` of the snapshots ``stage`` saved, by epoch (empty if none)."""
        folder = self.path(stage, "snapshots")
        if not folder.is_dir():
            return {}
        found = {}
        for p in folder.glob("epoch*.pt"):
            digits = p.stem.removeprefix("epoch")
            if digits.isdigit():
                found[int(digits)] = p
        return dict(sorted(found.items()))

    def read_json(self, path: str | os.PathLike) -> Any:
        """The JSON file ``path`` of this run folder: the one reader. A corrupt file is a
        :class:`StageError` naming it and the fix (delete its stage folder or rerun the stage)."""
        path = Path(path)
        try:
            rel = path.resolve().relative_to(self.root)
            stage = rel.parts[0] if len(rel.parts) > 1 else None
        except ValueError:
            stage = path.parent.name
        try:
            return read_json(path, fix=fix_for(stage) if stage else None)
        except CorruptFile as exc:
            raise StageError(str(exc)) from None

    def check_loads(self, path: str | os.PathLike) -> str | None:
        """Why ``path`` (a JSON file or a checkpoint) cannot be used, or None when it loads."""
        path = Path(path)
        if not path.exists():
            return f"{path.name} is missing"
        try:
            if path.suffix == ".json":
                read_json(path)
            elif path.suffix == ".npy":
                np.load(path, mmap_mode="r")
            elif path.suffix != ".pt":
                pass  # exists: that is all a stage asks of it
            elif path.name in ("checkpoint.pt", "last.pt"):
                load_checkpoint(path, mmap=True)
            else:  # a plain state-dict file (pre-trained weights)
                import torch
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001  (torch says "corrupt" in many ways)
            return f"{path.name} does not load ({str(exc).split(';')[0][:200]})"
        return None

    def checkpoint(self, stage: str) -> Path:
        """``<stage>/checkpoint.pt`` (``stage`` may also be a folder or a ``.pt`` path); a clear
        error naming the notebook to run when it is missing."""
        if not isinstance(stage, (str, os.PathLike)) or not str(stage).strip():
            raise StageError(f"model {stage!r} must name a trained model: a stage folder such as "
                             f"'teacher' or 'student_fnd', or a checkpoint path")
        p = Path(stage).expanduser()
        if p.is_absolute() or p.suffix == ".pt" or len(p.parts) > 1:
            p = resolve_path(p)
            ckpt = p if p.suffix == ".pt" else p / "checkpoint.pt"
        else:
            ckpt = self.stage_dir(stage) / "checkpoint.pt"
        if not ckpt.exists():
            todo = ("notebooks/02_teacher.ipynb" if stage == TEACHER
                    else "the notebook that trains it (02_teacher, 03_student, 04_contrastive, 07_baselines)")
            raise StageError(f"{self.root} has no trained model {stage!r} ({ckpt} is missing); run "
                             f"{todo} with run_dir={str(self.root)!r} first, or pick one of the models "
                             f"trained there: {', '.join(self.trained_models()) or 'none'}")
        return ckpt

    def trained_models(self) -> list[str]:
        """Stage folders holding a recommender checkpoint, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/checkpoint.pt")
                      if p.parent.name not in NOT_MODELS)

    def finished_stages(self) -> list[str]:
        """Stage folders with a ``metrics.json`` (data and cold start included), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/metrics.json"))

    # ---------------------------------------------------------------- data
    def has_data(self) -> bool:
        return (self.data_dir / "dataset.json").exists()

    def data_description(self) -> dict:
        self.require_data()
        return self.read_json(self.data_dir / "dataset.json")

    def require_data(self) -> None:
        if self.data_dir.is_dir() and not self.has_data() and (self.data_dir / CLAIM_FILE).exists():
            raise StageError(f"the dataset in {self.data_dir} is being written right now (see its "
                             f"{CLAIM_FILE}); wait for that 00_data to end and run again")
        if self.data_dir.is_dir() and not self.has_data():
            raise StageError(
                f"the dataset in {_where(self.data_dir)} is incomplete: its dataset.json is missing. "
                f"Delete that data/ folder and rerun notebooks/00_data.ipynb with run_dir={str(self.root)!r} "
                f"(or pass overwrite=True to 00_data)")
        if not self.has_data():
            raise StageError(
                f"no dataset in {_where(self.root)}: its data/ folder is missing. Fill it with "
                f"`make demo` (the whole chain into outputs/demo), or with "
                f"`papermill notebooks/00_data.ipynb out.ipynb -p run_dir {self.root}`; "
                f"run notebooks/00_data.ipynb first")

    def dataset(self) -> OutfitDataset:
        """The dataset 00_data wrote (loaded once per RunFolder, memory-mapped)."""
        if self._dataset is None:
            self.require_data()
            try:
                self._dataset = OutfitDataset.load(self.data_dir)
            except CorruptFile as exc:
                raise StageError(str(exc)) from None
            except (FileNotFoundError, EOFError, zipfile.BadZipFile) as exc:  # a file of it missing or cut short
                raise StageError(f"the dataset in {self.data_dir} does not load ({type(exc).__name__}: "
                                 f"{str(exc)[:200]}); delete that data/ folder, or rerun "
                                 f"notebooks/00_data.ipynb with overwrite=True") from None
        return self._dataset

    def data_source(self) -> str:
        """What the dataset is: ``synthetic``, ``polyvore`` or ``folder`` (its recorded source)."""
        meta = self.data_description().get("meta", {})
        return str(meta.get("source", "unknown"))

    def paper_defaults(self) -> dict:
        """α and the augmentation pair the paper used for this kind of dataset: the one resolver
        (:data:`~fndkit.config.PAPER_DEFAULTS`; fixed-size outfits are Polyvore-630's kind,
        variable-size ones Polyvore-519's)."""
        variable = bool(self.data_description().get("stats", {}).get("variable_size", False))
        return PAPER_DEFAULTS["variable" if variable else "fixed"]

    def preset_name(self) -> str:
        """The training preset for this run folder, chosen by what the dataset is (its recorded
        source and scale), not by its image size: synthetic data by scale (``<scale>-rich`` for the
        rich appearance, fndkit/data/appearance.py); real data ('real')."""
        meta = self.data_description().get("meta", {})
        if meta.get("source") == "synthetic":
            scale = str(meta.get("scale", "demo"))
            return f"{scale}-rich" if meta.get("generator", {}).get("appearance") == "rich" else scale
        return "real"

    # ---------------------------------------------------------------- stages
    def status(self, stage: str, config: dict, requires: tuple[str, ...] = ()) -> StageStatus:
        """new / finished-same (reuse) / finished-other (refuse) / partial (resume) / incomplete
        (refuse: a ``metrics.json``, but one of ``requires`` — the files its reuse needs, e.g.
        ``checkpoint.pt`` — is missing or does not load). A corrupt ``metrics.json`` or
        ``config.json`` is a :class:`StageError` naming it."""
        folder = self.stage_dir(stage)
        if (folder / "metrics.json").exists():
            self.read_json(folder / "metrics.json")
            old = self.read_json(folder / "config.json") if (folder / "config.json").exists() else None
            if any(self.check_loads(folder / name) for name in requires):
                return StageStatus.INCOMPLETE
            if _what(old) == _what(jsonable(config)):
                return StageStatus.FINISHED_SAME
            if _budget_raised(old, config) and (folder / "last.pt").exists():
                stopped = self.read_json(folder / "metrics.json").get("stopped_early")
                if stopped is not None:  # stopped early: the larger budget would have stopped there too
                    return StageStatus.FINISHED_SAME if stopped else StageStatus.EXTEND
            return StageStatus.FINISHED_OTHER
        return StageStatus.PARTIAL if (folder / "last.pt").exists() else StageStatus.NEW

    def begin_stage(self, stage: str, config: dict, overwrite: bool = False,
                    claim_timeout: float | None = None,
                    requires: tuple[str, ...] = ()) -> tuple[StageStatus, dict | None]:
        """Claim ``stage`` and decide what to do with it, asked for with ``config``.

        Waits while another process holds the stage's claim (``claim_timeout``: None waits as long
        as it trains, 0 refuses at once, else a number of seconds; see the module docstring), then
        returns ``(status, metrics)``: metrics of the finished run to reuse (status FINISHED_SAME,
        claim released), else None after the folder is ready for (re)training and ``config.json``
        written, with the claim held until :meth:`end_stage`. Refuses a finished run with another
        config unless ``overwrite``; a partial run with another config is started over (its
        last.pt cannot be resumed with other settings). ``requires``: the files a finished run
        needs to be reused (see :meth:`status`); without one it is refused by name.
        """
        check_overwrite(overwrite)
        folder = self.stage_dir(stage)
        if stage in self._claims:
            raise StageError(f"{folder} is already being trained through this RunFolder; call "
                             f"end_stage({stage!r}) first")
        claim = StageClaim.acquire(folder, claim_timeout)
        try:
            status, finished = self._decide(folder, stage, config, overwrite, tuple(requires))
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        if finished is not None:
            if claim is not None:
                claim.release()
        elif claim is not None:
            self._claims[stage] = claim
        return status, finished

    def refuse_other(self, stage: str, config: dict, overwrite: bool = False) -> None:
        """Raise the refusal :meth:`begin_stage` would give when ``stage`` holds a finished run
        with another config (the differing keys named, with both values); nothing otherwise. A
        verb calls it before it announces the training, so a refused run prints no such line."""
        if not check_overwrite(overwrite) and self.status(stage, config) is StageStatus.FINISHED_OTHER:
            raise self._other_config(stage, config)

    def _other_config(self, stage: str, config: dict) -> StageError:
        folder = self.stage_dir(stage)
        old = self.read_json(folder / "config.json") if (folder / "config.json").exists() else None
        diff = "; ".join(config_differences(old, config)) or "its config.json is missing"
        return StageError(f"{folder} holds a finished run with another config ({diff}); pass a new "
                          f"out_name, or overwrite=True to replace it")

    def _decide(self, folder: Path, stage: str, config: dict, overwrite: bool,
                requires: tuple[str, ...] = ()) -> tuple[StageStatus, dict | None]:
        """:meth:`begin_stage` once the claim is held: today's reuse / refuse / resume rules."""
        # overwrite reads nothing of the old run (a corrupt file there must not stop its replacement)
        status = StageStatus.NEW if overwrite else self.status(stage, config, requires)
        if status is StageStatus.FINISHED_SAME:
            print(f"{folder} already holds a finished run with this config; reusing it "
                  f"(pass overwrite=True to retrain)")
            return status, self.read_json(folder / "metrics.json")
        if status is StageStatus.FINISHED_OTHER:
            raise self._other_config(stage, config)
        if status is StageStatus.INCOMPLETE:
            why = "; ".join(w for w in (self.check_loads(folder / n) for n in requires) if w)
            raise StageError(f"{folder} has a metrics.json but cannot be reused: {why}. Put the file back, "
                             f"or rerun {writer_of(stage)} with overwrite=True to train it again")
        if status is StageStatus.EXTEND:
            old = self.read_json(folder / "config.json")
            kept = folder / f"metrics-epochs{old['train']['epochs']}.json"
            os.replace(folder / "metrics.json", kept)
            print(f"{folder} ran its whole {old['train']['epochs']}-epoch budget without stopping early: "
                  f"continuing it to {config['train']['epochs']} epochs from its last.pt (the earlier "
                  f"result stays in {kept.name}; overwrite=True starts over)")
        elif status is StageStatus.PARTIAL and (folder / "config.json").exists():
            old = self.read_json(folder / "config.json")
            if _what(old) != _what(jsonable(config)) and not _budget_raised(old, config):
                print(f"{folder} holds an unfinished run with another config "
                      f"({'; '.join(config_differences(old, config))}); starting over")
                overwrite = True
        if overwrite and folder.exists():
            _clear(folder)
            status = StageStatus.NEW
        if status is StageStatus.EXTEND:
            status = StageStatus.PARTIAL
        elif status is StageStatus.PARTIAL:
            print(_resuming(stage, folder))
        else:
            print(f"starting {stage} in {folder}")
        for stale in folder.glob(f".*{TMP_MARK}*") if folder.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)  # a write cut short by a kill: never read
        write_json(folder / "config.json", {**config, "run_dir": str(self.root)})
        return status, None

    @contextlib.contextmanager
    def claimed(self, stage: str, claim_timeout: float | None = None):
        """Hold the claim on ``stage``'s folder for the block: the one-writer rule of
        :meth:`begin_stage` for a stage that applies its own reuse / refuse rule inside (the
        data stage, the pre-training, the analyses). Re-entrant within one thread (a stage that
        calls another function claiming the same folder); another process waits as in
        :meth:`begin_stage`."""
        folder = self.stage_dir(stage)
        key = (str(folder), threading.get_ident())
        if key in _HELD:
            yield
            return
        claim = StageClaim.acquire(folder, claim_timeout)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            if claim is not None:
                claim.release()

    def inputs_of(self, stages: list[str]) -> dict:
        """What an analysis read, to key its result by: the dataset's fingerprint and, per stage,
        its checkpoint's size and modification time (a retrained model is another input)."""
        inputs = {"dataset": self.data_description().get("fingerprint") if self.has_data() else None}
        for stage in stages:
            ckpt = self.stage_dir(stage) / "checkpoint.pt"
            st = ckpt.stat() if ckpt.exists() else None
            inputs[stage] = [st.st_size, st.st_mtime_ns] if st else None
        return inputs

    def check_out_name(self, stage: str, reads: tuple[str | os.PathLike | None, ...] = ()) -> str:
        """``stage`` as the folder a training stage writes: refused when it is one of the run
        folder's own inputs (data, the autoencoder, the decoded images, the notebooks, the
        pre-training, the analyses' folders) or a folder this stage reads (``reads``: its teacher,
        its autoencoder) — before anything is deleted, overwrite or not."""
        folder = self.stage_dir(stage)
        taken = {name: f"the run folder's {name}/ (written by {writer_of(name)})" for name in NOT_MODELS}
        for given in reads:
            if given is not None:
                path = self.stage_dir(given) if isinstance(given, str) and "/" not in given else resolve_path(given)
                taken[path.name if path.parent == self.root else str(path)] = f"the folder it reads ({path})"
        why = taken.get(stage) or taken.get(str(folder))
        if why:
            raise StageError(f"out_name={stage!r} would write into {why}, an input of this run; "
                             f"pass another out_name (e.g. the default, out_name=None)")
        return stage

    def end_stage(self, stage: str) -> None:
        """Release the claim :meth:`begin_stage` took on ``stage`` (the stage finished, failed or
        was interrupted); nothing when this RunFolder holds none (another rank, a reused stage)."""
        claim = self._claims.pop(stage, None)
        if claim is not None:
            claim.release()

    def discard_unfinished(self, stage: str) -> bool:
        """Empty ``stage``'s folder when it holds nothing to reuse or resume (no ``metrics.json``,
        no ``last.pt``): what a stage that failed before its first epoch ended leaves behind. Its
        claim stays until :meth:`end_stage`, which removes the then empty folder. Returns whether
        anything was removed."""
        folder = self.stage_dir(stage)
        if not folder.is_dir() or (folder / "metrics.json").exists() or (folder / "last.pt").exists():
            return False
        _clear(folder)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when no claim is left in it
        return True

    def read_metrics(self, stage: str) -> dict:
        return self.read_json(self.metrics_path(stage))

    def write_metrics(self, stage: str, metrics: dict) -> Path:
        return write_json(self.metrics_path(stage), metrics)

    def read_history(self, stage: str) -> list[dict]:
        """The per-epoch records ``fit()`` wrote for ``stage``."""
        return self.read_json(self.path(stage, "history.json"))

    def read_config(self, stage: str) -> dict:
        path = self.path(stage, "config.json")
        return self.read_json(path) if path.exists() else {}

    def training_progress(self, since: float = 0.0) -> dict | None:
        """The training stage that changed last after ``since`` (a ``time.time()``), for a live
        display (the chain runner's): ``{"stage", "epochs" (the budget), "history" (the records
        ``fit()`` wrote so far), "finished" (its metrics are written)}``; None when no training
        stage changed since then.

        A training stage is a folder whose ``config.json`` has a ``train`` section; it changed
        when that file or its ``history.json`` did (both are written atomically).
        """
        if not self.root.is_dir():
            return None
        changed = []
        for folder in self.root.iterdir():
            if folder.name in NOT_MODELS or not folder.is_dir():
                continue
            times = []
            for name in ("config.json", "history.json"):
                try:
                    times.append((folder / name).stat().st_mtime)
                except OSError:
                    pass
            if times and max(times) > since:
                changed.append((max(times), folder.name))
        for _, stage in sorted(changed, reverse=True):
            try:
                train = self.read_config(stage).get("train")
                if not isinstance(train, dict):
                    continue
                history_path = self.path(stage, "history.json")
                history = read_json(history_path) if history_path.exists() else []
            except (OSError, ValueError, StageError):  # the folder went away (overwrite) while being read
                continue
            return {"stage": stage, "epochs": train.get("epochs"), "history": history,
                    "finished": self.metrics_path(stage).exists()}
        return None

    # ---------------------------------------------------------------- models
    def load_model(self, stage: str, device: str = "cpu"):
        """Rebuild the model of ``stage`` from its checkpoint; refuses one trained on another
        dataset. Returns ``(model, checkpoint payload)``."""
        ckpt = self.checkpoint(stage)
        model, payload = load_model(ckpt, device=device)
        check_same_dataset(payload, self.dataset(), ckpt)
        _check_own_checkpoint(payload, ckpt)
        return model, payload

    def load_teacher(self, dim: int, device: str = "cpu", teacher_dir: str | os.PathLike | None = None):
        """The frozen teacher for FND: from ``teacher_dir`` (default ``<run>/teacher``), checked
        to come from this dataset and to share the student's feature dimension d."""
        where = str(teacher_dir) if teacher_dir else TEACHER
        try:
            model, payload = self.load_model(where, device=device)
            if self.checkpoint(where).name == "checkpoint.pt":  # a stage folder, not a snapshot file
                self._require_finished(self.checkpoint(where).parent)
        except (StageError, ValueError) as exc:  # name the parameter that pointed there
            kind = type(exc) if type(exc) in (StageError, ValueError, CorruptFile) else StageError
            raise kind(f"teacher_dir={teacher_dir!r}: {exc}" if teacher_dir else str(exc)) from None
        teacher_dim = payload["config"]["model"].get("dim")
        if teacher_dim != dim:
            raise ValueError(f"teacher at {self.checkpoint(where)} has d={teacher_dim} but the student "
                             f"has d={dim}; FND compares their scores on one scale, so train "
                             f"both with the same dim")
        return model

    def _require_finished(self, folder: Path) -> None:
        """A stage folder that another stage reads from must be finished: its ``metrics.json``
        exists and loads (a corrupt one stops the reader before it trains, naming the file)."""
        metrics = folder / "metrics.json"
        if not metrics.exists():
            raise StageError(f"{folder} is unfinished (it has no metrics.json); rerun "
                             f"{writer_of(folder.name)} with run_dir={str(self.root)!r} to finish it")
        self.read_json(metrics)

    def neighbours(self, autoencoder_dir: str | os.PathLike | None = None) -> np.ndarray:
        """The autoencoder's *replace* neighbour table [I, k] (global item ids, -1 = none)."""
        folder = resolve_path(autoencoder_dir) if autoencoder_dir else self.stage_dir(AUTOENCODER)
        path = folder / "neighbours.npy"
        if not path.exists():
            given = f"autoencoder_dir={autoencoder_dir!r}: " if autoencoder_dir else ""
            raise StageError(f"{given}augmentation 'replace' needs {path}; run notebooks/01_autoencoder.ipynb "
                             f"on this run_dir first (or point autoencoder_dir at one that ran), or use "
                             f"augmentations='erase,erase'")
        return np.load(path)


def _clear(folder: Path) -> None:
    """Remove everything in ``folder`` but its claim (the process clearing it holds that)."""
    for child in folder.iterdir():
        if child.name in (CLAIM_FILE, CLAIM_LOCK):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()


# ---------------------------------------------------------------------------------------------
# One writer per stage folder: the claim (see the module docstring)


_NO_RIGHTS = (errno.EACCES, errno.EPERM, errno.EROFS)


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (``/proc/<pid>/stat`` field 22, clock ticks after boot), "zombie" for
    a process that exited but was not reaped yet; None where that cannot be read (no ``/proc``)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name in (…) may hold spaces
    return "zombie" if fields[0] in ("Z", "X") else fields[19]


def _pid_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host still runs and is the one that started at ``start``
    (a pid the system gave to a later process does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = _process_start(pid)
    if now == "zombie":
        return False
    return now is None or start is None or now == start


def _since(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@contextlib.contextmanager
def _claim_lock(folder: Path):
    """Hold an exclusive ``flock`` on ``<folder>/.claim.lock`` for the few steps that look at and
    replace the claim file: one process at a time. The kernel drops the lock when its process
    dies (never stale); the file is removed on the way out, so a locker checks that the file it
    locked is still the one at that path (else a holder removed it meanwhile: lock the new one)."""
    path = folder / CLAIM_LOCK
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed just now (a finished holder's empty folder)
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # drops the lock


class StageClaim:
    """This process's claim on a stage folder: the open claim file and its heartbeat thread.

    The heartbeat rewrites the file in place through the descriptor that created it, with a record
    of the same length (the heartbeat has a fixed width), so it never touches a claim another
    process created after taking this one over, and a reader never sees a half-written record.
    """

    def __init__(self, folder: Path, fd: int, record: dict):
        self.folder, self.path, self._fd, self.record = folder, folder / CLAIM_FILE, fd, record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim {folder.name}", daemon=True)
        self._thread.start()

    @staticmethod
    def _bytes(record: dict, heartbeat: float) -> bytes:
        # "%14.3f": the same width until the year 2286, so a refresh overwrites the record exactly
        return (json.dumps(record)[:-1] + f', "heartbeat": {heartbeat:14.3f}}}\n').encode()

    @classmethod
    def acquire(cls, folder: Path, timeout: float | None = None) -> "StageClaim | None":
        """Claim ``folder``, waiting while a live process holds it (see the module docstring).
        None where this process may not write the folder (no one can train there as this user)."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout >= 0):
            raise StageError(f"claim_timeout={timeout!r} must be None (wait as long as another process "
                             f"trains the stage), 0 (refuse at once) or a number of seconds >= 0")
        start, announced = time.monotonic(), None
        while True:
            try:
                with _claim_lock(folder):
                    holder = _holder(folder)
                    if holder is None or holder["stale"]:
                        if holder is not None:
                            print(f"{folder}: taking over the claim of pid {holder.get('pid', '?')} on host "
                                  f"{holder.get('host', '?')} ({holder['stale']})", flush=True)
                            os.unlink(folder / CLAIM_FILE)
                        return cls._create(folder)
            except OSError as exc:
                if exc.errno in _NO_RIGHTS:
                    return None
                explained = explain_write_error(exc, folder / CLAIM_FILE)
                if explained is exc:
                    raise
                raise explained from exc
            waited = time.monotonic() - start
            who = (f"pid {holder['pid']} on host {holder['host']} since {holder['since']} "
                   f"(last heartbeat {max(0.0, time.time() - holder['heartbeat']):.0f} s ago, claim file "
                   f"{folder / CLAIM_FILE})")
            if timeout is not None and waited >= timeout:
                told = ("refusing at once (claim_timeout=0)" if timeout == 0
                        else f"still held after waiting {waited:.0f} s (claim_timeout={timeout:g})")
                raise StageBusy(f"{folder} is being trained by {who}; {told}. Wait for it "
                                f"(claim_timeout=None), or pass another out_name")
            if (holder["host"], holder["pid"], holder["since"]) != announced:
                announced = (holder["host"], holder["pid"], holder["since"])
                print(f"{folder} is being trained by {who}; waiting for it to end, then its run is "
                      f"reused, refused or resumed as usual", flush=True)
            time.sleep(CLAIM_POLL_S if timeout is None else max(0.0, min(CLAIM_POLL_S, timeout - waited)))

    @classmethod
    def _create(cls, folder: Path) -> "StageClaim":
        """Create the claim file (under the claim lock) and start the heartbeat."""
        now, pid = time.time(), os.getpid()
        record = {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start(pid),
                  "since": _since(now), "started": round(now, 3), "lease_s": CLAIM_LEASE_S}
        path = folder / CLAIM_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, cls._bytes(record, now))
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        return cls(folder, fd, record)

    def held(self) -> bool:
        """Whether the claim file in the folder is still this one (not taken over)."""
        try:
            return os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except OSError:
            return False

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(CLAIM_HEARTBEAT_S):
            try:
                os.pwrite(self._fd, self._bytes(self.record, time.time()), 0)
            except OSError:
                pass  # a full disk: the holder trains on; elsewhere the lease may lapse
            if not warned and not self.held():
                warned = True
                print(f"warning: the claim on {self.folder} was taken over by another process while "
                      f"this one (pid {os.getpid()}) still trains there; the two may overwrite each "
                      f"other's files", file=sys.stderr, flush=True)

    def release(self) -> None:
        """Stop the heartbeat, remove the claim file (if it is still this one) and the folder if
        that left it empty."""
        if self._fd < 0:
            return
        self._stop.set()
        self._thread.join()
        try:
            if self.folder.is_dir():
                with _claim_lock(self.folder):
                    if self.held():
                        os.unlink(self.path)
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # a stage that left nothing (discard_unfinished)
        finally:
            os.close(self._fd)
            self._fd = -1


def _holder(folder: Path) -> dict | None:
    """The claim in ``folder`` (None: none) with ``stale``: why it is abandoned, or None while its
    holder lives. A claim file that cannot be read is abandoned once older than the lease; before
    that it is an error naming the file."""
    path = folder / CLAIM_FILE
    try:
        st = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(raw.decode("utf-8"))
        info["pid"], info["heartbeat"] = int(info["pid"]), float(info["heartbeat"])
        info["host"], info["since"] = str(info["host"]), str(info["since"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # UnicodeDecodeError is a ValueError
        # a holder writes its claim whole, under the claim lock this runs under: one that does not
        # read was left by a crash or written by something else, and blocks no live holder
        age = time.time() - st.st_mtime
        return {"stale": f"an unreadable claim file ({type(exc).__name__}), written {age:.0f} s ago",
                "unreadable": True, "age": age}
    if info["host"] == socket.gethostname():
        if info["pid"] == os.getpid():
            raise StageError(f"{folder} is already being trained by this process (pid {os.getpid()}, "
                             f"since {info['since']}); a process cannot wait for itself. Finish that "
                             f"stage first (RunFolder.end_stage), or pass another out_name")
        alive = _pid_alive(info["pid"], info.get("pid_start"))
        info["stale"] = None if alive else f"pid {info['pid']} is no longer running"
    else:
        age = time.time() - info["heartbeat"]
        info["stale"] = (f"no heartbeat for {age:.0f} s, longer than the {CLAIM_LEASE_S:.0f} s lease"
                         if age > CLAIM_LEASE_S else None)
    return info


def check_overwrite(overwrite: Any) -> bool:
    """``overwrite`` must be a real bool: papermill's ``-p overwrite no`` passes the string 'no',
    which Python counts as True (and a finished run would be deleted)."""
    if not isinstance(overwrite, (bool, np.bool_)):
        raise StageError(f"overwrite={overwrite!r} must be True or False (a string such as 'no' "
                         f"would count as True and delete a finished run); pass -p overwrite False")
    return bool(overwrite)


def _what(config: Any) -> Any:
    """A stage config without its location keys (see LOCATION_KEYS); its training config with
    the fields it lacks at their defaults (a stage finished before a field existed still matches)
    and without the fields that say where it ran (:data:`~fndkit.config.RUN_ONLY_KEYS`: a run
    finished on the CPU is the same run to a later ``device="auto"``)."""
    if not isinstance(config, dict):
        return config
    what = {k: v for k, v in config.items() if k not in LOCATION_KEYS}
    if isinstance(what.get("train"), dict):  # the device a model trained on is not what it is
        what["train"] = identity(jsonable(TrainConfig.with_defaults(what["train"])))
    return what


def config_differences(old: Any, new: Any) -> list[str]:
    """How stage config ``new`` (asked for here) differs from ``old`` (the folder's): one
    ``"key: <old> there, <new> here"`` per differing field, the training config's fields by their
    own names (``lr: 0.01 there, 0.03 here``), other nested sections as ``section.key``."""
    old, new = _what(jsonable(old)), _what(jsonable(new))
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [f"config: {old!r} there, {new!r} here"]
    out = []

    def walk(a: dict, b: dict, prefix: str) -> None:
        for key in sorted(set(a) | set(b), key=str):
            x, y = a.get(key, _ABSENT), b.get(key, _ABSENT)
            if isinstance(x, dict) and isinstance(y, dict):
                walk(x, y, "" if (not prefix and key == "train") else f"{prefix}{key}.")
            elif x != y:
                out.append(f"{prefix}{key}: {_shown(x)} there, {_shown(y)} here")

    walk(old, new, "")
    return out


_ABSENT = object()


def _shown(value: Any) -> str:
    return "absent" if value is _ABSENT else repr(value)


def _budget_raised(old: Any, new: Any) -> bool:
    """Stage config ``new`` asks for ``old``'s run with a larger epoch budget, nothing else."""
    a, b = _what(jsonable(old)), _what(jsonable(new))
    if not (isinstance(a, dict) and isinstance(b, dict) and isinstance(a.get("train"), dict)
            and isinstance(b.get("train"), dict)):
        return False
    rest = lambda c: {k: v for k, v in c.items() if k != "train"}  # noqa: E731
    return (rest(a) == rest(b) and a["train"].get("epochs") != b["train"].get("epochs")
            and within_budget(a["train"], b["train"]))


def _resuming(stage: str, folder: Path) -> str:
    """The line a partial stage prints: the epoch its ``last.pt`` ends at (of how many), and
    that nothing is trained when that run had ended (the search hands its chosen trial over so)."""
    how = f"(its last.pt; delete {folder}, or pass overwrite=True, to start over)"
    try:
        import torch

        payload = torch.load(folder / "last.pt", map_location="cpu", weights_only=True, mmap=True)
        state = payload["extra"]["train_state"]
        epoch, epochs = int(state["epoch"]), int(payload["config"]["train"]["epochs"])
        stopped = bool(state.get("stopped_early"))
    except Exception:  # unreadable: fit() says why when it loads it
        return f"resuming {stage} in {folder} {how}"
    if not (folder / "config.json").exists():  # written at every start: the weights were handed over
        how = "(a last.pt placed there without a config.json: the search hands its chosen trial over so)"
    if epoch >= epochs or stopped:
        return (f"resuming {stage} from epoch {epoch} of {epochs}: its training had "
                f"{'stopped early' if stopped else 'ended'}, so nothing is trained, only scored {how}")
    return f"resuming {stage} from epoch {epoch} of {epochs} {how}"


def _check_own_checkpoint(payload: dict, ckpt: Path) -> None:
    """A stage's ``checkpoint.pt`` must be the one its stage trained (the training config in its
    ``config.json``), not a file copied in from another stage or run."""
    stage_config = ckpt.parent / "config.json"
    trained = payload["config"].get("train")
    if ckpt.name != "checkpoint.pt" or not stage_config.exists() or not isinstance(trained, dict):
        return
    try:
        asked = read_json(stage_config, fix=fix_for(ckpt.parent.name)).get("train")
    except CorruptFile as exc:
        raise StageError(str(exc)) from None
    if not isinstance(asked, dict):
        return
    asked, trained = _what({"train": asked})["train"], _what({"train": trained})["train"]
    if not within_budget(trained, asked):  # the best epoch of a budget the run has since raised
        diff = ", ".join(f"{k}={trained.get(k)!r} in the checkpoint, {asked.get(k)!r} in config.json"
                         for k in sorted(set(asked) | set(trained)) if asked.get(k) != trained.get(k))
        raise StageError(f"{ckpt} was not trained by its stage folder ({diff}): it was copied in from "
                         f"another model or run; put the stage's own checkpoint back, or retrain the "
                         f"stage with overwrite=True")


def check_same_dataset(payload: dict, dataset: OutfitDataset, where: Any) -> None:
    """A checkpoint must come from this dataset (its recorded fingerprint)."""
    ds = payload["config"].get("dataset", {})
    fp = ds.get("fingerprint")
    if fp is not None and fp != dataset.fingerprint():
        raise StageError(f"{where} was trained on dataset {ds.get('name')!r} (fingerprint {fp}), not "
                         f"on this run folder's {dataset.name!r} ({dataset.fingerprint()}); retrain "
                         f"it on this run_dir")


__all__ = ["RunFolder", "StageError", "StageBusy", "StageClaim", "StageStatus", "DatasetError", "project_root",
           "resolve_path", "portable_path", "check_same_dataset", "check_overwrite", "config_differences",
           "check_run_dir"]


def claim_holder(folder: str | os.PathLike) -> dict | None:
    """The claim on stage folder ``folder`` (host, pid, since, heartbeat …) with ``stale``: why it
    is abandoned (a dead pid on this host, a lapsed lease elsewhere) or None while its holder
    lives; None when the folder is not claimed. Other modules' stale-work rules use it (the
    search's queue, :mod:`fndkit.plans.study`)."""
    try:
        info = _holder(Path(folder))
    except StageError:
        return {"stale": None}
    if info is not None and info.get("unreadable") and info["age"] <= CLAIM_LEASE_S:
        return {"stale": None}  # read without the claim lock: it may be being written right now
    return info


def process_alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` on this host still runs and is the process that started at ``start``."""
    return _pid_alive(pid, start)


def process_start(pid: int) -> str | None:
    """``pid``'s start time on this host (clock ticks after boot), None without ``/proc``."""
    return _process_start(pid)
