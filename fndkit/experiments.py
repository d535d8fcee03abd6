"""Reproduce the paper's evidence: Tables 2–5 and Figures 4–7 over seeds, as plans of jobs.

    python -m fndkit paper table2 fig4 --seeds 0 1 2 [--root outputs/paper] [--quick]
    python -m fndkit paper all --seeds 0                # every experiment, one seed
    make paper                                          # every experiment, 3 seeds

Each experiment is a plan builder: per seed, a list of :class:`~fndkit.jobs.Job` s (a stage's
typed ``Params``) that :func:`fndkit.jobs.run_plan` executes — as notebooks by default, so every
run leaves an executed notebook, or in-process (``--via process``, no kernels; with
``--workers K`` in K processes). Runs of one seed share one run folder
(``<root>/<machine>/seed<k>/``): one dataset, one autoencoder and one teacher per seed serve every
student of every experiment, and a stage trained for one experiment (the α = 1.25 FND student of
Fig. 4 is Table 2's FND row) is trained once. Budgets are fair: every student trains until its
validation AUC plateaus (early stopping; the epoch budget is large enough that runs stop on their
own), and the tables report epochs-to-best.

The command line (``python -m fndkit paper``, :func:`fndkit.search.paper_main`) first searches each
method's hyper-parameters on validation (``Sweep.chosen``), then hands this plan's jobs to the study
storage's workers (``run_sweep(..., execute=…)``); called directly, :func:`run_sweep` runs them with
:func:`~fndkit.jobs.run_plan`.

Resumable: a finished run with the same parameters is skipped (``ledger.json``, written by this
process only, or the study storage), an interrupted sweep continues where it stopped, and a failing run stops the sweep
with a message naming it and its executed notebook or traceback. Results: ``results.csv`` (one tidy row per experiment, method, parameters,
seed, protocol, metric) and ``report.html`` (figures laid out like the paper's, mean ± std tables,
Wilcoxon signed-rank tests over users' AUC, and a "claims" section), both under
``<root>/<machine>/``. Results from different machines are kept apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from scipy.stats import false_discovery_control, wilcoxon

from .artifacts import atomic_path, read_json, write_json
from . import fnlab
from .config import PAPER_DEFAULTS, SCALE_PRESETS
from .evaluate import evaluate
from .models.backbones import BACKBONES, count_parameters
from .jobs import VIA, Job, JobError, params_for, run_plan
from .models.registry import MODELS, build_model
from .report import markdown_table
from .repro import machine_label
from .rundir import AUTOENCODER, COLD_START, DATA, TEACHER, RunFolder, resolve_path
from .stages import training  # noqa: F401  (imports every registered model and objective)
from .stages.cold_start import supports_cold_start

METRICS = ("auc", "ndcg_lpae", "ndcg_standard")
ALPHAS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0)                          # Fig. 4
AUGMENTATIONS = ("identity", "erase", "replace")                    # Fig. 5
BATCH_SIZES = (16, 32, 64, 128)                                    # Fig. 7
QUICK_PAIRS = (("erase", "replace"),)                               # --quick: one cell of Fig. 5
# Epoch budgets: large enough that early stopping (the preset's patience) ends every run first.


class ExperimentError(RuntimeError):
    """A run of a sweep failed; the message names the run and its executed notebook."""


@dataclass
class Sweep:
    """Where and how a sweep runs: root folder, machine label, seeds, data scale, quick mode."""

    root: Path
    seeds: tuple[int, ...] = (0,)
    scale: str = "demo"
    quick: bool = False
    device: str = "auto"
    machine: str = ""
    via: str = "notebook"     # how each job runs: "notebook" (executed copies) or "process"
    workers: int = 1          # worker processes (one GPU is shared by them)
    # method -> the hyper-parameters its validation search chose (fndkit.search writes chosen.json);
    # every job of that method trains with them unless the experiment varies one (Fig. 4's α)
    chosen: dict = field(default_factory=dict)
    searched: dict = field(default_factory=dict)  # method -> {stage, seed, val_auc, trials, pruned}
    methods: tuple = ()       # Table 2 / 4 rows restricted to these methods (empty: all)

    def __post_init__(self):
        self.root = resolve_path(self.root)
        if self.quick:
            self.scale = "tiny"
        if self.scale not in SCALE_PRESETS:
            raise ValueError(f"scale={self.scale!r} has no budget; choose one of {sorted(SCALE_PRESETS)}")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds={self.seeds!r} must be one or more integers >= 0")
        self.machine = self.machine or machine_label(self.device)
        if self.via not in VIA:
            raise ValueError(f"via={self.via!r} must be one of {VIA}")

    @property
    def folder(self) -> Path:
        return self.root / self.machine

    def seed_dir(self, seed: int) -> Path:
        return self.folder / f"seed{seed}"

    @property
    def epochs(self) -> int:
        return SCALE_PRESETS[self.scale]["converged_epochs"]


# ------------------------------------------------------------------------------------------------
# Methods and experiments

def baselines(sweep: Sweep | None = None) -> list[str]:
    """Registered models other than the paper's recommender (the Table-2 baselines); a quick sweep
    keeps two of them (one personalized, one not, where registered) so the runner stays cheap."""
    names = sorted(k for k in MODELS if k != "recommender")
    if sweep is not None and sweep.quick:
        pick = [next((n for n in names if MODELS[n].personalized), None),
                next((n for n in names if not MODELS[n].personalized), None)]
        names = [n for n in pick if n]
    return names


def personalized(kind: str) -> bool:
    return bool(MODELS[kind].personalized)


def stage_job(sweep: Sweep, seed: int, kind: str, stage: str, method: str = "", **values) -> Job:
    """The job of stage ``kind`` filling ``stage`` in the seed's run folder (training stages get
    ``out_name=stage``; every stage but the data the sweep's device)."""
    values = {"run_dir": str(sweep.seed_dir(seed)), "seed": seed, **values}
    if kind != "data":
        values.setdefault("device", sweep.device)
    if kind in ("student", "contrastive", "baseline"):
        values["out_name"] = stage
    return Job(params_for(kind, **values), label=stage, method=method)


