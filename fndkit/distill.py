"""The distillation evidence on the rich benchmark: does FND transfer the teacher's knowledge when
the teacher knows more than its student?

``python -m fndkit.distill --out outputs/distill --seeds 0 1 2 --jobs 8`` runs, per seed, in one
run folder ``<out>/seed<s>`` (the data stage with ``appearance="rich"``):

* the teacher: its backbone pre-trained on the attributes of generated items of other seeds
  (:mod:`fndkit.pretrain`, the preset's ``teacher_pretrain``), then trained with N-pair;
* Fig. 6: the preset's XS / S / M students and a teacher-sized student from scratch, each with
  N-pair and with FND at the α chosen for XS;
* α: a small grid (:data:`ALPHAS`) of FND XS students; the one with the best *validation* AUC
  (the student's half, ``val_student``) is α*, never the test AUC;
* Table 2: N-pair, FND (α*) and FND-CL (α*, λ 0.2, the augmentation pair chosen on validation among
  (erase, replace) and (erase, erase); needs the 01_autoencoder stage) for XS;
* the false-negative lab's rows for XS: oracle-drop and oracle-pull (a perfect flagger), fnd-sign
  and fnd-magnitude (ablations of FND's weight).

Every stage writes its usual ``metrics.json`` (``test`` and ``test_clean``: the lists without their
true false negatives). The runner then writes ``<out>/results.json`` (every row) and
``<out>/results.md``: means over seeds, the teacher's margin over XS, each method's gain over
N-pair with a paired Wilcoxon test across users (pooled over seeds, on per-user test AUC).

Stages are jobs with dependencies, run by ``--jobs`` worker processes (one GPU serves several:
each model is small); a finished stage is reused when asked again (run folders), so an interrupted
run continues where it stopped. ``--scale tiny --epochs 1`` is the smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ALPHAS = (1.25, 2.0, 3.0)
CL_PAIRS = ("erase,replace", "erase,erase")
LAB_LOSSES = ("oracle-drop", "oracle-pull", "fnd-sign", "fnd-magnitude")


@dataclass
class Job:
    """One unit of work in a seed's run folder: ``fn(run_dir, **params)`` once ``deps`` are done.
    ``params`` may be a callable of the finished results (e.g. α* from the grid)."""

    name: str
    seed: int
    fn: str                     # name of a function of this module
    params: dict | Callable = field(default_factory=dict)
    deps: tuple[str, ...] = ()


# ---------------------------------------------------------------- jobs (run in worker processes)

def _threads() -> None:
    # several workers share the CPU cores: one thread each unless told otherwise
    import torch
    torch.set_num_threads(int(os.environ.get("FNDKIT_DISTILL_THREADS", "1")))


def job_data(run_dir: str, scale: str, seed: int, image_size: int) -> dict:
    from .config import DataConfig
    from .rundir import RunFolder
    from .stages import data as data_stage

    _threads()
    ds = data_stage.run(run_dir, DataConfig(scale=scale, seed=seed, image_size=image_size, appearance="rich"))
    run = RunFolder(run_dir)
    if not run.metrics_path("data").exists():
        run.write_metrics("data", data_stage.summary(ds, seed=seed))
    m = json.loads(run.metrics_path("data").read_text())
    return {k: m[k] for k in ("false_negative_fraction_random_mixtures", "false_negative_fraction_test_candidates",
                              "true_affinity_auc", "true_affinity_auc_clean") if k in m}


def job_pretrain(run_dir: str, backbone: str, aux_sets: int, epochs: int, seed: int, device: str) -> dict:
    from .artifacts import write_json
    from .pretrain import ItemSet, auxiliary_items, pretrain_backbone, save_backbone_features
    from .repro import resolve_device
    from .rundir import RunFolder

    _threads()
    out = Path(run_dir) / "pretrain" / f"{backbone}.pt"
    report = out.with_suffix(".json")
    if out.exists() and report.exists():
        return {"weights": str(out), **json.loads(report.read_text())}
    ds = RunFolder(run_dir).dataset()
    model, history = pretrain_backbone(auxiliary_items(ds, aux_sets, seed=10_000 + 100 * seed), ItemSet.of(ds),
                                       backbone, epochs=epochs, seed=seed, device=resolve_device(device),
                                       progress=False)
    save_backbone_features(model, out)
    summary = {"backbone": backbone, "aux_sets": aux_sets, "epochs": epochs,
               "held_out_accuracy": history[-1]["held_out_accuracy"],
               "seconds": float(sum(h["seconds"] for h in history))}
    write_json(report, summary)
    return {"weights": str(out), **summary}


def job_autoencoder(run_dir: str, seed: int, device: str, epochs: int | None = None) -> dict:
    from .stages import autoencoder

    _threads()
    kw = {} if epochs is None else {"epochs": epochs}
    autoencoder.run(run_dir, seed=seed, device=device, progress=False, **kw)
    return {}


def job_train(run_dir: str, kind: str, params: dict) -> dict:
    from .stages.training import plan_stage

    _threads()
    m = plan_stage(kind, {"run_dir": run_dir, **params}).run(progress=False)
    return {"stage": m["stage"], "backbone": m["backbone"], "loss": m["loss"], "params": m["params"],
            "best_epoch": m["best_epoch"], "best_val_auc": m["best_val_auc"], "epochs_run": m["epochs_run"],
            "epoch_seconds": m["epoch_seconds"], "test": m["test"], "test_clean": m.get("test_clean", {}),
            **{k: m[k] for k in ("flag_precision", "flag_recall", "flagged_fraction") if k in m}}


def _call(fn: str, run_dir: str, params: dict) -> tuple[dict, float]:
    start = time.perf_counter()
    result = globals()[fn](run_dir, **params)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------- the plan

def plan(seeds, scale: str = "demo", image_size: int = 32, device: str = "auto",
         epochs: int | None = None, alphas=ALPHAS, pairs=CL_PAIRS, lab: bool = True, fig6: bool = True,
         cl: bool = True) -> list[Job]:
    """Every job of the evidence, per seed (see the module docstring). ``epochs`` caps every
    training (None: the preset's budget with early stopping, i.e. to convergence)."""
    from .config import SCALE_PRESETS

    preset = SCALE_PRESETS[f"{scale}-rich"]
    pre = preset.get("teacher_pretrain")
    sizes = preset["students"]
    common = {"device": device, **({"epochs": epochs} if epochs else {})}
    jobs: list[Job] = []
    for s in seeds:
        def J(name, fn, params=None, deps=()):
            jobs.append(Job(name, s, fn, params or {}, tuple(deps)))

        def student(stage, loss="npair", deps=("data",), **extra):
            J(stage, "job_train", lambda r, extra=extra, stage=stage, loss=loss: {
                "kind": "student", "params": {"loss": loss, "seed": s, "out_name": stage, **common,
                                              **{k: (v(r) if callable(v) else v) for k, v in extra.items()}}},
              deps)

        J("data", "job_data", {"scale": scale, "seed": s, "image_size": image_size})
        teacher_deps = ("data",)
        if pre:
            J("pretrain", "job_pretrain", {"backbone": preset["teacher_backbone"], "aux_sets": pre["aux_sets"],
                                           "epochs": pre["epochs"], "seed": s, "device": device}, ("data",))
            teacher_deps = ("pretrain",)
        J("teacher", "job_train", lambda r: {"kind": "teacher", "params": {
            "seed": s, **common, **({"weights": r["pretrain"]["weights"]} if "pretrain" in r else {})}},
          teacher_deps)
        # α on the student's validation half: the FND XS student with the best val AUC
        for a in alphas:
            student(f"XS_fnd-alpha{a:g}", "fnd", ("teacher",), alpha=a, backbone=sizes["XS"])

        def best_alpha(r):
            return max(alphas, key=lambda a: r[f"XS_fnd-alpha{a:g}"]["best_val_auc"])
        grid = tuple(f"XS_fnd-alpha{a:g}" for a in alphas)
        student("XS_npair", backbone=sizes["XS"])
        if fig6:
            for size in ("S", "M"):
                student(f"{size}_npair", backbone=sizes[size])
                student(f"{size}_fnd", "fnd", ("teacher",) + grid, alpha=best_alpha, backbone=sizes[size])
            if preset["teacher_backbone"] not in sizes.values():   # else that size is the teacher's size
                student("T_npair", backbone=preset["teacher_backbone"])
                student("T_fnd", "fnd", ("teacher",) + grid, alpha=best_alpha, backbone=preset["teacher_backbone"])
        if lab:
            for loss in LAB_LOSSES:
                needs = ("teacher",) + grid if loss.startswith("fnd") else ("data",)
                extra = {"alpha": best_alpha} if loss == "fnd-magnitude" else {}
                student(f"XS_{loss}", loss, needs, backbone=sizes["XS"], **extra)
        if cl:
            J("autoencoder", "job_autoencoder", {"seed": s, "device": device,
                                                 **({"epochs": epochs} if epochs else {})}, ("data",))
            for pair in pairs:
                name = "XS_fnd-cl-" + pair.replace(",", "-")
                J(name, "job_train", lambda r, pair=pair, name=name: {"kind": "contrastive", "params": {
                    "loss": "fnd", "lam": 0.2, "augmentations": pair, "alpha": best_alpha(r), "seed": s,
                    "backbone": sizes["XS"], "out_name": name, **common}},
                  ("teacher", "autoencoder") + grid)
    return jobs


def run_jobs(jobs: list[Job], out: Path, workers: int = 1, time_limit: float | None = None, say=print) -> dict:
    """Run ``jobs`` (dependencies first, lowest seed first) with ``workers`` processes; no job
    starts after ``time_limit`` seconds (those running finish). Returns {seed: {name: result}}."""
    start = time.perf_counter()
    results: dict[int, dict] = {}
    done: set[tuple[int, str]] = set()
    pending = list(jobs)
    running = {}
    failed = []
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")   # CUDA and forked workers do not mix
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        while pending or running:
            if time_limit is not None and time.perf_counter() - start > time_limit and pending:
                say(f"[distill] time limit {time_limit:g} s: {len(pending)} jobs not started", flush=True)
                pending = []
            for job in list(pending):
                if all((job.seed, d) in done for d in job.deps):
                    if any((job.seed, d) in failed for d in job.deps):
                        pending.remove(job)
                        failed.append((job.seed, job.name))
                        continue
                    r = results.setdefault(job.seed, {})
                    params = job.params(r) if callable(job.params) else job.params
                    running[pool.submit(_call, job.fn, str(out / f"seed{job.seed}"), params)] = job
                    pending.remove(job)
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                try:
                    result, seconds = fut.result()
                except Exception as exc:   # one failed stage must not lose the others
                    say(f"[distill] seed {job.seed} {job.name} FAILED: {type(exc).__name__}: {exc}", flush=True)
                    failed.append((job.seed, job.name))
                    done.add((job.seed, job.name))
                    continue
                results.setdefault(job.seed, {})[job.name] = result
                done.add((job.seed, job.name))
                line = ""
                if "test" in result:
                    line = " ".join(f"{p} AUC {m['auc']:.4f}" for p, m in result["test"].items())
                    line += " | clean " + " ".join(f"{p} {m['auc']:.4f}" for p, m in result["test_clean"].items())
                say(f"[distill] seed {job.seed} {job.name} done in {seconds:.0f} s {line}", flush=True)
    return results


def collect(out: Path, seeds) -> dict:
    """{seed: {name: result}} read back from the finished stages of ``out/seed<s>`` (what
    :func:`run_jobs` returns, for a run that was cut short or ran elsewhere)."""
    results: dict[int, dict] = {}
    for s in seeds:
        root = out / f"seed{s}"
        if not root.is_dir():
            continue
        r = results.setdefault(s, {})
        for metrics in sorted(root.glob("*/metrics.json")):
            m = json.loads(metrics.read_text())
            name = metrics.parent.name
            if name == "data":
                r["data"] = {k: m[k] for k in ("false_negative_fraction_random_mixtures",
                                               "false_negative_fraction_test_candidates", "true_affinity_auc",
                                               "true_affinity_auc_clean") if k in m}
            elif "test" in m and "best_val_auc" in m:
                r[name] = {k: m.get(k) for k in ("stage", "backbone", "loss", "params", "best_epoch", "best_val_auc",
                                                 "epochs_run", "epoch_seconds", "test", "test_clean")}
                r[name]["test_clean"] = r[name]["test_clean"] or {}
        for report_file in sorted((root / "pretrain").glob("*.json")):
            r["pretrain"] = json.loads(report_file.read_text())
    return results


# ---------------------------------------------------------------- tables

def rows(results: dict) -> list[dict]:
    """One row per (seed, stage, protocol, which list): auc / ndcg_lpae / ndcg_standard."""
    out = []
    for seed, res in sorted(results.items()):
        for name, r in res.items():
            for which in ("test", "test_clean"):
                for protocol, m in r.get(which, {}).items():
                    out.append({"seed": seed, "stage": name, "protocol": protocol, "list": which,
                                "auc": m["auc"], "ndcg_lpae": m["ndcg_lpae"], "ndcg_standard": m["ndcg_standard"],
                                "params": r.get("params"), "best_epoch": r.get("best_epoch"),
                                "best_val_auc": r.get("best_val_auc")})
    return out


def chosen_alpha(results: dict, seed: int) -> float | None:
    """α* of a seed: the grid's FND XS student with the best validation AUC (val_student)."""
    grid = {k: v["best_val_auc"] for k, v in results.get(seed, {}).items() if k.startswith("XS_fnd-alpha")}
    return float(max(grid, key=grid.get).removeprefix("XS_fnd-alpha")) if grid else None


def paired_gain(out: Path, seeds, stage: str | dict, base: str, protocol: str = "random") -> dict | None:
    """Per-user test AUC of ``stage`` minus ``base``, pooled over seeds: mean, n and the two-sided
    Wilcoxon signed-rank p (users are the pairs, as in the paper's per-user metric)."""
    from scipy.stats import wilcoxon

    diffs = []
    for s in seeds:
        st = stage[s] if isinstance(stage, dict) else stage
        if st is None:
            return None
        a, b = (out / f"seed{s}" / x / "per_user_auc.json" for x in (st, base))
        if not (a.exists() and b.exists()):
            return None
        pa, pb = json.loads(a.read_text())[protocol], json.loads(b.read_text())[protocol]
        diffs += [pa[u] - pb[u] for u in pa if u in pb]
    diffs = np.asarray(diffs)
    p = float(wilcoxon(diffs).pvalue) if np.any(diffs != 0) else 1.0
    return {"mean": float(diffs.mean()), "n_users": int(diffs.size), "wilcoxon_p": p}


def report(results: dict, out: Path, seeds) -> str:
    """results.md: means (± sd over seeds) per stage and the teacher's margin and each gain."""
    import pandas as pd

    table = pd.DataFrame(rows(results))
    if table.empty:
        return "no finished stage\n"
    alpha_star = {s: chosen_alpha(results, s) for s in seeds}
    lines = [f"# Distillation benchmark (rich appearance), seeds {list(seeds)}", ""]
    for s in seeds:
        grid = {k: round(v["best_val_auc"], 4) for k, v in results.get(s, {}).items() if k.startswith("XS_fnd-alpha")}
        if grid:
            lines.append(f"- seed {s}: validation AUC (val_student) of the α grid {grid}: α* = {alpha_star[s]:g}")
    for s, r in results.items():
        if "data" in r:
            lines.append(f"- seed {s}: data {json.dumps(r['data'])}")
        if "pretrain" in r:
            lines.append(f"- seed {s}: teacher pre-training held-out attribute accuracy "
                         f"{ {k: round(v, 3) for k, v in r['pretrain']['held_out_accuracy'].items()} }")
    lines.append("")
    for protocol in ("random", "hard"):
        sub = table[table.protocol == protocol]
        if sub.empty:
            continue
        stats = sub.groupby(["stage", "list"])["auc"].agg(["mean", "std", "count"])
        lines += [f"## test AUC, {protocol} negatives (mean over seeds; sd; seeds)", "",
                  "| stage | AUC | clean AUC | sd | sd clean | seeds |", "|---|---|---|---|---|---|"]
        for stage in sub.stage.unique():
            t = stats.loc[(stage, "test")]
            c = stats.loc[(stage, "test_clean")] if (stage, "test_clean") in stats.index else {"mean": float("nan"), "std": float("nan")}
            lines.append(f"| {stage} | {t['mean']:.4f} | {c['mean']:.4f} | {t['std']:.4f} | {c['std']:.4f} | "
                         f"{int(t['count'])} |")
        lines.append("")
    gains = []
    for stage in sorted({r["stage"] for r in rows(results)}):
        if stage.startswith("XS_") and stage != "XS_npair":
            g = paired_gain(out, seeds, stage, "XS_npair")
            if g:
                gains.append(f"| {stage} − XS_npair | {100 * g['mean']:+.2f} | {g['n_users']} | {g['wilcoxon_p']:.3g} |")
    star = {s: (f"XS_fnd-alpha{a:g}" if a is not None else None) for s, a in alpha_star.items()}
    g = paired_gain(out, seeds, star, "XS_npair")
    if g:
        gains.insert(0, f"| XS_fnd (α* chosen on validation) − XS_npair | {100 * g['mean']:+.2f} | {g['n_users']} | "
                        f"{g['wilcoxon_p']:.3g} |")
    g = paired_gain(out, seeds, "teacher", "XS_npair")
    if g:
        gains.insert(0, f"| teacher − XS_npair | {100 * g['mean']:+.2f} | {g['n_users']} | {g['wilcoxon_p']:.3g} |")
    if gains:
        lines += ["## paired per-user test AUC differences (random negatives, pooled over seeds)", "",
                  "| difference | points | users | Wilcoxon p |", "|---|---|---|---|", *gains, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fndkit.distill", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/distill")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scale", default="demo", choices=("tiny", "demo"))
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--epochs", type=int, default=None, help="cap every training (smoke runs); default: to convergence")
    ap.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    ap.add_argument("--time-limit", type=float, default=None, help="seconds after which no job starts")
    ap.add_argument("--collect-only", action="store_true", help="only write the tables from finished stages")
    ap.add_argument("--only", choices=("core", "all"), default="all",
                    help="core: teacher, the α grid and XS N-pair (the teacher's margin and FND's gain); all: "
                         "also Fig. 6 sizes, FND-CL and the lab's rows")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full = args.only == "all"
    jobs = plan(args.seeds, args.scale, args.image_size, args.device, args.epochs, tuple(args.alphas),
                lab=full, fig6=full, cl=full)
    start = time.perf_counter()
    if not args.collect_only:
        run_jobs(jobs, out, workers=args.jobs, time_limit=args.time_limit)
    results = collect(out, args.seeds)   # every finished stage, also those of an earlier, cut-short run
    from .artifacts import write_json

    write_json(out / "results.json", {"argv": sys.argv[1:], "seconds": time.perf_counter() - start,
                                      "results": {str(k): v for k, v in results.items()}})
    text = report(results, out, args.seeds)
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
