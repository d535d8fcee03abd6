"""Every page fndkit writes, from the one results table: a run folder's ``report.md`` (the demo
chain), and a plan's ``results.csv``, ``results.md``, ``report.html`` and README blocks.

A plan's pages share one layout: what ran (machine, seeds, scale, the exact command, the true wall
time), a takeaway (one line per verdict), the hyper-parameters chosen on validation, the claims with
effect, 95% interval, minimum detectable effect, BH-adjusted q and verdict, the distillation
transfer table, then per experiment a table of mean ± sd over seeds. ``report.html`` adds figures
of a set height, plotly loaded once per page, the search's per-point validation AUC folded per method.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import pandas as pd

from ..artifacts import atomic_path
from ..rundir import COLD_START, DATA, RunFolder
from ..stages.cold_start import table3
from .collect import summary

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


# ------------------------------------------------------------------------------------------------
# A plan's pages

FIGURE_HEIGHT = 360
README_BLOCKS = {
    "results": ("<!-- results: written by `python -m fndkit paper ... --readme README.md`; do not edit by hand -->",
                "<!-- results end -->"),
    "distill": ("<!-- distill: written by `python -m fndkit distill ... --readme README.md`; do not edit by hand -->",
                "<!-- distill end -->"),
}
INTEGER_METRICS = ("best_epoch", "epochs_run", "params_inference", "params", "n_seeds", "n_users", "trials", "pruned")


def fmt_value(metric: str, value) -> str:
    """A number formatted by kind: counts as integers, AUC-like values to 4 places."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if metric in INTEGER_METRICS or (isinstance(value, float) and value.is_integer() and abs(value) >= 2):
        return f"{int(round(float(value)))}"
    if metric.endswith("seconds"):
        return f"{float(value):.1f}"
    return f"{float(value):.4f}"


def points(value) -> str:
    """An AUC difference in points (×100), signed."""
    return "" if value is None or value != value else f"{100 * float(value):+.2f}"


def comparison_markdown(frame: pd.DataFrame) -> pd.DataFrame:
    """A claims / transfer table as shown: effects and intervals in AUC points."""
    if frame.empty:
        return frame
    out = pd.DataFrame({
        "comparison": frame["comparison"], "protocol": frame["protocol"], "list": frame["list"],
        "effect (pts)": [points(v) for v in frame["effect"]],
        "95% CI (pts)": [f"[{points(lo)}, {points(hi)}]" for lo, hi in zip(frame["ci_low"], frame["ci_high"])],
        "MDE (pts)": [f"{100 * v:.2f}" if v == v else "" for v in frame["mde"]],
        "p (seeds)": [f"{v:.3g}" if v == v else "" for v in frame["p"]],
        "q (BH)": [f"{v:.3g}" if v == v else "" for v in frame["q"]],
        "seeds": frame["n_seeds"].astype(int), "users": frame["n_users"].astype(int)})
    if "paper_effect" in frame:
        out.insert(3, "paper (pts)", [points(v) if v is not None else "" for v in frame["paper_effect"]])
    if "share" in frame:
        out["share of teacher margin"] = [f"{v:.0%}" if v == v else "" for v in frame["share"]]
    out["verdict"] = frame["verdict"]
    return out