def renamed(job: Job, stage: str) -> Job:
    """``job`` filling another stage folder."""
    return Job(job.params.replace(out_name=stage), label=stage, method=job.method, shown=job.shown)


def method_run(method: str, sweep: Sweep, seed: int = 0, hard: bool = False, **extra) -> Job:
    """The job that trains ``method`` (npair, bpr, fnd, fnd-cl, or a baseline's name); a
    baseline's stage is its model's name, as 07_baselines names it."""
    params = {"epochs": sweep.epochs, **sweep.chosen.get(method, {}), **extra}
    suffix = "-hard" if hard else ""
    if hard:
        params["hard_fraction"] = 0.5
    if method in ("npair", "bpr", "fnd"):
        return stage_job(sweep, seed, "student", f"student_{method}{suffix}", method, loss=method, **params)
    if method == "fnd-cl":
        return stage_job(sweep, seed, "contrastive", f"contrastive{suffix}", method, **params)
    if method in MODELS:
        return stage_job(sweep, seed, "baseline", f"{method}{suffix}", method, model=method, **params)
    raise ValueError(f"method {method!r} is unknown; choose npair, bpr, fnd, fnd-cl or one of {baselines()}")


def _only(methods: list[str], sweep: Sweep | None) -> list[str]:
    return [m for m in methods if not sweep or not sweep.methods or m in sweep.methods]


def table2_methods(sweep: Sweep | None = None) -> list[str]:
    return _only(["npair", "bpr", "fnd", "fnd-cl", *baselines(sweep)], sweep)


def table4_methods(sweep: Sweep | None = None) -> list[str]:
    paper = ["npair", "fnd"] if sweep is not None and sweep.quick else ["npair", "bpr", "fnd", "fnd-cl"]
    return _only([*paper, *(b for b in baselines(sweep) if personalized(b))], sweep)


def table_value(sweep: Sweep, method: str, name: str, default):
    """The value of ``name`` that Table 2's ``method`` row trains with: the search's choice, else
    ``default`` (the paper's)."""
    return sweep.chosen.get(method, {}).get(name, default)


def student_families(scale_preset: str) -> dict[str, str]:
    """Fig. 6 / Table 5 sizes: the AlexNet family on real data, else the CPU CNN family (students
    ranked by parameter count as XS, S, M)."""
    if scale_preset == "real":
        return {"teacher": "alexnet-large", "XS": "alexnet-xs", "S": "alexnet-s", "M": "alexnet-m"}
    teacher = SCALE_PRESETS[scale_preset]["teacher_backbone"]
    students = sorted((b for b in BACKBONES if b.startswith("cnn-") and b != teacher),
                      key=lambda b: count_parameters(BACKBONES[b](128)))
    return {"teacher": teacher, **dict(zip(("XS", "S", "M"), students))}


def _table2(sweep: Sweep, seed: int) -> list[tuple[str, dict, Job]]:
    return [(m, {}, method_run(m, sweep, seed)) for m in table2_methods(sweep)]


def _table3(sweep: Sweep, seed: int) -> list[tuple[str, dict, Job]]:
    trained = _table2(sweep, seed)
    stages = [TEACHER] + [j.label for m, _, j in trained if m not in MODELS or supports_cold_start(m)]
    cold = stage_job(sweep, seed, "cold_start", COLD_START, models=stages, n_interactions=[1, 5],
                     curve_interactions=[1, 5], repetitions=SCALE_PRESETS[sweep.scale]["cold_repetitions"])
    return trained + [("cold-start", {}, cold)]


def _table4(sweep: Sweep, seed: int) -> list[tuple[str, dict, Job]]:
    return [(m, {"hard_fraction": 0.5}, method_run(m, sweep, seed, hard=True)) for m in table4_methods(sweep)]


def _fig4(sweep: Sweep, seed: int) -> list[tuple[str, dict, Job]]:
    default = table_value(sweep, "fnd", "alpha", PAPER_DEFAULTS["fixed"]["alpha"])  # Table 2's FND row
    runs = [(m, {}, method_run(m, sweep, seed)) for m in ("npair", "bpr")]
    for alpha in (ALPHAS[1:2] if sweep.quick else ALPHAS):
        job = method_run("fnd", sweep, seed, alpha=alpha)
        if alpha != default:
            job = renamed(job, f"student_fnd-alpha{alpha:g}")
        runs.append(("fnd", {"alpha": alpha}, job))
    return runs


