"""Gather every stage's ``metrics.json`` in a run folder into comparison tables and ``report.md``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .artifacts import atomic_path
from .rundir import COLD_START, DATA, RunFolder
from .stages.cold_start import table3

MODEL_ORDER = ("teacher", "student_npair", "student_fnd", "contrastive")


def comparison_table(run_dir: str | Path, protocol: str = "random"):
    """One row per trained model in the run folder: AUC, both NDCGs, parameters, seconds/epoch."""
    run = RunFolder(run_dir)
    rows = []
    for stage in run.finished_stages():
        m = run.read_metrics(stage)
        test = m.get("test", {}).get(protocol)
        if not test:
            continue
        rows.append({"model": stage, "loss": m.get("loss"), "backbone": m.get("backbone"),
                     "AUC": test["auc"], "NDCG (lpae)": test["ndcg_lpae"],
                     "NDCG (standard)": test["ndcg_standard"], "params": m.get("params_inference", m.get("params")),
                     "s/epoch": m.get("epoch_seconds"), "epochs": m.get("epochs_run")})
    df = pd.DataFrame(rows)
    if not df.empty:
        rank = {name: i for i, name in enumerate(MODEL_ORDER)}
        df = df.sort_values("model", key=lambda s: s.map(lambda n: rank.get(n, len(rank)))).reset_index(drop=True)
    return df


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` from whatever stages have finished."""
    run = RunFolder(run_dir)
    lines = [f"# fndkit run report: {run.root.name}", ""]
    if run.metrics_path(DATA).exists():
        d = run.read_metrics(DATA)
        stats = d.get("stats", {})
        lines += ["## Data", "", "| dataset | users | outfits | items | cold users | cold outfits |",
                  "|---|---|---|---|---|---|",
                  f"| {stats.get('dataset')} | {stats.get('users')} | {stats.get('outfits')} | "
                  f"{stats.get('items')} | {stats.get('cold_users')} | {stats.get('cold_outfits')} |", ""]
        if "false_negative_fraction_random_mixtures" in d:
            lines += [f"Ground-truth false negatives among random mixtures: "
                      f"{d['false_negative_fraction_random_mixtures']:.2%}", ""]
    for protocol in ("random", "hard"):
        df = comparison_table(run_dir, protocol)
        if df.empty:
            continue
        lines += [f"## Test ranking ({protocol} negatives)", "", markdown_table(df), ""]
    if run.metrics_path(COLD_START).exists():
        lines += [cold_start_markdown(run.read_metrics(COLD_START)), ""]
    target = run.report_path
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return target


def markdown_table(df) -> str:
    """A pipe table (floats to 4 places) without pulling in tabulate."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def cold_start_markdown(result: dict, n_interactions=(1, 5)) -> str:
    """The Table-3 section of report.md: which cold-start protocol, then a table per negative
    protocol (random; hard where the released nega_hard files were read)."""
    parts = [f"## Cold start (AUC ×100, mean ± std over {result['repetitions']} repetitions, "
             f"{result['cold_users']} cold users)"]
    if result.get("cold_split_description"):
        parts.append(f"Protocol: {result['cold_split_description']}.")
    for protocol in result.get("protocols", ["random"]):
        table = table3(result, n_interactions, protocol).reset_index()
        table.columns = [str(c) if not isinstance(c, (int, float)) else f"{c} outfit(s)" for c in table.columns]
        if len(result.get("protocols", ["random"])) > 1:
            parts.append(f"{protocol.capitalize()} negatives:")
        parts.append(markdown_table(table))
    return "\n\n".join(parts)
