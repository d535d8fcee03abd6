"""The false-negative lab's experiments as plans: when and why does FND help?

Two plan builders, each a list of :class:`~fndkit.plans.execute.Job` s for
:func:`~fndkit.plans.execute.run_plan` (results: :func:`fndkit.results.collect`):

- ``fn_rate`` — the false-negative rate (the generator's ``taste_breadth``, :data:`BREADTHS`:
  about 2% … 30% of random mixtures at demo scale) × {N-pair, FND at three α, the two oracles}:
  how much any false-negative-aware training can gain (``oracle-drop`` / ``oracle-pull``: perfect
  knowledge) and how much FND gains, as the rate grows.
- ``fn_ablation`` — at the benchmark's own rate (and the highest): FND against ``fnd-sign`` (the
  teacher's flags at unit strength) and ``fnd-magnitude`` (its rescaling without the pull), and
  per-pair negatives (eq. 10 literally) against shared ones for N-pair and FND.

Every run folder holds one dataset and one teacher: ``<root>/breadth<b>/seed<k>/`` serves both
experiments. Students train until their validation AUC plateaus and also report the best
checkpoint within a fixed budget (``budget_epochs``). ``08_false_negatives`` closes each folder
with the teacher's flags against the ground truth::

    python -m fndkit lab fn_rate fn_ablation --seeds 0 1 2 --workers 2
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..config import SCALE_PRESETS
from ..results.claims import Comparison
from ..rundir import resolve_path
from ..stages import naming
from .execute import Job, params_for

BREADTHS = (0.7, 1.0, 1.3, 1.7)          # ≈ 2%, 7%, 15%, 30% false negatives at demo scale
ALPHAS = (1.25, 2.0, 3.0)
ABLATION_BREADTHS = (1.0, 1.7)
STUDENT_BACKBONE = "cnn-tiny"             # the demo preset's student (0.27M; its teacher cnn-small 0.51M)
# The lab runs on the built-in benchmark at these scales; its epoch budgets are the scale presets'
# (config.SCALE_PRESETS: converged_epochs, fixed_epochs, snapshot_epochs).
LAB_SCALES = ("tiny", "demo")


def lab_folder(root: str | os.PathLike, breadth: float, seed: int) -> Path:
    """The run folder of one (taste breadth, seed): ``<root>/breadth<b>/seed<k>``."""
    return naming.seed_folder(naming.breadth_folder(resolve_path(root), breadth), int(seed))


def _check(seeds: Iterable[int], scale: str) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds!r} must be one or more integers >= 0")
    if scale not in LAB_SCALES:
        raise ValueError(f"scale={scale!r} has no lab budget; choose one of {sorted(LAB_SCALES)}")
    return [int(s) for s in seeds]


def _folder_runs(root, breadth: float, seed: int, scale: str, device: str, experiment: str) -> list[Job]:
    """Dataset and teacher of one run folder."""
    run_dir = str(lab_folder(root, breadth, seed))
    shown = {"taste_breadth": float(breadth)}
    return [Job(params_for("data", run_dir=run_dir, seed=seed, scale=scale, taste_breadth=float(breadth)),
                shown=shown, experiment=experiment),
            Job(params_for("teacher", run_dir=run_dir, seed=seed, device=device,
                           epochs=SCALE_PRESETS[scale]["converged_epochs"],
                           snapshot_epochs=SCALE_PRESETS[scale]["snapshot_epochs"]),
                method="teacher", shown=shown, experiment=experiment)]


def student_run(root, breadth: float, seed: int, loss: str, scale: str = "demo", alpha: float = 1.25,
                negatives: str = "shared", backbone: str = STUDENT_BACKBONE, device: str = "auto",
                method: str | None = None, experiment: str = "", **extra) -> Job:
    """The 03_student job of one method in one run folder (stage name from the method); ``extra``:
    any other :class:`~fndkit.stages.training.StudentParams` field (lr, batch_size, tau …)."""
    stage = naming.variant(naming.method_stage(loss), **({"alpha": float(alpha)} if loss in naming.ALPHA_LOSSES else {}))
    stage += "-per_pair" if negatives == "per_pair" else ""
    params = params_for("student", run_dir=str(lab_folder(root, breadth, seed)), seed=seed, device=device,
                        loss=loss, alpha=float(alpha), backbone=backbone, negatives=negatives,
                        epochs=SCALE_PRESETS[scale]["converged_epochs"],
                        budget_epochs=SCALE_PRESETS[scale]["fixed_epochs"], out_name=stage,
                        **extra)
    name = method or (f"{loss} α={alpha:g}" if loss in naming.ALPHA_LOSSES else loss)
    if negatives == "per_pair":
        name += " per-pair"
    return Job(params, method=name, experiment=experiment,
               shown={"taste_breadth": float(breadth), "alpha": float(alpha), "negatives": negatives})


def _diagnostics(root, breadth: float, seed: int, device: str, experiment: str) -> Job:
    return Job(params_for("false_negatives", run_dir=str(lab_folder(root, breadth, seed)), seed=seed,
                          device=device, alphas=[0.5, 1.0, *ALPHAS]),
               method="diagnostics", shown={"taste_breadth": float(breadth)}, experiment=experiment)


def fn_rate_runs(root: str | os.PathLike, seeds: Iterable[int] = (0, 1, 2), scale: str = "demo",
                 breadths: Iterable[float] = BREADTHS, alphas: Iterable[float] = ALPHAS,
                 device: str = "auto") -> list[Job]:
    """``fn_rate``: per taste breadth and seed, the dataset, the teacher, then N-pair, FND at each
    α, ``oracle-drop`` and ``oracle-pull`` (the lab's student backbone), then the diagnostics."""
    seeds, name = _check(seeds, scale), "fn_rate"
    runs = []
    for breadth in breadths:
        for seed in seeds:
            runs += _folder_runs(root, breadth, seed, scale, device, name)
            runs.append(student_run(root, breadth, seed, "npair", scale, device=device, experiment=name))
            runs += [student_run(root, breadth, seed, "fnd", scale, alpha=a, device=device, experiment=name) for a in alphas]
            runs += [student_run(root, breadth, seed, loss, scale, device=device, experiment=name)
                     for loss in ("oracle-drop", "oracle-pull")]
            runs.append(_diagnostics(root, breadth, seed, device, name))
    return runs


def fn_ablation_runs(root: str | os.PathLike, seeds: Iterable[int] = (0, 1, 2), scale: str = "demo",
                     breadths: Iterable[float] = ABLATION_BREADTHS, alpha: float = 2.0,
                     device: str = "auto") -> list[Job]:
    """``fn_ablation``: flags or rescaling (FND, ``fnd-sign``, ``fnd-magnitude`` at ``alpha``, the
    oracles), and per-pair against shared negatives for N-pair and FND."""
    seeds, name = _check(seeds, scale), "fn_ablation"
    runs = []
    for breadth in breadths:
        for seed in seeds:
            runs += _folder_runs(root, breadth, seed, scale, device, name)
            for loss in ("npair", "fnd", "fnd-sign", "fnd-magnitude", "oracle-drop", "oracle-pull"):
                runs.append(student_run(root, breadth, seed, loss, scale, alpha=alpha, device=device, experiment=name))
            for loss in ("npair", "fnd"):
                runs.append(student_run(root, breadth, seed, loss, scale, alpha=alpha, negatives="per_pair",
                                        device=device, experiment=name))
            runs.append(_diagnostics(root, breadth, seed, device, name))
    return runs


EXPERIMENTS = {"fn_rate": fn_rate_runs, "fn_ablation": fn_ablation_runs}


def comparisons(jobs: Iterable[Job]) -> list[Comparison]:
    """The lab's claims: each student against N-pair in the same run folders (one taste breadth,
    every seed); the per-pair students are left out."""
    jobs, out = list(jobs), []
    for job in jobs:
        if job.kind == "student" and job.method != "npair" and not job.stage.endswith("per_pair"):
            breadth = job.shown.get("taste_breadth")
            folders = tuple(sorted({j.run_dir for j in jobs if j.shown.get("taste_breadth") == breadth}))
            out.append(Comparison(f"{job.method} − N-pair (breadth {breadth})", job.stage, "student_npair",
                                  folders=folders))
    return list(dict.fromkeys(out))
