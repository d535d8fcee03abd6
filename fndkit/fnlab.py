"""The false-negative lab's experiments: when and why does FND help? (issue 13)

Two experiments, each a plan: a list of :class:`~fndkit.jobs.Job` s (a stage's typed ``Params``)
that :func:`fndkit.jobs.run_plan` executes, and a tidy results table read back from the run folders:

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

:func:`run_lab` runs a plan with the one executor, in this process or in ``jobs`` worker
processes (one run folder's dataset and teacher first, then its students side by side; a GPU is
shared by them; on CPU each gets ``cpu_count // jobs`` threads). Its command line writes the lab's
tables and a summary::

    python -m fndkit lab fn_rate fn_ablation --seeds 0 1 2 --jobs 12 --device cuda

The paper's runner (``python -m fndkit paper fn_rate``) runs the same jobs as notebooks, leaving an
executed copy of each.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from .artifacts import atomic_path, read_json, write_json
from .config import SCALE_PRESETS
from .jobs import Job, PlanOutcome, execute_job, params_for, run_plan, unique_jobs
from .report import markdown_table
from .repro import machine_label
from .rundir import DATA, FALSE_NEGATIVES, TEACHER, RunFolder, resolve_path
from .stages import training

BREADTHS = (0.7, 1.0, 1.3, 1.7)          # ≈ 2%, 7%, 15%, 30% false negatives at demo scale
ALPHAS = (1.25, 2.0, 3.0)
ABLATION_BREADTHS = (1.0, 1.7)
STUDENT_BACKBONE = "cnn-tiny"             # the demo preset's student (0.27M; its teacher cnn-small 0.51M)
# The lab runs on the built-in benchmark at these scales; its epoch budgets are the scale presets'
# (config.SCALE_PRESETS: converged_epochs, fixed_epochs, snapshot_epochs).
LAB_SCALES = ("tiny", "demo")
METRICS = ("auc", "ndcg_lpae")


# A lab plan is a list of jobs; the old names stay for one release.
LabRun = Job
LabOutcome = PlanOutcome


def lab_folder(root: str | os.PathLike, breadth: float, seed: int) -> Path:
    """The run folder of one (taste breadth, seed): ``<root>/breadth<b>/seed<k>``."""
    return resolve_path(root) / f"breadth{breadth:g}" / f"seed{int(seed)}"


def _check(seeds: Iterable[int], scale: str) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds!r} must be one or more integers >= 0")
    if scale not in LAB_SCALES:
        raise ValueError(f"scale={scale!r} has no lab budget; choose one of {sorted(LAB_SCALES)}")
    return [int(s) for s in seeds]


def _folder_runs(root, breadth: float, seed: int, scale: str, device: str) -> list[Job]:
    """Dataset and teacher of one run folder."""
    run_dir = str(lab_folder(root, breadth, seed))
    shown = {"taste_breadth": float(breadth)}
    return [Job(params_for("data", run_dir=run_dir, seed=seed, scale=scale, taste_breadth=float(breadth)),
                label=DATA, shown=shown),
            Job(params_for("teacher", run_dir=run_dir, seed=seed, device=device, epochs=SCALE_PRESETS[scale]["converged_epochs"],
                           snapshot_epochs=SCALE_PRESETS[scale]["snapshot_epochs"]), label=TEACHER, method="teacher", shown=shown)]


def student_run(root, breadth: float, seed: int, loss: str, scale: str = "demo", alpha: float = 1.25,
                negatives: str = "shared", backbone: str = STUDENT_BACKBONE, device: str = "auto",
                method: str | None = None, **extra) -> Job:
    """The 03_student job of one method in one run folder (stage name from the method); ``extra``:
    any other :class:`~fndkit.stages.training.StudentParams` field (lr, batch_size, tau …)."""
    stage = training.default_student_name(loss, alpha) + ("-per_pair" if negatives == "per_pair" else "")
    if loss == "fnd" and alpha == 1.25:
        stage += "-alpha1.25"  # every α explicit: the lab compares them
    params = params_for("student", run_dir=str(lab_folder(root, breadth, seed)), seed=seed, device=device,
                        loss=loss, alpha=float(alpha), backbone=backbone, negatives=negatives,
                        epochs=SCALE_PRESETS[scale]["converged_epochs"],
                        budget_epochs=SCALE_PRESETS[scale]["fixed_epochs"], out_name=stage,
                        **extra)
    name = method or (f"{loss} α={alpha:g}" if loss in training.ALPHA_LOSSES else loss)
    if negatives == "per_pair":
        name += " per-pair"
    return Job(params, label=stage, method=name,
               shown={"taste_breadth": float(breadth), "alpha": float(alpha), "negatives": negatives})


def _diagnostics(root, breadth: float, seed: int, device: str) -> Job:
    return Job(params_for("false_negatives", run_dir=str(lab_folder(root, breadth, seed)), seed=seed,
                          device=device, alphas=[0.5, 1.0, *ALPHAS]),
               label=FALSE_NEGATIVES, shown={"taste_breadth": float(breadth)})


def fn_rate_runs(root: str | os.PathLike, seeds: Iterable[int] = (0, 1, 2), scale: str = "demo",
                 breadths: Iterable[float] = BREADTHS, alphas: Iterable[float] = ALPHAS,
                 device: str = "auto") -> list[Job]:
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
                     device: str = "auto") -> list[Job]:
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


def unique_runs(runs: Iterable[Job]) -> list[Job]:
    """Each job once, in first-seen order: experiments share folders and stages."""
    return unique_jobs(runs)


# --------------------------------------------------------------------------------------------
# results


def results(runs: Iterable[Job], experiment: str = "") -> pd.DataFrame:
    """Tidy rows from the finished students of ``runs``: experiment, method, stage, taste_breadth,
    fn_rate (the folder's measured rate), negatives, alpha, seed, protocol, metric, value.
    Metrics: auc and ndcg_lpae per protocol (converged), ``auc_budget`` (best within the fixed
    budget), and best_epoch / epochs_run / stopped_early / epoch_seconds (protocol "-"). The
    folder's teacher gives rows of method ``teacher`` (how far above the students it stands). Runs
    not finished yet are left out."""
    rows = []
    for r in runs:
        if r.kind not in ("student", "teacher"):
            continue
        folder = RunFolder(r.run_dir)
        if not folder.metrics_path(r.label).exists():
            continue
        m = folder.read_metrics(r.label)
        data = folder.read_metrics(DATA) if folder.metrics_path(DATA).exists() else {}
        base = {"experiment": experiment, "method": r.method, "stage": r.label,
                "taste_breadth": r.shown.get("taste_breadth"),
                "fn_rate": data.get("false_negative_fraction_random_mixtures"),
                "negatives": getattr(r.params, "negatives", "shared"), "alpha": getattr(r.params, "alpha", None),
                "seed": r.params.seed}
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
    gain_std, seeds (those where the baseline ran too: the gain's count). The baseline's own rows
    have gain 0.
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
    joined = joined.assign(paired_seed=joined["seed"].where(joined["gain"].notna()))  # N-pair ran there too
    out = (joined.groupby(["method", "taste_breadth", "protocol"], sort=False)
           .agg(fn_rate=("fn_rate", "mean"), value_mean=("value", "mean"), gain_mean=("gain", "mean"),
                gain_std=("gain", "std"), seeds=("paired_seed", "nunique")).reset_index())
    out["gain_std"] = out["gain_std"].fillna(0.0)
    return out


def execute_in_process(run: Job, progress: bool = False) -> dict:
    """One job in this process (the executor's ``via="process"``): the stage's ``execute``."""
    return execute_job(run, via="process", progress=progress)


def write_results(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """``table`` as CSV at ``path`` (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def run_label(run: Job) -> str:
    """``breadth1/seed0/student_fnd-alpha2`` (the folder's last two parts and the stage)."""
    return run.describe()


def run_lab(runs: Iterable[Job], jobs: int = 1, time_limit: float | None = None,
            progress: bool = True) -> PlanOutcome:
    """Execute a lab plan in this process (``jobs`` = 1) or in ``jobs`` worker processes
    (:func:`fndkit.jobs.run_plan`, ``via="process"``). A failing run is reported and the rest go
    on (a folder whose dataset or teacher failed starts nothing more). ``time_limit`` (seconds):
    no run starts after it; runs already going finish."""
    return run_plan(runs, via="process", workers=jobs, time_limit=time_limit, progress=progress,
                    on_failure="continue")


# --------------------------------------------------------------------------------------------
# the lab's tables and summary


def diagnostics(runs: Iterable[Job]) -> pd.DataFrame:
    """Per run folder: the measured false-negative rate, the ceiling (test AUC of ranking by the
    true affinity), and the teacher's flags against the truth (``08_false_negatives``)."""
    rows = []
    for run_dir in dict.fromkeys(r.run_dir for r in runs):
        folder = RunFolder(run_dir)
        if not folder.metrics_path(DATA).exists():
            continue
        data = folder.read_metrics(DATA)
        lab = next((r for r in runs if r.run_dir == run_dir), None)
        row = {"taste_breadth": lab.shown.get("taste_breadth") if lab else None,
               "seed": lab.params.seed if lab else None,
               "fn_rate": data.get("false_negative_fraction_random_mixtures"),
               **{f"ceiling_auc_{k}": v for k, v in (data.get("true_affinity_auc") or {}).items()}}
        if folder.metrics_path(FALSE_NEGATIVES).exists():
            fn = folder.read_metrics(FALSE_NEGATIVES)
            row.update({k: fn.get(k) for k in ("flagged_fraction", "flag_precision", "flag_recall",
                                               "d_true_fn_mean", "d_true_negative_mean",
                                               "teacher_true_affinity_spearman")})
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    n = len(values)
    return f"{values.mean():+.4f} ± {values.std(ddof=1):.4f} ({n})" if n > 1 else f"{values.mean():+.4f} (1)"


def summary_markdown(table: pd.DataFrame, diag: pd.DataFrame, info: dict) -> str:
    """The lab's results as markdown: gain over N-pair (test AUC, mean ± std over seeds) per method
    and false-negative rate at convergence and within the fixed budget, epochs to best, the teacher
    against the truth."""
    wall = f" · {info['wall_seconds']:.0f} s wall" if "wall_seconds" in info else ""
    out = [f"# False-negative lab · {info.get('machine', '')} · seeds {info.get('seeds')}{wall} · "
           f"{info.get('runs_done', '?')} runs", ""]
    unique = table.drop_duplicates(subset=["stage", "taste_breadth", "seed", "protocol", "metric"])
    for metric, title in (("auc", "at convergence (early stopping)"), ("auc_budget", "within the fixed budget")):
        part = unique[unique.metric == metric]
        for protocol in ("random", "hard"):
            sub = part[part.protocol == protocol]
            if sub.empty:
                continue
            base = sub[sub.method == "npair"].set_index(["taste_breadth", "seed"])["value"]
            sub = sub.join(base.rename("npair"), on=["taste_breadth", "seed"]).dropna(subset=["npair"])
            sub = sub.assign(gain=sub["value"] - sub["npair"])
            rate = unique[(unique.metric == "auc")].groupby("taste_breadth")["fn_rate"].mean()
            pivot = sub.groupby(["method", "taste_breadth"])["gain"].apply(_mean_std).unstack().fillna("")
            pivot.columns = [f"{rate.get(b, float('nan')):.1%} FN (breadth {b:g})" for b in pivot.columns]
            npair = sub[sub.method == "npair"].groupby("taste_breadth")["value"].agg(["mean", "std"])
            out += [f"## Test AUC gain over N-pair, {protocol} negatives, {title} (mean ± std (seeds))", "",
                    "N-pair itself: " + ", ".join(f"breadth {b:g}: {m:.4f} ± {sd:.4f}"
                                                  for b, (m, sd) in npair.iterrows()), "",
                    _table(pivot), ""]
    epochs = unique[unique.metric == "best_epoch"].groupby("method")["value"].agg(["mean", "min", "max"])
    if not epochs.empty:
        out += ["## Epochs to best (all folders)", "", _table(epochs.round(1)), ""]
    if not diag.empty:
        cols = [c for c in ("fn_rate", "ceiling_auc_random", "ceiling_auc_hard", "flagged_fraction",
                            "flag_precision", "flag_recall", "d_true_fn_mean", "d_true_negative_mean")
                if c in diag]
        out += ["## Data and the teacher's flags (mean over seeds)", "",
                _table(diag.groupby("taste_breadth")[cols].mean().round(4)), ""]
    return "\n".join(out)


def _table(frame: pd.DataFrame) -> str:
    return markdown_table(frame.reset_index())


def collect(names: Iterable[str], root, seeds: Iterable[int], scale: str = "demo", device: str = "auto",
            **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results (every experiment's rows) and diagnostics of the plans ``names`` under ``root``."""
    plans = {n: EXPERIMENTS[n](root, seeds=seeds, scale=scale, device=device, **kwargs) for n in names}
    table = pd.concat([results(runs, experiment=n) for n, runs in plans.items()], ignore_index=True)
    return table, diagnostics([r for runs in plans.values() for r in runs])


def merge_tables(folders: Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The tables of several labs' folders (``results.csv``, ``diagnostics.csv``, ``lab.json`` as
    :func:`main` writes them, e.g. seeds run on different machines), each row labelled with its
    folder's machine; a (stage, breadth, seed) found in two folders is taken from the first."""
    tables, diags, machines = [], [], {}
    for folder in map(resolve_path, folders):
        if not (folder / "results.csv").exists():
            raise ValueError(f"{folder} has no results.csv: give folders that `python -m fndkit.fnlab` "
                             f"wrote its tables into")
        info = read_json(folder / "lab.json") if (folder / "lab.json").exists() else {}
        machine = info.get("machine") or folder.name
        t = pd.read_csv(folder / "results.csv")
        t["machine"] = machine
        tables.append(t)
        if (folder / "diagnostics.csv").exists():
            d = pd.read_csv(folder / "diagnostics.csv")
            diags.append(d.assign(machine=machine))
        machines[machine] = sorted(int(x) for x in t["seed"].dropna().unique())
    table = pd.concat(tables, ignore_index=True)
    order = table.drop_duplicates(subset=["stage", "taste_breadth", "seed"])[["stage", "taste_breadth", "seed",
                                                                              "machine"]]
    table = table.merge(order, on=["stage", "taste_breadth", "seed", "machine"])  # first folder wins
    diag = pd.concat(diags, ignore_index=True).drop_duplicates(subset=["taste_breadth", "seed"]) if diags else \
        pd.DataFrame()
    label = " + ".join(f"{m} (seeds {s})" for m, s in machines.items())
    return table, diag, {"machine": label, "seeds": sorted({x for s in machines.values() for x in s}),
                         "runs_done": int(len(order))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fndkit lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(EXPERIMENTS), help="experiments")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", default="outputs/fnlab", help="run folders: <root>/breadth<b>/seed<k>")
    parser.add_argument("--scale", default="demo", choices=sorted(LAB_SCALES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", "--jobs", dest="jobs", type=int, default=1,
                        help="worker processes (one GPU is shared by them)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds after which no run starts")
    parser.add_argument("--breadths", nargs="+", type=float, default=None,
                        help=f"taste breadths (default: each experiment's own, {BREADTHS})")
    parser.add_argument("--collect-only", action="store_true", help="only read finished runs into the tables")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="run nothing: merge the tables these lab folders hold (e.g. seeds run on "
                             "different machines) into --root")
    args = parser.parse_args(argv)
    root = resolve_path(args.root)
    if args.merge:
        try:
            table, diag, info = merge_tables(args.merge)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if any(resolve_path(m) == root for m in args.merge):
            print(f"error: --root {root} is one of the merged folders; give another", file=sys.stderr)
            return 2
        table = table[table["experiment"].isin(args.names) & table["seed"].isin(args.seeds)]
        root.mkdir(parents=True, exist_ok=True)
        return _write_tables(root, table, diag, {**info, "experiments": args.names, "merged": args.merge}, 0)
    kwargs = {"breadths": tuple(args.breadths)} if args.breadths else {}
    try:
        plans = [r for n in args.names for r in EXPERIMENTS[n](root, seeds=args.seeds, scale=args.scale,
                                                               device=args.device, **kwargs)]
        outcome = LabOutcome()
        if not args.collect_only:
            outcome = run_lab(plans, jobs=args.jobs, time_limit=args.time_limit, progress=not args.no_progress)
            print(outcome.describe(), flush=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table, diag = collect(args.names, root, args.seeds, args.scale, args.device, **kwargs)
    if table.empty and (root / "results.csv").exists():
        print(f"error: no finished run of {args.names} (seeds {args.seeds}) under {root}; its results.csv "
              f"and the other tables are left as they are (wrong --root, --seeds or --scale?)", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    machine = machine_label(args.device)
    info = {"experiments": args.names, "seeds": args.seeds, "scale": args.scale, "jobs": args.jobs,
            "machine": machine, "platform": platform.platform(), "torch": torch.__version__,
            "wall_seconds": round(outcome.seconds, 1), "runs_done": len(outcome.done),
            "runs_failed": [e for _, e in outcome.failed],
            "runs_not_started": [run_label(r) for r in outcome.not_started]}
    if args.collect_only and (root / "lab.json").exists():  # keep what the run itself recorded
        info = read_json(root / "lab.json")
    else:
        write_json(root / "lab.json", info)
    return _write_tables(root, table, diag, info, 1 if outcome.failed else 0)


def _write_tables(root: Path, table: pd.DataFrame, diag: pd.DataFrame, info: dict, code: int) -> int:
    write_results(table, root / "results.csv")
    write_results(gain_summary(table.drop_duplicates(subset=["stage", "taste_breadth", "seed", "protocol",
                                                             "metric"])), root / "gains.csv")
    write_results(diag, root / "diagnostics.csv")
    if "merged" in info:
        write_json(root / "lab.json", info)
    text = summary_markdown(table, diag, info)
    with atomic_path(root / "summary.md") as tmp:
        tmp.write_text(text + "\n")
    print(text)
    print(f"\ntables: {root / 'results.csv'}, {root / 'gains.csv'}, {root / 'diagnostics.csv'}; "
          f"summary: {root / 'summary.md'}")
    return code


__all__ = ["ABLATION_BREADTHS", "ALPHAS", "BREADTHS", "EXPERIMENTS", "LabOutcome", "LabRun", "collect",
           "diagnostics", "execute_in_process", "merge_tables", "run_lab", "summary_markdown",
           "fn_ablation_runs", "fn_rate_runs", "gain_summary", "lab_folder", "results", "student_run",
           "unique_runs", "write_results"]


if __name__ == "__main__":
    sys.exit(main())
