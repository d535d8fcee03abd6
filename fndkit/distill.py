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

The plan is two lists of jobs (:class:`fndkit.jobs.Job`) run by :func:`fndkit.jobs.run_plan` in
``--jobs`` worker processes (one GPU serves several: each model is small): first every stage that
does not need α*, then — α* read from the grid's validation AUCs — the ones that do. A finished
stage is reused when asked again (run folders), so an interrupted run continues where it stopped.
``--scale tiny --epochs 1`` is the smoke test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from .artifacts import write_json
from .config import SCALE_PRESETS
from .jobs import Job, params_for, run_plan
from .stages.pretrain import weights_path

ALPHAS = (1.25, 2.0, 3.0)
CL_PAIRS = ("erase,replace", "erase,erase")
LAB_LOSSES = ("oracle-drop", "oracle-pull", "fnd-sign", "fnd-magnitude")
NEEDS_ALPHA_STAR = ("fnd-magnitude",)   # lab rows that take the chosen α (fnd-sign's flags ignore α)


def seed_dir(out: str | Path, seed: int) -> str:
    return str(Path(out) / f"seed{seed}")


def _student(out, seed: int, stage: str, common: dict, loss: str = "npair", **extra) -> Job:
    return Job(params_for("student", run_dir=seed_dir(out, seed), loss=loss, seed=seed, out_name=stage,
                          **common, **extra), label=stage)


def plan(out: str | Path, seeds, scale: str = "demo", image_size: int = 32, device: str = "auto",
         epochs: int | None = None, alphas=ALPHAS, lab: bool = True, fig6: bool = True,
         cl: bool = True) -> list[Job]:
    """Every job that does not need α*, per seed (see the module docstring): data, the teacher's
    pre-training, autoencoder, the teacher, the α grid of FND XS students, the N-pair students,
    the lab rows without α. ``epochs`` caps every training (None: the preset's budget with early
    stopping, i.e. to convergence)."""
    preset = SCALE_PRESETS[f"{scale}-rich"]
    pre, sizes, teacher_backbone = preset.get("teacher_pretrain"), preset["students"], preset["teacher_backbone"]
    common = {"device": device, **({"epochs": epochs} if epochs else {})}
    jobs: list[Job] = []
    for s in seeds:
        run_dir = seed_dir(out, s)
        jobs.append(Job(params_for("data", run_dir=run_dir, scale=scale, seed=s, image_size=image_size,
                                   appearance="rich"), label="data"))
        teacher = {}
        if pre:
            jobs.append(Job(params_for("pretrain", run_dir=run_dir, backbone=teacher_backbone,
                                       aux_sets=pre["aux_sets"], epochs=pre["epochs"], seed=s, device=device),
                            label="pretrain"))
            teacher["weights"] = str(weights_path(run_dir, teacher_backbone))
        jobs.append(Job(params_for("teacher", run_dir=run_dir, seed=s, **common, **teacher), label="teacher"))
        jobs += [_student(out, s, f"XS_fnd-alpha{a:g}", common, "fnd", alpha=a, backbone=sizes["XS"])
                 for a in alphas]
        jobs.append(_student(out, s, "XS_npair", common, backbone=sizes["XS"]))
        if fig6:
            jobs += [_student(out, s, f"{size}_npair", common, backbone=sizes[size]) for size in ("S", "M")]
            if teacher_backbone not in sizes.values():   # else that size is the teacher's size
                jobs.append(_student(out, s, "T_npair", common, backbone=teacher_backbone))
        if lab:
            jobs += [_student(out, s, f"XS_{loss}", common, loss, backbone=sizes["XS"])
                     for loss in LAB_LOSSES if loss not in NEEDS_ALPHA_STAR]
        if cl:
            jobs.append(Job(params_for("autoencoder", run_dir=run_dir, seed=s, device=device,
                                       **({"epochs": epochs} if epochs else {})), label="autoencoder"))
    return jobs