def _fig5(sweep: Sweep, seed: int) -> list[tuple[str, dict, Job]]:
    runs = []
    for i, a in enumerate(AUGMENTATIONS):
        for b in AUGMENTATIONS[i:]:
            if a == b == "identity" or (sweep.quick and (a, b) not in QUICK_PAIRS):
                continue  # two identical views teach nothing (paper Fig. 5 leaves it out)
            job = method_run("fnd-cl", sweep, seed, augmentations=f"{a},{b}")
            if f"{a},{b}" != table_value(sweep, "fnd-cl", "augmentations",
                                         PAPER_DEFAULTS["fixed"]["augmentations"]):  # Table 2's FND-CL
                job = renamed(job, f"contrastive-{a}-{b}")
            runs.append(("fnd-cl", {"view1": a, "view2": b}, job))
    return runs


def _fig6(sweep: Sweep, seed: int) -> list[tuple[str, dict, Job]]:
    runs = []
    preset = _preset(sweep)
    sizes = {k: v for k, v in student_families(preset).items() if k != "teacher"}
    for size, backbone in list(sizes.items())[:1] if sweep.quick else sizes.items():
        for method in ("fnd",) if sweep.quick else ("npair", "fnd"):
            job = method_run(method, sweep, seed, backbone=backbone)
            if backbone != SCALE_PRESETS[preset]["student_backbone"]:  # the preset's is Table 2's row
                job = renamed(job, f"student_{method}-{backbone}")
            runs.append((method, {"size": size, "backbone": backbone}, job))
    return runs


def _fig7(sweep: Sweep, seed: int) -> list[tuple[str, dict, Job]]:
    runs = []
    for batch in (BATCH_SIZES[1:2] if sweep.quick else BATCH_SIZES):
        job = method_run("fnd", sweep, seed, batch_size=batch)
        runs.append(("fnd", {"batch_size": batch}, job if batch == 32 else renamed(job, f"student_fnd-batch{batch}")))
    return runs


def _preset(sweep: Sweep) -> str:
    first = RunFolder(sweep.seed_dir(sweep.seeds[0]))
    return first.preset_name() if first.has_data() else sweep.scale


EXPERIMENTS: dict[str, Callable[[Sweep, int], list[tuple[str, dict, Job]]]] = {
    "table2": _table2, "table3": _table3, "table4": _table4, "table5": lambda sweep, seed: [],
    "fig4": _fig4, "fig5": _fig5, "fig6": _fig6, "fig7": _fig7,
}
"""Experiment name -> its plan builder: (sweep, seed) -> (method, parameters shown, Job) triples."""


def register_experiment(name: str, runs: Callable[[Sweep, int], list[tuple[str, dict, Job]]]) -> None:
    """Add an experiment to the runner (e.g. the false-negative lab's)."""
    EXPERIMENTS[name] = runs


def lab_runs(name: str, sweep: Sweep) -> list[Job]:
    """The false-negative lab's runs (``fn_rate``, ``fn_ablation``): their own run folders, one per
    (taste breadth, seed), under ``<root>/<machine>/fnlab/``; a quick sweep keeps one breadth."""
    kwargs = {"breadths": (1.0,)} if sweep.quick else {}
    if sweep.quick and name == "fn_rate":
        kwargs["alphas"] = (1.25,)
    return fnlab.EXPERIMENTS[name](sweep.folder / "fnlab", seeds=sweep.seeds, scale=sweep.scale,
                                   device=sweep.device, **kwargs)


def prerequisites(sweep: Sweep, seed: int) -> list[Job]:
    """What every experiment of a seed stands on: its dataset, autoencoder and teacher."""
    return [stage_job(sweep, seed, "data", DATA, scale=sweep.scale),
            stage_job(sweep, seed, "autoencoder", AUTOENCODER, **({"epochs": 3} if sweep.quick else {})),
            stage_job(sweep, seed, "teacher", TEACHER)]


def plan(names: Iterable[str], sweep: Sweep) -> list[Job]:
    """Every job of the experiments ``names`` over the sweep's seeds: per seed its prerequisites,
    then each experiment's jobs, each stage folder once (the first job asking for it); the lab's
    experiments in their own run folders."""
    jobs: list[Job] = []
    paper = [n for n in names if n in EXPERIMENTS]
    for seed in sweep.seeds if paper else ():
        jobs += prerequisites(sweep, seed)
        for name in paper:
            jobs += [j for _, _, j in EXPERIMENTS[name](sweep, seed)]
    for name in names:
        if name in fnlab.EXPERIMENTS:
            jobs += lab_runs(name, sweep)
    seen, unique = set(), []
    for job in jobs:  # one stage folder, one job: Table 2's FND row is Fig. 4's α = 1.25
        key = (job.run_dir, job.label or job.name())
        if key not in seen:
            seen.add(key)
            unique.append(job)
    return unique


# ------------------------------------------------------------------------------------------------
# Running

