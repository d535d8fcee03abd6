"""The false-negative lab's experiments: when and why does FND help? (issue 13)

Two experiments, each a list of :class:`LabRun` s (one notebook execution with its parameters)
that the experiments runner executes, and a tidy results table read back from the run folders:

- ``fn_rate`` — the false-negative rate (the generator's ``taste_breadth``, :data:`BREADTHS`:
  about 2% … 30% of random mixtures at demo scale) × {N-pair, FND at three α, the two oracles}:
  how much any false-negative-aware training can gain (``oracle-drop`` / ``oracle-pull``: perfect
  knowledge) and how much FND gains, as the rate grows.
- ``fn_ablation`` — at the benchmark's own rate (and the highest): FND against ``fnd-sign`` (the
  teacher's flags at unit strength) and ``fnd-magnitude`` (its rescaling without the pull), and
  per-pair negatives (eq. 10 literally) against shared ones for N-pair and FND.

Every run folder holds one dataset and one teacher: ``<root>/breadth<b>/seed<k>/`` serves both
experiments. Students train until their validation AUC plateaus (early stopping; the epoch budget
is large enough that they stop on their own) and also report the best checkpoint within a fixed
budget (``budget_epochs``): :func:`results` gives both, with epochs to best. ``08_false_negatives``
closes each folder with the teacher's flags against the ground truth.

:func:`execute_in_process` makes the notebooks' library calls without a kernel (tests and quick
sweeps); the runner executes the notebooks themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .artifacts import atomic_path
from .config import DataConfig
from .rundir import DATA, FALSE_NEGATIVES, TEACHER, RunFolder, resolve_path
from .stages import data as data_stage
from .stages import false_negatives as fn_stage
from .stages import training

BREADTHS = (0.7, 1.0, 1.3, 1.7)          # ≈ 2%, 7%, 15%, 30% false negatives at demo scale
ALPHAS = (1.25, 2.0, 3.0)
ABLATION_BREADTHS = (1.0, 1.7)
STUDENT_BACKBONE = "cnn-tiny"             # much smaller than the cnn-large teacher (0.27M vs 1.10M)
# Epoch budgets per scale: "converged" (early stopping ends each run first) and the fixed one.
CONVERGED_EPOCHS = {"tiny": 2, "demo": 60}
TEACHER_EPOCHS = {"tiny": 2, "demo": 60}
FIXED_EPOCHS = {"tiny": 1, "demo": 12}
SNAPSHOT_EPOCHS = {"tiny": [1, 2], "demo": [1, 2, 5, 10, 20, 30]}
METRICS = ("auc", "ndcg_lpae")


@dataclass(frozen=True)
class LabRun:
    """One notebook execution: the notebook, the stage it fills, its full parameters (``run_dir``
    and ``seed`` included), and for the results table the method and what it varies."""

    notebook: str
    stage: str
    params: dict
    method: str = ""
    shown: dict = field(default_factory=dict)

    @property
    def run_dir(self) -> str:
        return self.params["run_dir"]

    def as_tuple(self) -> tuple[str, dict]:
        """``(notebook, parameters)``: what papermill needs."""
        return self.notebook, dict(self.params)


def lab_folder(root: str | os.PathLike, breadth: float, seed: int) -> Path:
    """The run folder of one (taste breadth, seed): ``<root>/breadth<b>/seed<k>``."""
    return resolve_path(root) / f"breadth{breadth:g}" / f"seed{int(seed)}"


def _check(seeds: Iterable[int], scale: str) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds!r} must be one or more integers >= 0")
    if scale not in CONVERGED_EPOCHS:
        raise ValueError(f"scale={scale!r} has no lab budget; choose one of {sorted(CONVERGED_EPOCHS)}")
    return [int(s) for s in seeds]


def _folder_runs(root, breadth: float, seed: int, scale: str, device: str) -> list[LabRun]:
    """Dataset and teacher of one run folder."""
    run_dir = str(lab_folder(root, breadth, seed))
    return [LabRun("00_data", DATA, {"run_dir": run_dir, "seed": seed, "scale": scale,
                                     "taste_breadth": float(breadth)}),
            LabRun("02_teacher", TEACHER, {"run_dir": run_dir, "seed": seed, "device": device,
                                           "epochs": TEACHER_EPOCHS[scale],
                                           "snapshot_epochs": SNAPSHOT_EPOCHS[scale]})]


def student_run(root, breadth: float, seed: int, loss: str, scale: str = "demo", alpha: float = 1.25,
                negatives: str = "shared", backbone: str = STUDENT_BACKBONE, device: str = "auto",
                method: str | None = None) -> LabRun:
    """The 03_student run of one method in one run folder (stage name from the method)."""
    stage = training.default_student_name(loss, alpha) + ("-per_pair" if negatives == "per_pair" else "")
    if loss == "fnd" and alpha == 1.25:
        stage += "-alpha1.25"  # every α explicit: the lab compares them
    params = {"run_dir": str(lab_folder(root, breadth, seed)), "seed": seed, "device": device,
              "loss": loss, "alpha": float(alpha), "backbone": backbone, "negatives": negatives,
              "epochs": CONVERGED_EPOCHS[scale], "budget_epochs": FIXED_EPOCHS[scale], "out_name": stage}
    name = method or (f"{loss} α={alpha:g}" if loss in training.ALPHA_LOSSES else loss)
    if negatives == "per_pair":
        name += " per-pair"
    return LabRun("03_student", stage, params, method=name,
                  shown={"taste_breadth": float(breadth), "alpha": float(alpha), "negatives": negatives})


def _diagnostics(root, breadth: float, seed: int, device: str) -> LabRun:
    return LabRun("08_false_negatives", FALSE_NEGATIVES,
                  {"run_dir": str(lab_folder(root, breadth, seed)), "seed": seed, "device": device,
                   "alphas": [0.5, 1.0, *ALPHAS]}, shown={"taste_breadth": float(breadth)})


def fn_rate_runs(root: str | os.PathLike, seeds: Iterable[int] = (0, 1, 2), scale: str = "demo",
                 breadths: Iterable[float] = BREADTHS, alphas: Iterable[float] = ALPHAS,
                 device: str = "auto") -> list[LabRun]:
    """``fn_rate``: per taste breadth and seed, the dataset, the teacher, then N-pair, FND at each
    α, ``oracle-drop`` and ``oracle-pull`` (the lab's student backbone), then the diagnostics."""
    seeds = _check(seeds, scale)
    runs = []
    for breadth in breadths:
        for seed in seeds:
            runs += _folder_runs(root, breadth, seed, scale, device)
            runs.append(student_run(root, breadth, seed, "npair", scale, device=device))
            runs += [student_run(root, breadth, seed, "fnd", scale, alpha=a, device=device) for a in alphas]
            runs += [student_run(root, breadth, seed, loss, scale, device=device)
                     for loss in ("oracle-drop", "oracle-pull")]
            runs.append(_diagnostics(root, breadth, seed, device))
    return runs


def fn_ablation_runs(root: str | os.PathLike, seeds: Iterable[int] = (0, 1, 2), scale: str = "demo",
                     breadths: Iterable[float] = ABLATION_BREADTHS, alpha: float = 2.0,
                     device: str = "auto") -> list[LabRun]:
    """``fn_ablation``: flags or rescaling (FND, ``fnd-sign``, ``fnd-magnitude`` at ``alpha``, the
    oracles), and per-pair against shared negatives for N-pair and FND."""
    seeds = _check(seeds, scale)
    runs = []
    for breadth in breadths:
        for seed in seeds:
            runs += _folder_runs(root, breadth, seed, scale, device)
            for loss in ("npair", "fnd", "fnd-sign", "fnd-magnitude", "oracle-drop", "oracle-pull"):
                runs.append(student_run(root, breadth, seed, loss, scale, alpha=alpha, device=device))
            for loss in ("npair", "fnd"):
                runs.append(student_run(root, breadth, seed, loss, scale, alpha=alpha, negatives="per_pair",
                                        device=device))
            runs.append(_diagnostics(root, breadth, seed, device))
    return runs


EXPERIMENTS = {"fn_rate": fn_rate_runs, "fn_ablation": fn_ablation_runs}


def unique_runs(runs: Iterable[LabRun]) -> list[LabRun]:
    """Each (run folder, stage) once, in first-seen order: experiments share folders and stages."""
    seen, out = set(), []
    for r in runs:
        key = (r.run_dir, r.stage)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


# --------------------------------------------------------------------------------------------
# results


def results(runs: Iterable[LabRun], experiment: str = "") -> pd.DataFrame:
    """Tidy rows from the finished students of ``runs``: experiment, method, stage, taste_breadth,
    fn_rate (the folder's measured rate), negatives, alpha, seed, protocol, metric, value.
    Metrics: auc and ndcg_lpae per protocol (converged), ``auc_budget`` (best within the fixed
    budget), and best_epoch / epochs_run / stopped_early / epoch_seconds (protocol "-"). Runs not
    finished yet are left out."""
    rows = []
    for r in runs:
        if r.notebook != "03_student":
            continue
        folder = RunFolder(r.run_dir)
        if not folder.metrics_path(r.stage).exists():
            continue
        m = folder.read_metrics(r.stage)
        data = folder.read_metrics(DATA) if folder.metrics_path(DATA).exists() else {}
        base = {"experiment": experiment, "method": r.method, "stage": r.stage,
                "taste_breadth": r.shown.get("taste_breadth"),
                "fn_rate": data.get("false_negative_fraction_random_mixtures"),
                "negatives": r.params.get("negatives", "shared"), "alpha": r.params.get("alpha"),
                "seed": r.params["seed"]}
        for protocol, values in m["test"].items():
            rows += [{**base, "protocol": protocol, "metric": k, "value": float(values[k])} for k in METRICS]
            budget = (m.get("budget") or {}).get("test", {}).get(protocol)
            if budget:
                rows.append({**base, "protocol": protocol, "metric": "auc_budget", "value": float(budget["auc"])})
        for k in ("best_epoch", "epochs_run", "stopped_early", "epoch_seconds"):
            if m.get(k) is not None:
                rows.append({**base, "protocol": "-", "metric": k, "value": float(m[k])})
    return pd.DataFrame(rows, columns=["experiment", "method", "stage", "taste_breadth", "fn_rate", "negatives",
                                       "alpha", "seed", "protocol", "metric", "value"])


def gain_summary(table: pd.DataFrame, metric: str = "auc", baseline: str = "npair") -> pd.DataFrame:
    """Per method, taste breadth and protocol: ``metric`` minus N-pair's in the same run folder
    (same seed, data and teacher), mean ± std over seeds, and the mean value itself.

    Columns: method, taste_breadth, fn_rate (mean over seeds), protocol, value_mean, gain_mean,
    gain_std, seeds. The baseline's own rows have gain 0.
    """
    part = table[table["metric"] == metric]
    if part.empty:
        return pd.DataFrame(columns=["method", "taste_breadth", "fn_rate", "protocol", "value_mean",
                                     "gain_mean", "gain_std", "seeds"])
    keys = ["taste_breadth", "seed", "protocol"]
    base = part[part["method"] == baseline].set_index(keys)["value"]
    base = base[~base.index.duplicated()]
    joined = part.join(base.rename("baseline"), on=keys)
    joined = joined.assign(gain=joined["value"] - joined["baseline"])
    out = (joined.groupby(["method", "taste_breadth", "protocol"], sort=False)
           .agg(fn_rate=("fn_rate", "mean"), value_mean=("value", "mean"), gain_mean=("gain", "mean"),
                gain_std=("gain", "std"), seeds=("seed", "nunique")).reset_index())
    out["gain_std"] = out["gain_std"].fillna(0.0)
    return out


# --------------------------------------------------------------------------------------------
# without a kernel


def execute_in_process(run: LabRun, progress: bool = False) -> dict:
    """Make the library calls ``run.notebook`` makes with ``run.params``, in this process (no
    papermill, no figures). Returns the stage's metrics. For tests and quick sweeps; a finished
    stage with the same parameters is reused, as in the notebooks."""
    p = dict(run.params)
    folder = RunFolder(p.pop("run_dir"))
    if run.notebook == "00_data":
        cfg = DataConfig(scale=p.get("scale", "demo"), seed=p.get("seed", 0),
                         taste_breadth=p.get("taste_breadth", 1.0))
        ds = data_stage.run(folder, cfg)
        summary = data_stage.summary(ds, seed=cfg.seed)
        folder.write_metrics(DATA, summary)
        return summary
    if run.notebook == "02_teacher":
        cfg = training.teacher_config(folder, epochs=p.get("epochs"), seed=p.get("seed", 0),
                                      device=p.get("device", "auto"), negatives=p.get("negatives", "shared"),
                                      loss="npair")
        return training.run(folder, TEACHER, cfg, snapshot_epochs=p.get("snapshot_epochs", ()), progress=progress)
    if run.notebook == "03_student":
        cfg = training.student_config(folder, loss=p["loss"], alpha=p.get("alpha"), backbone=p.get("backbone"),
                                      epochs=p.get("epochs"), seed=p.get("seed", 0), device=p.get("device", "auto"),
                                      negatives=p.get("negatives", "shared"), hard_fraction=p.get("hard_fraction"))
        return training.run(folder, p.get("out_name") or training.student_name(folder, cfg), cfg,
                            budget_epochs=p.get("budget_epochs"), progress=progress)
    if run.notebook == "08_false_negatives":
        return fn_stage.run(folder, teacher=p.get("teacher", TEACHER), alphas=p.get("alphas", fn_stage.ALPHAS),
                            seed=p.get("seed", 0), device=p.get("device", "auto"))["metrics"]
    raise ValueError(f"notebook {run.notebook!r} is not part of the false-negative lab")


def write_results(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """``table`` as CSV at ``path`` (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


__all__ = ["ABLATION_BREADTHS", "ALPHAS", "BREADTHS", "EXPERIMENTS", "LabRun", "execute_in_process",
           "fn_ablation_runs", "fn_rate_runs", "gain_summary", "lab_folder", "results", "student_run",
           "unique_runs", "write_results"]
