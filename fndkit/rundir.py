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
``metrics.json`` exists. Asked again with the same config it is reused; with another config it is
refused (never silently overwritten); a folder with ``last.pt`` but no metrics is resumed.
"""

from __future__ import annotations

import enum
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import baselines  # noqa: F401  (a run folder may hold baseline checkpoints: register them)
from .artifacts import TMP_MARK, jsonable, load_checkpoint, read_json, write_json
from .config import TrainConfig
from .data.schema import DatasetError, OutfitDataset
from .models.registry import load_model

DATA = "data"
AUTOENCODER = "autoencoder"
TEACHER = "teacher"
COLD_START = "cold_start"
EXPLORER = "explorer"
FALSE_NEGATIVES = "false_negatives"
NOTEBOOKS = "notebooks"
# Folders that hold something other than a trained recommender.
NOT_MODELS = frozenset({DATA, AUTOENCODER, COLD_START, EXPLORER, FALSE_NEGATIVES, NOTEBOOKS})
# Keys of a stage's config.json that describe where it ran, not what it is: a run folder that was
# moved or reached through another relative path still matches its finished stages.
LOCATION_KEYS = ("run_dir",)


class StageError(RuntimeError):
    """A run folder is missing a stage, or holds a different finished one; the message says what to do."""


class StageStatus(str, enum.Enum):
    NEW = "new"
    FINISHED_SAME = "finished-same"      # reuse
    FINISHED_OTHER = "finished-other"    # refuse unless overwrite
    PARTIAL = "partial"                  # resume from last.pt


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
        return read_json(self.data_dir / "dataset.json")

    def require_data(self) -> None:
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
            self._dataset = OutfitDataset.load(self.data_dir)
        return self._dataset

    def data_source(self) -> str:
        """What the dataset is: ``synthetic``, ``polyvore`` or ``folder`` (its recorded source)."""
        meta = self.data_description().get("meta", {})
        return str(meta.get("source", "unknown"))

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
    def status(self, stage: str, config: dict) -> StageStatus:
        """new / finished-same (reuse) / finished-other (refuse) / partial (resume)."""
        folder = self.stage_dir(stage)
        if (folder / "metrics.json").exists():
            old = read_json(folder / "config.json") if (folder / "config.json").exists() else None
            return (StageStatus.FINISHED_SAME if _what(old) == _what(jsonable(config))
                    else StageStatus.FINISHED_OTHER)
        return StageStatus.PARTIAL if (folder / "last.pt").exists() else StageStatus.NEW

    def begin_stage(self, stage: str, config: dict, overwrite: bool = False) -> tuple[StageStatus, dict | None]:
        """Decide what to do with ``stage`` asked for with ``config``.

        Returns ``(status, metrics)``: metrics of the finished run to reuse (status FINISHED_SAME),
        else None after the folder is ready for (re)training and ``config.json`` written. Refuses a
        finished run with another config unless ``overwrite``; a partial run with another config
        is started over (its last.pt cannot be resumed with other settings).
        """
        check_overwrite(overwrite)
        folder = self.stage_dir(stage)
        status = self.status(stage, config)
        if status is StageStatus.FINISHED_SAME and not overwrite:
            print(f"{folder} already holds a finished run with this config; reusing it "
                  f"(pass overwrite=True to retrain)")
            return status, read_json(folder / "metrics.json")
        if status is StageStatus.FINISHED_OTHER and not overwrite:
            raise StageError(f"{folder} holds a finished run with another config; pass a new "
                             f"out_name, or overwrite=True to replace it")
        if status is StageStatus.PARTIAL and (folder / "config.json").exists():
            old = read_json(folder / "config.json")
            if _what(old) != _what(jsonable(config)):
                print(f"{folder} holds an unfinished run with another config; starting over")
                overwrite = True
        if overwrite and folder.exists():
            shutil.rmtree(folder)
            status = StageStatus.NEW
        if status is StageStatus.PARTIAL:
            print(f"{folder} holds an unfinished run with this config; resuming it from its last.pt "
                  f"(delete the folder, or pass overwrite=True, to start over)")
        for stale in folder.glob(f".*{TMP_MARK}*") if folder.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)  # a write cut short by a kill: never read
        write_json(folder / "config.json", {**config, "run_dir": str(self.root)})
        return status, None

    def discard_unfinished(self, stage: str) -> bool:
        """Remove ``stage``'s folder when it holds nothing to reuse or resume (no ``metrics.json``,
        no ``last.pt``): what a stage that failed before its first epoch ended leaves behind.
        Returns whether it was removed."""
        folder = self.stage_dir(stage)
        if not folder.is_dir() or (folder / "metrics.json").exists() or (folder / "last.pt").exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def read_metrics(self, stage: str) -> dict:
        return read_json(self.metrics_path(stage))

    def write_metrics(self, stage: str, metrics: dict) -> Path:
        return write_json(self.metrics_path(stage), metrics)

    def read_history(self, stage: str) -> list[dict]:
        """The per-epoch records ``fit()`` wrote for ``stage``."""
        return read_json(self.path(stage, "history.json"))

    def read_config(self, stage: str) -> dict:
        path = self.path(stage, "config.json")
        return read_json(path) if path.exists() else {}

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
            except (OSError, ValueError):  # the folder went away (overwrite) while being read
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
        except (StageError, ValueError) as exc:  # name the parameter that pointed there
            raise type(exc)(f"teacher_dir={teacher_dir!r}: {exc}" if teacher_dir else str(exc)) from None
        teacher_dim = payload["config"]["model"].get("dim")
        if teacher_dim != dim:
            raise ValueError(f"teacher at {self.checkpoint(where)} has d={teacher_dim} but the student "
                             f"has d={dim}; FND compares their scores on one scale, so train "
                             f"both with the same dim")
        return model

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


def check_overwrite(overwrite: Any) -> bool:
    """``overwrite`` must be a real bool: papermill's ``-p overwrite no`` passes the string 'no',
    which Python counts as True (and a finished run would be deleted)."""
    if not isinstance(overwrite, (bool, np.bool_)):
        raise StageError(f"overwrite={overwrite!r} must be True or False (a string such as 'no' "
                         f"would count as True and delete a finished run); pass -p overwrite False")
    return bool(overwrite)


def _what(config: Any) -> Any:
    """A stage config without its location keys (see LOCATION_KEYS); its training config with
    the fields it lacks at their defaults (a stage finished before a field existed still matches)."""
    if not isinstance(config, dict):
        return config
    what = {k: v for k, v in config.items() if k not in LOCATION_KEYS}
    if isinstance(what.get("train"), dict):
        what["train"] = jsonable(TrainConfig.with_defaults(what["train"]))
    return what


def _check_own_checkpoint(payload: dict, ckpt: Path) -> None:
    """A stage's ``checkpoint.pt`` must be the one its stage trained (the training config in its
    ``config.json``), not a file copied in from another stage or run."""
    stage_config = ckpt.parent / "config.json"
    trained = payload["config"].get("train")
    if ckpt.name != "checkpoint.pt" or not stage_config.exists() or not isinstance(trained, dict):
        return
    asked = read_json(stage_config).get("train")
    if not isinstance(asked, dict):
        return
    asked, trained = _what({"train": asked})["train"], _what({"train": trained})["train"]
    if asked != trained:
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


__all__ = ["RunFolder", "StageError", "StageStatus", "DatasetError", "project_root", "resolve_path",
           "check_same_dataset", "check_overwrite"]