def run_sweep(names: Iterable[str], sweep: Sweep, progress: bool = True,
              execute: Callable[[list[Job]], None] | None = None) -> pd.DataFrame:
    """Run every experiment in ``names`` for every seed (skipping finished runs), then write
    ``results.csv`` and ``report.html``; returns the results table.

    ``execute(jobs)``: another executor for the plan's jobs (:mod:`fndkit.search` hands them to the
    study storage's workers, whose record replaces ``ledger.json``); by default :func:`run_plan`."""
    names = list(EXPERIMENTS) + list(fnlab.EXPERIMENTS) if list(names) == ["all"] else list(names)
    unknown = sorted(set(names) - set(EXPERIMENTS) - set(fnlab.EXPERIMENTS))
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; choose from "
                         f"{sorted(EXPERIMENTS) + sorted(fnlab.EXPERIMENTS)} or 'all'")
    sweep.folder.mkdir(parents=True, exist_ok=True)
    ledger_path = sweep.folder / "ledger.json"
    ledger = read_json(ledger_path) if ledger_path.exists() else {}
    started = time.perf_counter()

    def entry(job: Job) -> str:
        return f"{Path(job.run_dir).relative_to(sweep.folder)}/{job.label or job.name()}"

    def finished(job: Job) -> bool:
        return ledger.get(entry(job)) == job.key and RunFolder(job.run_dir).metrics_path(job.label or job.name()).exists()

    def done(job: Job, metrics: dict, record: dict) -> None:  # one writer: this process
        ledger[entry(job)] = job.key
        write_json(ledger_path, ledger)

    try:
        if execute is not None:
            execute(plan(names, sweep))
        else:
            todo = [j for j in plan(names, sweep) if not finished(j)]
            run_plan(todo, via=sweep.via, workers=sweep.workers, progress=progress, on_done=done)
    except JobError as exc:
        raise ExperimentError(str(exc)) from None
    results = collect(names, sweep)
    with atomic_path(sweep.folder / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    info = {"machine": sweep.machine, "seeds": list(sweep.seeds), "scale": sweep.scale, "quick": sweep.quick,
            "experiments": names, "wall_seconds": round(time.perf_counter() - started, 1),
            "platform": platform.platform()}
    prior = read_json(sweep.folder / "sweep.json") if (sweep.folder / "sweep.json").exists() else {}
    info["wall_seconds_total"] = round(prior.get("wall_seconds_total", 0) + info["wall_seconds"], 1)
    write_json(sweep.folder / "sweep.json", info)
    write_report(results, sweep, info)
    return results


# ------------------------------------------------------------------------------------------------
# Results

def collect(names: Iterable[str], sweep: Sweep) -> pd.DataFrame:
    """Tidy results: experiment, method, parameters, seed, protocol, metric, value."""
    rows = []
    for name in names:
        if name in fnlab.EXPERIMENTS:
            lab = fnlab.results(lab_runs(name, sweep), experiment=name)
            for r in lab.to_dict("records"):
                shown = {"taste_breadth": r["taste_breadth"], "fn_rate": r["fn_rate"],
                         "negatives": r["negatives"], "alpha": r["alpha"]}
                rows.append({"experiment": name, "method": r["method"], "stage": r["stage"],
                             "parameters": json.dumps(shown, sort_keys=True), "seed": r["seed"],
                             "protocol": r["protocol"], "metric": r["metric"], "value": r["value"]})
    for seed in sweep.seeds:
        folder = RunFolder(sweep.seed_dir(seed))
        for name in names:
            if name in fnlab.EXPERIMENTS:
                continue
            if name == "table5":
                rows += [{**r, "experiment": "table5", "seed": seed} for r in table5_rows(folder, sweep)]
                continue
            for method, shown, job in EXPERIMENTS[name](sweep, seed):
                stage = job.label
                if not folder.metrics_path(stage).exists():
                    continue
                m = folder.read_metrics(stage)
                base = {"experiment": name, "method": method, "stage": stage,
                        "parameters": json.dumps(shown, sort_keys=True), "seed": seed}
                if stage == COLD_START:
                    for r in m["rows"]:
                        rows.append({**base, "method": r["model"], "parameters": json.dumps(
                            {"strategy": r["strategy"], "n_interactions": r["n_interactions"]}),
                            "protocol": "cold", "metric": "auc", "value": r["auc_mean"]})
                    continue
                for protocol, values in m["test"].items():
                    rows += [{**base, "protocol": protocol, "metric": k, "value": values[k]} for k in METRICS]
                for k in ("best_epoch", "epochs_run", "epoch_seconds", "params_inference", "best_val_auc"):
                    if m.get(k) is not None:
                        rows.append({**base, "protocol": "-", "metric": k, "value": float(m[k])})
    for method, values in sweep.chosen.items():  # the search's choice, named beside the numbers
        if not sweep.methods or method in sweep.methods:
            record = sweep.searched.get(method, {})
            rows.append({"experiment": "search", "method": method, "stage": record.get("stage", ""),
                         "parameters": json.dumps(values, sort_keys=True), "seed": record.get("seed", 0),
                         "protocol": "validation", "metric": "val_auc",
                         "value": record.get("val_auc", float("nan"))})
    return pd.DataFrame(rows, columns=["experiment", "method", "stage", "parameters", "seed", "protocol",
                                       "metric", "value"])


def table5_rows(folder: RunFolder, sweep: Sweep, repeats: int | None = None) -> list[dict]:
    """Parameters, time to score every user's test candidates (mean ± std of ``repeats`` runs,
    item-feature cached) and peak memory, for the teacher and the XS / S / M students."""
    if not folder.has_data():
        return []
    repeats = repeats or (2 if sweep.quick else 10)
    ds = folder.dataset()
    device = "cuda" if sweep.device != "cpu" and torch.cuda.is_available() else "cpu"
    out = []
    for size, backbone in student_families(folder.preset_name()).items():
        torch.manual_seed(0)
        model = build_model("recommender", backbone=backbone, n_users=ds.n_users, dim=128, heads=8).to(device).eval()
        seconds = []
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            evaluate(model, ds, split="test", device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else float("nan")
        base = {"method": size, "stage": backbone, "parameters": json.dumps({"backbone": backbone}),
                "protocol": "-"}
        out += [{**base, "metric": "params", "value": float(count_parameters(model))},
                {**base, "metric": "score_seconds_mean", "value": float(np.mean(seconds))},
                {**base, "metric": "score_seconds_std", "value": float(np.std(seconds))},
                {**base, "metric": "peak_gpu_mib", "value": peak}]
        del model
    return out


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per experiment, method, parameters, protocol and metric."""
    if results.empty:
        return results
    g = results.groupby(["experiment", "method", "parameters", "protocol", "metric"], sort=False)["value"]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def paired_tests(sweep: Sweep) -> pd.DataFrame:
    """Wilcoxon signed-rank tests over users' per-user AUC (pooled over seeds), with the per-seed
    mean differences: FND vs N-pair, FND-CL vs FND (random and hard), each baseline vs FND-CL,
    and w-avg vs avg in cold start."""
    pairs = [("student_fnd", "student_npair", "random"), ("contrastive", "student_fnd", "random"),
             ("student_fnd-hard", "student_npair-hard", "hard"), ("contrastive-hard", "student_fnd-hard", "hard")]
    pairs += [("contrastive", b, "random") for b in baselines(sweep)]
    rows = []
    for a, b, protocol in pairs:
        rows.append(_paired(sweep, a, b, protocol, lambda f, s, p: _stage_users(f, s, p)))
    for model in ("student_fnd", "contrastive", TEACHER):
        for n in (1, 5):
            rows.append(_paired(sweep, f"{model} w-avg n={n}", f"{model} avg n={n}", "cold",
                                lambda f, s, p, model=model, n=n: _cold_users(f, model, s.split()[1], n)))
    return pd.DataFrame([r for r in rows if r is not None])


def _stage_users(folder: RunFolder, stage: str, protocol: str) -> dict | None:
    path = folder.path(stage, "per_user_auc.json")
    if not path.exists():
        return None
    return read_json(path).get(protocol)


def _cold_users(folder: RunFolder, model: str, strategy: str, n: int) -> dict | None:
    if not folder.metrics_path(COLD_START).exists():
        return None
    for r in folder.read_metrics(COLD_START)["rows"]:
        if r["model"] == model and r["strategy"] == strategy and r["n_interactions"] == n:
            return r.get("per_user_auc")
    return None


def _paired(sweep: Sweep, a: str, b: str, protocol: str, per_user) -> dict | None:
    diffs, per_seed = [], []
    for seed in sweep.seeds:
        folder = RunFolder(sweep.seed_dir(seed))
        ua, ub = per_user(folder, a, protocol), per_user(folder, b, protocol)
        if not ua or not ub:
            continue
        users = sorted(set(ua) & set(ub))
        d = np.array([ua[u] - ub[u] for u in users])
        diffs.append(d)
        per_seed.append(float(d.mean()))
    if not diffs:
        return None
    d = np.concatenate(diffs)
    p = float(wilcoxon(d).pvalue) if np.any(d != 0) and d.size >= 2 else float("nan")
    return {"a": a, "b": b, "protocol": protocol, "users": int(d.size), "mean_diff": float(d.mean()),
            "per_seed_diff": per_seed, "wilcoxon_p": p, "a_better_users": int((d > 0).sum()),
            "b_better_users": int((d < 0).sum())}


# ------------------------------------------------------------------------------------------------
# The report

def _value(table: pd.DataFrame, experiment: str, method: str, protocol: str = "random", metric: str = "auc",
           parameters: str = "{}") -> tuple[float, float] | None:
    hit = table[(table.experiment == experiment) & (table.method == method) & (table.protocol == protocol)
                & (table.metric == metric) & (table.parameters == parameters)]
    return (float(hit["mean"].iloc[0]), float(hit["std"].iloc[0])) if len(hit) else None


SIGNIFICANCE = 0.05  # the false discovery rate the claims' verdicts control (Benjamini–Hochberg)


def claims(table: pd.DataFrame, tests: pd.DataFrame, sweep: Sweep) -> list[dict]:
    """The paper's claims, each judged on this sweep's numbers.

    A claim with a paired test is "supported" when its difference has the claimed sign and its
    Wilcoxon p-value, adjusted by Benjamini–Hochberg over every claim's test in this list
    (``scipy.stats.false_discovery_control``), is below :data:`SIGNIFICANCE`: about 17 tests at
    p < 0.05 each would otherwise find something by chance. Both p and the adjusted q are shown.
    No claim selects anything by test numbers: Fig. 4's α is picked by validation AUC."""
    out, pending = [], []

    def test_row(a, b, protocol):
        if tests.empty:
            return None
        hit = tests[(tests.a == a) & (tests.b == b) & (tests.protocol == protocol)]
        return hit.iloc[0] if len(hit) else None

    def judge(claim, a_val, b_val, row):
        if a_val is None or b_val is None:
            out.append({"claim": claim, "verdict": "not run", "numbers": ""})
            return
        p = float(row["wilcoxon_p"]) if row is not None else float("nan")
        out.append({"claim": claim})
        pending.append((len(out) - 1, a_val, b_val, p))

    judge("FND beats the N-pair student (Table 2, random negatives)", _value(table, "table2", "fnd"),
          _value(table, "table2", "npair"), test_row("student_fnd", "student_npair", "random"))
    judge("FND-CL beats FND (Table 2)", _value(table, "table2", "fnd-cl"), _value(table, "table2", "fnd"),
          test_row("contrastive", "student_fnd", "random"))
    for b in baselines(sweep):
        judge(f"FND-CL beats {b} (Table 2)", _value(table, "table2", "fnd-cl"), _value(table, "table2", b),
              test_row("contrastive", b, "random"))
    judge("FND beats N-pair on hard negatives (Table 4)", _value(table, "table4", "fnd", "hard",
          parameters='{"hard_fraction": 0.5}'), _value(table, "table4", "npair", "hard",
          parameters='{"hard_fraction": 0.5}'), test_row("student_fnd-hard", "student_npair-hard", "hard"))
    for n in (1, 5):
        par = lambda s: json.dumps({"strategy": s, "n_interactions": n})
        judge(f"w-avg beats avg in cold start with {n} outfit(s) (Table 3, FND student)",
              _value(table, "table3", "student_fnd", "cold", parameters=par("w-avg")),
              _value(table, "table3", "student_fnd", "cold", parameters=par("avg")),
              test_row(f"student_fnd w-avg n={n}", f"student_fnd avg n={n}", "cold"))
    ps = np.array([p for *_, p in pending], dtype=float)
    qs = np.full(len(ps), np.nan)
    finite = np.isfinite(ps)
    if finite.any():
        qs[finite] = false_discovery_control(ps[finite], method="bh")
    spread = len(sweep.seeds) > 1  # one seed has no spread to show
    show = lambda v: f"{v[0]:.4f} ± {v[1]:.4f}" if spread else f"{v[0]:.4f}"  # noqa: E731
    for (i, a_val, b_val, p), q in zip(pending, qs):
        diff = a_val[0] - b_val[0]
        verdict = ("supported" if diff > 0 and q < SIGNIFICANCE else
                   "direction only (not significant)" if diff > 0 else "not supported")
        out[i].update(verdict=f"{verdict} (BH q = {q:.3g} over {int(finite.sum())} tests)" if np.isfinite(q)
                      else f"{verdict} (no test)",
                      numbers=f"{show(a_val)} vs {show(b_val)} (Δ {diff:+.4f}, Wilcoxon p = {p:.3g}, BH q = {q:.3g})")
    fig4 = table[(table.experiment == "fig4") & (table.method == "fnd") & (table.metric == "best_val_auc")]
    if len(fig4):  # α chosen on the student's validation half; its test AUC is then only reported
        best = fig4.loc[fig4["mean"].idxmax()]
        test = _value(table, "fig4", "fnd", parameters=best.parameters)
        npair = _value(table, "fig4", "npair")
        alpha = json.loads(best.parameters)["alpha"]
        out.append({"claim": "Some α > 1 beats α = 1 and N-pair (Fig. 4; the paper's best: 1.25 / 1.5)",
                    "verdict": f"α by validation AUC = {alpha}",
                    "numbers": (f"validation AUC {best['mean']:.4f}; its test AUC {test[0]:.4f} vs N-pair "
                                f"{npair[0]:.4f}" if test and npair else f"validation AUC {best['mean']:.4f}")})
    return out


def chosen_table(sweep: Sweep) -> pd.DataFrame:
    """One row per searched method: the values its validation search chose, the validation AUC
    they reached (student's validation half, the search seed) and how many trials ran / were pruned."""
    rows = []
    for method, values in sweep.chosen.items():
        if sweep.methods and method not in sweep.methods:
            continue
        record = sweep.searched.get(method, {})
        rows.append({"method": method, "chosen": ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-",
                     "validation AUC": f"{record['val_auc']:.4f}" if "val_auc" in record else "",
                     "trials (pruned)": f"{record.get('trials', '')} ({record.get('pruned', 0)})"})
    return pd.DataFrame(rows, columns=["method", "chosen", "validation AUC", "trials (pruned)"])


def figures(table: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    """Fig. 4 α curve, Fig. 5 heat-map, Fig. 6 and 7 lines, from the summary table."""
    figs = []
    auc = table[(table.metric == "auc") & (table.protocol == "random")]
    f4 = auc[(auc.experiment == "fig4") & (auc.method == "fnd")].copy()
    if len(f4):
        f4["alpha"] = [json.loads(p)["alpha"] for p in f4.parameters]
        fig = px.line(f4.sort_values("alpha"), x="alpha", y="mean", error_y="std", markers=True,
                      title="Fig. 4 — test AUC against α (FND student)")
        for method, dash in (("npair", "dash"), ("bpr", "dot")):
            v = _value(table, "fig4", method)
            if v:
                fig.add_hline(y=v[0], line_dash=dash, annotation_text=method)
        figs.append(("fig4", fig))
    f5 = auc[auc.experiment == "fig5"]
    if len(f5):
        grid = pd.DataFrame(np.nan, index=list(AUGMENTATIONS), columns=list(AUGMENTATIONS))
        for p, m in zip(f5.parameters, f5["mean"]):
            v = json.loads(p)
            grid.loc[v["view1"], v["view2"]] = grid.loc[v["view2"], v["view1"]] = m
        figs.append(("fig5", px.imshow(grid, text_auto=".4f", color_continuous_scale="Blues",
                                       title="Fig. 5 — FND-CL test AUC by augmentation pair")))
    for name, key, title in (("fig6", "size", "Fig. 6 — student size with and without FND"),
                             ("fig7", "batch_size", "Fig. 7 — batch size (linear LR scaling)")):
        f = auc[auc.experiment == name].copy()
        if len(f):
            f[key] = [json.loads(p)[key] for p in f.parameters]
            figs.append((name, px.line(f, x=key, y="mean", error_y="std", color="method", markers=True,
                                       title=title)))
    return figs


def search_plots(sweep: Sweep) -> list[tuple[str, str]]:
    """Optuna's optimisation history and parameter importance per searched method, as HTML
    (``fndkit.search`` leaves them in ``<folder>/search/<method>-*.html``)."""
    folder = sweep.folder / "search"
    return [(p.stem, p.read_text()) for p in sorted(folder.glob("*.html"))] if folder.is_dir() else []


def write_report(results: pd.DataFrame, sweep: Sweep, info: dict) -> Path:
    """``report.html``: figures, mean ± std tables, paired tests and the claims."""
    table = summary(results)
    tests = paired_tests(sweep)
    parts = [f"<h1>fndkit — the paper's evidence on {sweep.machine}</h1>",
             f"<p>Seeds {list(sweep.seeds)}, scale {sweep.scale}{' (quick)' if sweep.quick else ''}; "
             f"wall time of this call {info['wall_seconds']:.0f} s (all calls {info['wall_seconds_total']:.0f} s). "
             f"Mean ± std over seeds; Wilcoxon signed-rank tests over users' per-user AUC, pooled over seeds.</p>"]
    parts.append("<h2>Claims</h2><p>Verdicts at a false discovery rate of 5% (Benjamini–Hochberg over the "
                 "claims' paired tests); no claim selects by test numbers.</p>"
                 + pd.DataFrame(claims(table, tests, sweep)).to_html(index=False))
    chosen = chosen_table(sweep)
    if not chosen.empty:
        parts.append("<h2>Hyper-parameters chosen on validation</h2><p>Each method's search over its declared "
                     "space, trained on the training split and selected by validation AUC on the student's "
                     "validation half (the test set is not read); the chosen point then trains on every "
                     "seed.</p>" + chosen.to_html(index=False))
    first = True
    for name, fig in figures(table):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first))
        first = False
    if not table.empty:
        shown = table.copy()
        shown["value"] = [f"{m:.4f} ± {s:.4f}" for m, s in zip(shown["mean"], shown["std"])]
        for experiment, part in shown.groupby("experiment", sort=False):
            pivot = part.pivot_table(index=["method", "parameters"], columns=["protocol", "metric"],
                                     values="value", aggfunc="first")
            parts.append(f"<h2>{experiment}</h2>" + pivot.to_html())
    for name in (n for n in info["experiments"] if n in fnlab.EXPERIMENTS):
        gains = fnlab.gain_summary(fnlab.results(lab_runs(name, sweep), experiment=name))
        if gains.empty:
            continue
        parts.append(f"<h2>{name}: gain in test AUC over N-pair (same run folder), mean ± std over seeds</h2>"
                     + gains.to_html(index=False, float_format=lambda v: f"{v:.4f}"))
        random = gains[(gains.protocol == "random") & (gains.method != "npair")]
        if len(random):
            fig = px.line(random.sort_values("fn_rate"), x="fn_rate", y="gain_mean", error_y="gain_std",
                          color="method", markers=True,
                          title=f"{name} — gain over N-pair against the false-negative rate")
            parts.append(fig.to_html(full_html=False, include_plotlyjs=first))
            first = False
    if not tests.empty:
        parts.append("<h2>Paired tests</h2>" + tests.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    plots = search_plots(sweep)  # Optuna's figures, written without plotly.js: the page's first copy serves them
    if plots and first:
        parts.append(go.Figure().to_html(full_html=False, include_plotlyjs=True))
    parts += [f"<h3>Search: {name}</h3>" + html for name, html in plots]
    target = sweep.folder / "report.html"
    with atomic_path(target) as tmp:
        tmp.write_text("<html><head><meta charset='utf-8'><title>fndkit paper report</title></head><body>"
                       + "\n".join(parts) + "</body></html>\n")
    with atomic_path(sweep.folder / "results.md") as tmp:
        tmp.write_text(results_markdown(results, sweep, info, table=table, tests=tests) + "\n")
    return target


def _cell(mean: float, std: float, count: int) -> str:
    return f"{mean:.4f} ± {std:.4f}" if count > 1 else f"{mean:.4f}"


def results_markdown(results: pd.DataFrame, sweep: Sweep, info: dict, table: pd.DataFrame | None = None,
                     tests: pd.DataFrame | None = None) -> str:
    """The sweep as markdown (``results.md``, and the README's results section with ``--readme``):
    where and how it ran, the claims, one table per experiment (mean ± std over seeds), the paired
    tests."""
    table = summary(results) if table is None else table
    tests = paired_tests(sweep) if tests is None else tests
    paper = [n for n in info["experiments"] if n in EXPERIMENTS]
    command = (f"python -m fndkit.experiments {' '.join(info['experiments'])} --seeds "
               f"{' '.join(map(str, sweep.seeds))}" + (" --quick" if sweep.quick else ""))
    lines = [f"Machine `{sweep.machine}` ({info.get('platform', '')}); seeds {list(sweep.seeds)}; scale "
             f"{sweep.scale}; `{command}`; {info['wall_seconds_total'] / 60:.0f} min of wall time over all "
             f"calls. Mean ± std over seeds where there are several.", ""]
    if table.empty:
        return "\n".join(lines + ["No run has finished yet."])
    chosen = chosen_table(sweep)
    if not chosen.empty:
        lines += ["**Hyper-parameters chosen by validation AUC** (student's validation half; test never read "
                  "during the search)", "", markdown_table(chosen), ""]
    lines += ["**The paper's claims on these numbers** (verdicts at 5% false discovery rate, "
              "Benjamini–Hochberg)", "",
              markdown_table(pd.DataFrame(claims(table, tests, sweep), columns=["claim", "verdict", "numbers"])), ""]
    for name in paper:
        part = table[table.experiment == name]
        if part.empty:
            continue
        if name == "table3":
            cold = part[part.protocol == "cold"]
            rows = {}
            for r in cold.itertuples():
                p = json.loads(r.parameters)
                rows.setdefault((r.method, p["strategy"]), {})[f"{p['n_interactions']} outfit(s)"] = \
                    _cell(r.mean, r.std, r.count)
            if rows:
                frame = pd.DataFrame([{"model": m, "strategy": st, **v} for (m, st), v in rows.items()])
                lines += [f"**{name}** (cold-start AUC, mean over repetitions)", "", markdown_table(frame), ""]
            continue
        rows = {}
        for r in part.itertuples():
            key = (r.method, "" if r.parameters == "{}" else r.parameters)
            if r.protocol in ("random", "hard") and r.metric in ("auc", "ndcg_lpae"):
                rows.setdefault(key, {})[f"{'AUC' if r.metric == 'auc' else 'NDCG'} {r.protocol}"] = \
                    _cell(r.mean, r.std, r.count)
            elif r.metric in ("best_epoch", "params", "score_seconds_mean", "peak_gpu_mib"):
                rows.setdefault(key, {})[r.metric.replace("_", " ")] = f"{r.mean:.4g}"
        frame = pd.DataFrame([{"method": m, "parameters": p, **v} for (m, p), v in rows.items()]).fillna("")
        order = ["method", "parameters", "AUC random", "NDCG random", "AUC hard", "NDCG hard"]
        frame = frame[[c for c in order if c in frame] + [c for c in frame if c not in order]]
        lines += [f"**{name}**", "", markdown_table(frame), ""]
    if not tests.empty:
        shown = tests[["a", "b", "protocol", "users", "mean_diff", "wilcoxon_p"]]
        lines += ["**Paired tests** (Wilcoxon signed-rank over users' per-user AUC, pooled over seeds)", "",
                  markdown_table(shown), ""]
    return "\n".join(lines).rstrip()


README_START = "<!-- results: written by `python -m fndkit paper ... --readme README.md`; do not edit by hand -->"
README_END = "<!-- results end -->"


def update_readme(path: str | os.PathLike, markdown: str) -> Path:
    """Replace what lies between :data:`README_START` and :data:`README_END` in ``path`` by
    ``markdown`` (atomically); everything else in the file stays as it is."""
    path = Path(path)
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no results block: put the lines {README_START!r} and {README_END!r} "
                         f"where the results belong")
    with atomic_path(path) as tmp:
        tmp.write_text(text[:start + len(README_START)] + "\n" + markdown.rstrip() + "\n" + text[end:])
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fndkit paper", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help=f"experiments: {', '.join(EXPERIMENTS)} or all")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--root", default="outputs/paper")
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--quick", action="store_true", help="tiny data, one seed, tiny epochs (tests)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--via", choices=VIA, default="notebook",
                        help="notebook: an executed copy of every run (default); process: no kernels")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one GPU is shared by them)")
    parser.add_argument("--readme", default=None, help="also write the results into this file's results "
                        "block (README.md)")
    args = parser.parse_args(argv)
    try:
        sweep = Sweep(Path(args.root), seeds=tuple(args.seeds[:1] if args.quick else args.seeds),
                      scale=args.scale, quick=args.quick, device=args.device, via=args.via, workers=args.workers)
        results = run_sweep(args.names, sweep)
        if args.readme:
            update_readme(args.readme, (sweep.folder / "results.md").read_text())
    except (ExperimentError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(results)} result rows: {sweep.folder / 'results.csv'}; report: {sweep.folder / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
