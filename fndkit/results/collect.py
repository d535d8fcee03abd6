"""Every plan's outcome as one tidy table, read back from its jobs' stage folders.

:func:`collect` takes the jobs a plan builder made (before deduplication: one stage serving two
experiments gives rows to both) and returns one row per (job, protocol, list, metric):

=============  =====================================================================================
experiment     the experiment the job stands in (table2, fig4, search, fn_rate, distill, chain …)
method         the method it stands for (npair, fnd, fnd-cl, a baseline, kd …; a cold-start row: the model)
stage          its stage folder; ``run_dir`` its run folder; ``seed`` its seed
params         JSON of its parameters that differ from the stage's defaults (run folder, seed aside)
shown          JSON of the settings the experiment varies (α of Fig. 4, the size of Fig. 6 …)
protocol       random / hard (test lists), cold protocols, or ``-`` (a scalar of the run)
list           ``test``, ``test_clean`` (true false negatives removed), ``validation``, ``cold``, ``-``
metric, value  auc, ndcg_lpae, ndcg_standard, best_val_auc, best_epoch, epochs_run, epoch_seconds …
=============  =====================================================================================

:func:`collect_users` gives the per-user AUCs behind the ``test`` rows (the paired statistics of
:mod:`fndkit.results.stats` use them). Jobs that have not finished give no rows. Nothing here
trains, times or scores anything: a timing (Table 5) is a record a bench wrote, read by
:func:`read_records`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..artifacts import read_json
from ..rundir import RunFolder

COLUMNS = ["experiment", "method", "stage", "run_dir", "seed", "params", "shown", "protocol", "list", "metric",
           "value"]
USER_COLUMNS = ["experiment", "method", "stage", "run_dir", "seed", "shown", "protocol", "list", "user", "value"]
RANKING = ("auc", "ndcg_lpae", "ndcg_standard")
SCALARS = ("best_epoch", "epochs_run", "epoch_seconds", "params_inference", "stopped_early")
TRAINING = ("teacher", "student", "contrastive", "baseline")


def _params(job) -> str:
    defaults = type(job.params).defaults()
    values = {k: v for k, v in job.params.to_dict().items()
              if k not in ("run_dir", "seed", "out_name", "device") and v != defaults.get(k)}
    return json.dumps(values, sort_keys=True, default=str)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def _cold_model(row: dict, job) -> str:
    """The model a cold-start row scored, as the stage it replicates (``student_fnd`` for the
    ``student_fnd-seed0`` of a verdict plan's shared run folder), so that Table 3's claim finds it."""
    from ..stages.naming import replicated_from

    return replicated_from(row["model"], job.seed)


def job_rows(job) -> list[dict]:
    """The rows of one job (empty when its stage has not finished)."""
    folder = RunFolder(job.run_dir)
    stage = job.stage
    if not folder.metrics_path(stage).exists():
        return []
    m = folder.read_metrics(stage)
    base = {"experiment": job.experiment, "method": job.method or stage, "stage": stage, "run_dir": job.run_dir,
            "seed": job.seed, "params": _params(job), "shown": json.dumps(job.shown, sort_keys=True, default=str)}
    rows = []
    if job.kind in TRAINING:
        for which in ("test", "test_clean"):
            for protocol, values in (m.get(which) or {}).items():
                rows += [{**base, "protocol": protocol, "list": which, "metric": k, "value": float(values[k])}
                         for k in RANKING if k in values]
        budget = (m.get("budget") or {}).get("test", {})
        rows += [{**base, "protocol": p, "list": "test", "metric": "auc_budget", "value": float(v["auc"])}
                 for p, v in budget.items()]
        if _number(m.get("best_val_auc")) is not None:
            rows.append({**base, "protocol": "-", "list": "validation", "metric": "best_val_auc",
                         "value": float(m["best_val_auc"])})
        rows += [{**base, "protocol": "-", "list": "-", "metric": k, "value": _number(m[k])}
                 for k in SCALARS if _number(m.get(k)) is not None]
    elif job.kind == "cold_start":
        for r in m.get("rows", []):
            shown = {**job.shown, "strategy": r["strategy"], "n_interactions": r["n_interactions"]}
            rows += [{**base, "method": _cold_model(r, job), "shown": json.dumps(shown, sort_keys=True),
                      "protocol": r.get("protocol", "random"), "list": "cold", "metric": k,
                      "value": float(r[f"{k}_mean"])} for k in RANKING if f"{k}_mean" in r]
    else:  # data, pre-training, diagnostics: their numeric scalars
        flat = {k: v for k, v in m.items() if _number(v) is not None}
        for k, v in m.items():
            if isinstance(v, dict):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if _number(vv) is not None})
        rows += [{**base, "protocol": "-", "list": "-", "metric": k, "value": _number(v)} for k, v in flat.items()]
    return rows


def collect(jobs: Iterable, records: Iterable[str | os.PathLike] = ()) -> pd.DataFrame:
    """The tidy table of ``jobs`` (see the module docstring), plus the rows of ``records``."""
    rows = [r for job in jobs for r in job_rows(job)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    extra = read_records(records)
    frame = pd.concat([frame, extra], ignore_index=True) if len(extra) else frame
    return frame.drop_duplicates(subset=[c for c in COLUMNS if c != "value"], keep="first").reset_index(drop=True)


def collect_users(jobs: Iterable) -> pd.DataFrame:
    """Per-user test AUCs of ``jobs``: one row per (job, protocol, list, user)."""
    rows = []
    for job in jobs:
        folder = RunFolder(job.run_dir)
        base = {"experiment": job.experiment, "method": job.method or job.stage, "stage": job.stage,
                "run_dir": job.run_dir, "seed": job.seed, "shown": json.dumps(job.shown, sort_keys=True, default=str)}
        if job.kind in TRAINING:
            for which, name in (("test", "per_user_auc.json"), ("test_clean", "per_user_auc_clean.json")):
                path = folder.path(job.stage, name)
                if path.exists():
                    for protocol, users in read_json(path).items():
                        rows += [{**base, "protocol": protocol, "list": which, "user": int(u), "value": float(v)}
                                 for u, v in users.items()]
        elif job.kind == "cold_start" and folder.metrics_path(job.stage).exists():
            for r in folder.read_metrics(job.stage).get("rows", []):
                shown = {**job.shown, "strategy": r["strategy"], "n_interactions": r["n_interactions"]}
                rows += [{**base, "method": _cold_model(r, job), "shown": json.dumps(shown, sort_keys=True),
                          "protocol": r.get("protocol", "random"), "list": "cold", "user": int(u), "value": float(v)}
                         for u, v in r.get("per_user_auc", {}).items()]
    frame = pd.DataFrame(rows, columns=USER_COLUMNS)
    return frame.drop_duplicates(subset=[c for c in USER_COLUMNS if c != "value"])


def read_records(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Rows a bench or a plan wrote as JSON (``{"rows": [...]}`` in the one schema)."""
    rows = []
    for path in paths:
        path = Path(path)
        if path.exists():
            rows += [{c: r.get(c, "" if c not in ("seed", "value") else 0) for c in COLUMNS}
                     for r in read_json(path).get("rows", [])]
    return pd.DataFrame(rows, columns=COLUMNS)


def pick(table: pd.DataFrame, **where) -> pd.DataFrame:
    """Rows of ``table`` matching every ``column=value`` (a list or tuple: any of its values)."""
    mask = pd.Series(True, index=table.index)
    for column, value in where.items():
        mask &= table[column].isin(value) if isinstance(value, (list, tuple, set)) else table[column] == value
    return table[mask]


def replicates_merged(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each replicate's ``stage`` (``student_fnd-seed3``: the seeds of a verdict plan
    share one run folder) named as the stage it replicates (``student_fnd``), so that a summary over
    seeds has one row per method, not one per seed; run folders per seed are left as they are."""
    from ..stages.naming import replicated_from

    if table.empty:
        return table
    return table.assign(stage=[replicated_from(st, seed) for st, seed in zip(table["stage"], table["seed"])])


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd over seeds and the number of seeds per (experiment, method, stage, shown, protocol,
    list, metric); a replicate counts as its stage (:func:`replicates_merged`)."""
    keys = ["experiment", "method", "stage", "shown", "protocol", "list", "metric"]
    if table.empty:
        return pd.DataFrame(columns=[*keys, "mean", "sd", "seeds"])
    table = replicates_merged(table)
    out = table.groupby(keys, sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"std": "sd", "count": "seeds"}).fillna({"sd": 0.0})