def plan_with_alpha(out: str | Path, alpha_star: dict[int, float], scale: str = "demo", device: str = "auto",
                    epochs: int | None = None, pairs=CL_PAIRS, lab: bool = True, fig6: bool = True,
                    cl: bool = True) -> list[Job]:
    """The jobs that take α* (per seed, chosen on the student's validation half by
    :func:`chosen_alpha`): FND for the other sizes, the lab rows with α, FND-CL per pair."""
    preset = SCALE_PRESETS[f"{scale}-rich"]
    sizes, teacher_backbone = preset["students"], preset["teacher_backbone"]
    common = {"device": device, **({"epochs": epochs} if epochs else {})}
    jobs: list[Job] = []
    for s, alpha in alpha_star.items():
        if fig6:
            jobs += [_student(out, s, f"{size}_fnd", common, "fnd", alpha=alpha, backbone=sizes[size])
                     for size in ("S", "M")]
            if teacher_backbone not in sizes.values():
                jobs.append(_student(out, s, "T_fnd", common, "fnd", alpha=alpha, backbone=teacher_backbone))
        if lab:
            jobs += [_student(out, s, f"XS_{loss}", common, loss, alpha=alpha, backbone=sizes["XS"])
                     for loss in NEEDS_ALPHA_STAR]
        if cl:
            for pair in pairs:
                stage = "XS_fnd-cl-" + pair.replace(",", "-")
                jobs.append(Job(params_for("contrastive", run_dir=seed_dir(out, s), loss="fnd", lam=0.2,
                                           augmentations=pair, alpha=alpha, seed=s, backbone=sizes["XS"],
                                           out_name=stage, **common), label=stage))
    return jobs


def run(out: Path, seeds, workers: int = 1, time_limit: float | None = None, progress: bool = True,
        **options) -> dict:
    """Both phases of the plan with the one executor; no job starts after ``time_limit`` seconds
    (over both). Returns {seed: {stage: result}} (:func:`collect`)."""
    start = time.perf_counter()
    scale, device, epochs = options.get("scale", "demo"), options.get("device", "auto"), options.get("epochs")
    flags = {k: options[k] for k in ("lab", "fig6", "cl") if k in options}
    first = plan(out, seeds, scale, options.get("image_size", 32), device, epochs,
                 options.get("alphas", ALPHAS), **flags)
    outcome = run_plan(first, via="process", workers=workers, time_limit=time_limit, progress=progress,
                       on_failure="continue")
    results = collect(out, seeds)
    alpha_star = {s: a for s in seeds if (a := chosen_alpha(results, s)) is not None}
    left = None if time_limit is None else time_limit - (time.perf_counter() - start)
    if alpha_star and (left is None or left > 0):
        second = plan_with_alpha(out, alpha_star, scale, device, epochs, options.get("pairs", CL_PAIRS), **flags)
        outcome2 = run_plan(second, via="process", workers=workers, time_limit=left, progress=progress,
                            on_failure="continue")
        outcome.failed += outcome2.failed
    for _, message in outcome.failed:
        print(f"[distill] FAILED {message}", flush=True)
    return collect(out, seeds)


def collect(out: Path, seeds) -> dict:
    """{seed: {name: result}} read back from the finished stages of ``out/seed<s>`` (also those of
    a run that was cut short or ran elsewhere)."""
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
    ap = argparse.ArgumentParser(prog="python -m fndkit distill", description=__doc__.split("\n\n")[0])
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
    start = time.perf_counter()
    if not args.collect_only:
        run(out, args.seeds, workers=args.jobs, time_limit=args.time_limit, scale=args.scale,
            image_size=args.image_size, device=args.device, epochs=args.epochs, alphas=tuple(args.alphas),
            lab=full, fig6=full, cl=full)
    results = collect(out, args.seeds)   # every finished stage, also those of an earlier, cut-short run
    write_json(out / "results.json", {"argv": sys.argv[1:], "seconds": time.perf_counter() - start,
                                      "results": {str(k): v for k, v in results.items()}})
    text = report(results, out, args.seeds)
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