def experiment_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per experiment: one row per (method, stage, shown), columns AUC / NDCG per protocol and list
    (mean ± sd over seeds), best epoch and validation AUC."""
    out = {}
    shown_metrics = {("auc", "test"): "AUC", ("ndcg_lpae", "test"): "NDCG", ("auc", "test_clean"): "AUC clean",
                     ("auc", "cold"): "cold-start AUC",
                     ("best_val_auc", "validation"): "val AUC", ("best_epoch", "-"): "best epoch"}
    s = summary(table)
    for experiment, part in s.groupby("experiment", sort=False):
        experiment = experiment or "other"
        rows: dict[tuple, dict] = {}
        for r in part.itertuples():
            name = shown_metrics.get((r.metric, r.list))
            if name is None:
                continue
            column = name if r.protocol == "-" else f"{name} {r.protocol}"
            cell = fmt_value(r.metric, r.mean)
            if r.seeds > 1 and r.metric not in INTEGER_METRICS:
                cell += f" ± {fmt_value(r.metric, r.sd)}"
            shown = "" if r.shown in ("{}", "") else ", ".join(f"{k}={v}" for k, v in json.loads(r.shown).items())
            rows.setdefault((r.method, r.stage, shown), {"seeds": int(r.seeds)})[column] = cell
        if rows:
            frame = pd.DataFrame([{"method": m, "stage": st, "settings": sh, **v} for (m, st, sh), v in rows.items()])
            out[experiment] = frame.fillna("")
    return out


def takeaway(claims: pd.DataFrame) -> list[str]:
    """One sentence per claim: what the numbers allow."""
    return [f"- {r.comparison}: {r.verdict} (effect {points(r.effect)} pts, 95% CI [{points(r.ci_low)}, "
            f"{points(r.ci_high)}], {int(r.n_seeds)} seed(s))" for r in claims.itertuples()]


def plan_markdown(info: dict, table: pd.DataFrame, claims: pd.DataFrame | None = None,
                  transfer: pd.DataFrame | None = None, chosen: dict | None = None) -> str:
    """results.md (and the README block): what ran, the takeaway, the choices, the comparisons, the
    tables."""
    seconds = info.get("seconds", 0)
    wall = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
    lines = [f"Machine `{info.get('machine', '?')}`; seeds {info.get('seeds')}; scale {info.get('scale')}; "
             f"`{info.get('command', '')}`; wall time {wall} "
             f"({info.get('workers', 1)} worker(s)). Mean ± sd over seeds where there are several; "
             f"effects are per-user paired differences, seeds as replicates (fndkit.results.stats).", ""]
    if table.empty:
        return "\n".join(lines + ["No run has finished yet."])
    if claims is not None and not claims.empty:
        lines += ["**Takeaway**", "", *takeaway(claims), ""]
    if chosen:
        frame = pd.DataFrame([{"method": m, "chosen": ", ".join(f"{k}={v}" for k, v in c["values"].items()) or "-",
                               "validation AUC": f"{c['val_auc']:.4f}", "trials (pruned)": f"{c['trials']} ({c['pruned']})",
                               "seed": c.get("seed", "")} for m, c in chosen.items()])
        lines += ["**Hyper-parameters chosen on validation** (the student's validation half of the search seed; "
                  "the test set is never read during the search)", "", markdown_table(frame), ""]
    if claims is not None and not claims.empty:
        lines += ["**Claims** (BH over the claims; MDE: the smallest effect this design detects with 80% power)",
                  "", markdown_table(comparison_markdown(claims)), ""]
    if transfer is not None and not transfer.empty:
        lines += ["**Distillation: gain over the XS N-pair student and share of the teacher's margin**", "",
                  markdown_table(comparison_markdown(transfer)), ""]
    for experiment, frame in experiment_tables(table).items():
        lines += [f"**{experiment}**", "", markdown_table(frame), ""]
    return "\n".join(lines).rstrip()


def _figures(table: pd.DataFrame) -> list[tuple[str, object]]:
    import plotly.express as px

    figs = []
    auc = table[(table.metric == "auc") & (table.list == "test") & (table.protocol == "random")]
    s = summary(auc)
    for experiment, key in (("fig4", "alpha"), ("fig6", "size"), ("fig7", "batch_size")):
        part = s[s.experiment == experiment].copy()
        part = part[part.shown != "{}"]
        if part.empty:
            continue
        part[key] = [json.loads(v).get(key) for v in part.shown]
        figs.append((experiment, px.line(part, x=key, y="mean", error_y="sd", color="method", markers=True,
                                         title=f"{experiment}: test AUC (random) against {key}")))
    trials = table[(table.experiment == "search") & (table.metric == "best_val_auc")]
    if len(trials):
        trials = trials.assign(point=[", ".join(f"{k}={v}" for k, v in json.loads(x).items()) for x in trials.shown])
        fig = px.scatter(trials, x="point", y="value", facet_col="method", facet_col_wrap=3,
                         title="search: validation AUC per point (small multiples)")
        fig.update_xaxes(matches=None, showticklabels=True, tickangle=45)
        figs.append(("search", fig))
    for name, fig in figs:
        fig.update_layout(height=FIGURE_HEIGHT if name != "search" else FIGURE_HEIGHT + 120, margin=dict(t=50, b=40))
    return figs


def plan_html(info: dict, table: pd.DataFrame, markdown: str) -> str:
    """report.html: the markdown's tables as HTML, then the figures (plotly.js once)."""
    parts = [f"<h1>{html.escape(info.get('title', 'fndkit report'))}</h1>"]
    block: list[str] = []

    def flush():
        if block:
            rows = [r for r in block if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            head, body = cells[0], cells[1:]
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            block.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            block.append(line)
            continue
        flush()
        if line.startswith("**") and line.endswith("**"):
            parts.append(f"<h2>{html.escape(line.strip('*'))}</h2>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    flush()
    first = True
    for name, fig in _figures(table):
        body = fig.to_html(full_html=False, include_plotlyjs=first, default_height=f"{fig.layout.height}px")
        parts.append(f"<details open><summary>{name}</summary>{body}</details>" if name != "search" else
                     f"<details><summary>search: validation AUC per point</summary>{body}</details>")
        first = False
    style = ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "margin:8px 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style>")
    return f"<html><head><meta charset='utf-8'><title>fndkit</title>{style}</head><body>" + "\n".join(parts) + \
        "</body></html>\n"


def write_plan_report(folder: str | os.PathLike, info: dict, table: pd.DataFrame, claims: pd.DataFrame | None = None,
                      transfer: pd.DataFrame | None = None, chosen: dict | None = None) -> dict[str, Path]:
    """``results.csv``, ``results.md`` and ``report.html`` in ``folder`` (atomically); their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "results.csv", "md": folder / "results.md", "html": folder / "report.html"}
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    markdown = plan_markdown(info, table, claims, transfer, chosen)
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown + "\n")
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(plan_html(info, table, markdown))
    return paths


def update_readme(path: str | os.PathLike, markdown: str, block: str = "results") -> Path:
    """Replace what lies between the README block's two marker lines (:data:`README_BLOCKS`) by
    ``markdown`` (atomically); everything else in the file stays as it is."""
    path = Path(path)
    start_mark, end_mark = README_BLOCKS[block]
    text = path.read_text()
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {block} block: put the lines {start_mark!r} and {end_mark!r} "
                         f"where the results belong")
    with atomic_path(path) as tmp:
        tmp.write_text(text[:start + len(start_mark)] + "\n" + markdown.rstrip() + "\n" + text[end:])
    return path
