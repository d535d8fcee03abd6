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

from ..artifacts import atomic_path, read_json
from ..rundir import COLD_START, DATA, EXPLORER, TEACHER, RunFolder
from ..stages.cold_start import table3
from .collect import replicates_merged, summary

MODEL_ORDER = ("teacher", "student_npair", "student_fnd", "contrastive")


def comparison_table(run_dir: str | Path, protocol: str = "random"):
    """One row per trained model in the run folder: AUC, both NDCGs, parameters, seconds/epoch, the
    best epoch (the checkpoint kept) and the epochs run."""
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
                     "s/epoch": m.get("epoch_seconds"), "best epoch": m.get("best_epoch"),
                     "epochs run": m.get("epochs_run")})
    df = pd.DataFrame(rows)
    if not df.empty:
        rank = {name: i for i, name in enumerate(MODEL_ORDER)}
        df = df.sort_values("model", key=lambda s: s.map(lambda n: rank.get(n, len(rank)))).reset_index(drop=True)
    return df


COMPARISON_KINDS = {"params": "params", "s/epoch": "epoch_seconds", "best epoch": "best_epoch",
                    "epochs run": "epochs_run"}
FIGURES_DIR = "figures"  # beside report.md: the demo report's pictures


def report_figures(run_dir: str | Path, png: bool = True) -> dict[str, Path]:
    """The demo report's figures, written into ``run_dir/figures/`` by
    :func:`fndkit.viz.figures.save_figure` (HTML sharing the run folder's one plotly.min.js, and a PNG
    where Chromium can export): each trained stage's training curve (its history.json) and the
    teacher-against-students comparison. Returns name -> the file to show (the PNG where there is
    one, else the HTML); a static explorer picture (``explorer/*.png``) is added as it is."""
    from ..viz import figures as F

    run = RunFolder(run_dir)
    folder = run.root / FIGURES_DIR
    todo: dict[str, object] = {}

    def save(fig, name):
        todo[name] = fig

    frames = [comparison_table(run_dir, p).assign(protocol=p) for p in ("random", "hard")]
    frames = [f for f in frames if not f.empty]
    if frames:
        fig = F.comparison_figure(pd.concat(frames, ignore_index=True))
        if fig is not None:
            save(fig, "comparison")
    rank = {name: i for i, name in enumerate(MODEL_ORDER)}
    for stage in sorted(run.finished_stages(), key=lambda s: (rank.get(s, len(rank)), s)):
        history = run.path(stage, "history.json")
        if history.exists():
            records = read_json(history)
            if records:
                save(F.history_figure(records, f"{stage} training"), f"{stage}_training")
    written = F.save_figures([(fig, folder / name) for name, fig in todo.items()], png=png)  # one Chromium
    shown = {name: next((p for p in paths if p.suffix == ".png"), paths[0]) for name, paths in zip(todo, written)}
    for picture in sorted((run.root / EXPLORER).glob("*.png")):
        shown[f"explorer {picture.stem}"] = picture
    return shown


def write_report(run_dir: str | Path, figures: bool = True) -> Path:
    """Write ``run_dir/report.md`` from whatever stages have finished: the data, the test ranking
    per protocol, the cold start, and (``figures``) the pictures of :func:`report_figures`,
    embedded where they are PNG files, linked where they are HTML."""
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
        lines += [f"## Test ranking ({protocol} negatives)", "", markdown_table(df, COMPARISON_KINDS), ""]
    if run.metrics_path(COLD_START).exists():
        lines += [cold_start_markdown(run.read_metrics(COLD_START)), ""]
    shown = report_figures(run_dir) if figures else {}
    if shown:
        lines += ["## Figures", ""]
        if not any(p.suffix == ".png" for p in shown.values() if p.parent.name == FIGURES_DIR):
            lines += ["Interactive figures (HTML; no Chromium here to export PNG files); they load the run "
                      "folder's one plotly.min.js, so open them inside the run folder.", ""]
        links = []
        for name, path in shown.items():
            rel, title = path.relative_to(run.root).as_posix(), name.replace("_", " ")
            if path.suffix == ".png":
                lines += [f"![{title}]({rel})", ""]
            else:
                links.append(f"- [{title}]({rel})")
        links += [f"- [explorer {p.stem} (interactive)]({p.relative_to(run.root).as_posix()})"
                  for p in sorted((run.root / EXPLORER).glob("*.html"))]
        lines += links
    target = run.report_path
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n")
    return target


def markdown_table(df, kinds: dict[str, str] | None = None) -> str:
    """A pipe table without pulling in tabulate: floats to 4 places, or by kind (:func:`fmt_value`)
    for the columns named in ``kinds`` (column -> metric name, e.g. ``{"params": "params"}``)."""
    kinds = kinds or {}

    def fmt(column, v):
        if column in kinds and v is not None and not isinstance(v, str):
            return fmt_value(kinds[column], v)
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt(c, v) for c, v in zip(df.columns, row)) + " |" for row in df.itertuples(index=False)]
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

FIGURE_HEIGHT = 360  # px: every figure of a page has a set height (a sweep, the transfer plot …)
SEARCH_HEIGHT = 260  # px: one small figure per searched method
README_BLOCKS = {
    "results": ("<!-- results: written by `python -m fndkit paper ... --readme README.md`; do not edit by hand -->",
                "<!-- results end -->"),
    "distill": ("<!-- distill: written by `python -m fndkit distill ... --readme README.md`; do not edit by hand -->",
                "<!-- distill end -->"),
}
INTEGER_METRICS = ("best_epoch", "epochs_run", "params_inference", "params", "n_seeds", "n_users", "trials", "pruned",
                   "seeds", "stopped_early")


def fmt_value(metric: str, value) -> str:
    """A number formatted by its kind, never by its value: counts as integers (a mean over seeds
    that is not whole to one decimal), seconds to one decimal, AUC-like values to 4 places."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    value = float(value)
    if metric in INTEGER_METRICS:
        return f"{int(round(value)):,}" if abs(value - round(value)) < 1e-9 else f"{value:,.1f}"
    if metric.endswith("seconds"):
        return f"{value:.1f}"
    return f"{value:.4f}"


def points(value) -> str:
    """An AUC difference in points (×100), signed."""
    return "" if value is None or value != value else f"{100 * float(value):+.2f}"


def wall_time(seconds) -> str:
    """A duration as a person reads it: ``37 s``, ``18 min 12 s``, ``2 h 05 min``."""
    seconds = float(seconds or 0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


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


def chosen_frame(chosen: dict | None) -> pd.DataFrame:
    """The search's choices, one row per method (``chosen.csv``): the values as ``k=v`` text and as
    JSON, validation AUC, trials, pruned, seed."""
    columns = ["method", "chosen", "values", "val_auc", "trials", "pruned", "seed"]
    rows = [{"method": m, "chosen": ", ".join(f"{k}={v}" for k, v in c["values"].items()) or "-",
             "values": json.dumps(c["values"], sort_keys=True, default=str), "val_auc": c.get("val_auc"),
             "trials": c.get("trials"), "pruned": c.get("pruned"), "seed": c.get("seed", "")}
            for m, c in (chosen or {}).items()]
    return pd.DataFrame(rows, columns=columns)


def _chosen_shown(chosen: dict | None) -> pd.DataFrame:
    frame = chosen_frame(chosen)
    return pd.DataFrame({"method": frame["method"], "chosen": frame["chosen"],
                         "validation AUC": [fmt_value("auc", v) for v in frame["val_auc"]],
                         "trials (pruned)": [f"{fmt_value('trials', t)} ({fmt_value('pruned', p)})"
                                             for t, p in zip(frame["trials"], frame["pruned"])],
                         "seed": frame["seed"]})


def experiment_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per experiment: one row per (method, stage, shown), columns AUC / NDCG per protocol and list
    (mean ± sd over seeds), best epoch and validation AUC."""
    out = {}
    shown_metrics = {("auc", "test"): "AUC", ("ndcg_lpae", "test"): "NDCG", ("auc", "test_clean"): "AUC clean",
                     ("auc", "cold"): "cold-start AUC",
                     ("best_val_auc", "validation"): "val AUC", ("best_epoch", "-"): "best epoch"}
    s = summary(table)
    for experiment, part in s.groupby("experiment", sort=False):
        experiment = experiment if isinstance(experiment, str) and experiment else "other"
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


def interval_table(table: pd.DataFrame, metric: str = "auc", which: str = "test",
                   experiments: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per (experiment, method, stage, settings, protocol): ``metric`` on ``which`` as mean over
    seeds with its 95% t interval over seeds (:func:`fndkit.results.stats.summarize`; no interval
    with one seed), formatted by kind; ``experiments`` keeps only those."""
    from . import stats

    part = replicates_merged(table[(table.metric == metric) & (table.list == which)])
    if experiments is not None:
        part = part[part.experiment.isin(experiments)]
    columns = ["experiment", "method", "stage", "settings", "protocol", "mean", "95% CI", "seeds"]
    if part.empty:
        return pd.DataFrame(columns=columns)
    values = part[["experiment", "method", "stage", "shown", "protocol", "seed", "value"]].drop_duplicates(
        subset=["experiment", "stage", "shown", "protocol", "seed"])
    s = stats.summarize(values)
    return pd.DataFrame({
        "experiment": s["experiment"], "method": s["method"], "stage": s["stage"],
        "settings": ["" if v in ("{}", "") else ", ".join(f"{k}={x}" for k, x in json.loads(v).items())
                     for v in s["shown"]],
        "protocol": s["protocol"], "mean": [fmt_value(metric, v) for v in s["mean"]],
        "95% CI": [f"[{fmt_value(metric, lo)}, {fmt_value(metric, hi)}]" if n > 1 else ""
                   for lo, hi, n in zip(s["ci_low"], s["ci_high"], s["n"])],
        "seeds": s["n"].astype(int)}, columns=columns)


def takeaway(claims: pd.DataFrame) -> list[str]:
    """One sentence per claim: what the numbers allow."""
    return [f"- {r.comparison}: {r.verdict} (effect {points(r.effect)} pts, 95% CI [{points(r.ci_low)}, "
            f"{points(r.ci_high)}], {int(r.n_seeds)} seed(s))" for r in claims.itertuples()]


def transfer_takeaway(transfer: pd.DataFrame) -> list[str]:
    """One sentence per student on the first protocol's ``test`` list: its gain over N-pair and
    the share of the teacher's margin it takes."""
    if transfer is None or transfer.empty:
        return []
    first = transfer[(transfer.protocol == transfer.protocol.iloc[0]) & (transfer.list == "test")]
    out = []
    for r in first.itertuples():
        share = getattr(r, "share", float("nan"))
        gain = f"{points(r.effect)} pts, 95% CI [{points(r.ci_low)}, {points(r.ci_high)}]"
        if r.a == TEACHER:
            out.append(f"- the teacher's margin over N-pair ({r.protocol}, test): {gain}")
        else:
            out.append(f"- {r.comparison} − N-pair ({r.protocol}, test): {gain}"
                       + (f"; {share:.0%} of the teacher's margin" if share == share else ""))
    return out


def what_ran(info: dict) -> str:
    """The line that says what ran: machine, seeds, scale, the true wall time, workers."""
    done, planned = info.get("seeds"), info.get("planned")
    seeds = f"seeds {done}" if not planned or list(planned) == list(done or []) else \
        f"seeds finished {done} of the {len(planned)} planned {list(planned)}"
    return (f"Machine `{info.get('machine', '?')}`; {seeds}; scale {info.get('scale')}; "
            f"wall time {wall_time(info.get('seconds', 0))} ({info.get('workers', 1)} worker(s)).")


NOTE = ("Mean ± sd over seeds where there are several; effects are per-user paired differences in AUC points "
        "(×100), seeds as replicates (fndkit.results.stats).")


def plan_markdown(info: dict, table: pd.DataFrame, claims: pd.DataFrame | None = None,
                  transfer: pd.DataFrame | None = None, chosen: dict | None = None) -> str:
    """results.md (and the README block): what ran, the takeaway, the choices, the comparisons, the
    tables."""
    lines = [f"{what_ran(info)} Reproduce with `{info.get('command', '')}` (it continues a plan that stopped; "
             f"`--collect-only` rewrites these tables from its finished folder). {NOTE}", ""]
    if table.empty:
        return "\n".join(lines + ["No run has finished yet."])
    summary_lines = (takeaway(claims) if claims is not None and not claims.empty else []) + transfer_takeaway(transfer)
    if summary_lines:
        lines += ["**Takeaway**", "", *summary_lines, ""]
    if chosen:
        lines += ["**Hyper-parameters chosen on validation** (the student's validation half of the search seed; "
                  "the test set is never read during the search)", "", markdown_table(_chosen_shown(chosen)), ""]
    if claims is not None and not claims.empty:
        lines += ["**Claims** (BH over the claims; MDE: the smallest effect this design detects with 80% power)",
                  "", markdown_table(comparison_markdown(claims)), ""]
    if transfer is not None and not transfer.empty:
        lines += ["**Distillation: gain over the XS N-pair student and share of the teacher's margin**", "",
                  markdown_table(comparison_markdown(transfer)), ""]
    for experiment, frame in experiment_tables(table).items():
        lines += [f"**{experiment}**", "", markdown_table(frame), ""]
    return "\n".join(lines).rstrip()


def plan_figures(table: pd.DataFrame, claims: pd.DataFrame | None = None, transfer: pd.DataFrame | None = None,
                 chosen: dict | None = None) -> dict[str, list[tuple[str, object]]]:
    """The page's figures by section (``claims``, ``transfer``, ``figures``, ``search``), each a list
    of (name, plotly figure) with a set height; sections without data are absent."""
    from ..viz import figures as F

    out: dict[str, list] = {}
    fig = F.claims_figure(claims)
    if fig is not None:
        out["claims"] = [("claims", fig)]
    fig = F.transfer_figure(transfer, height=None)
    if fig is not None:
        out["transfer"] = [("transfer", fig)]
    sweeps = []
    for experiment in ("fig4", "fig5", "fig6", "fig7"):
        fig = F.augmentation_figure(table, height=FIGURE_HEIGHT) if experiment == "fig5" else \
            F.sweep_figure(table, experiment, height=FIGURE_HEIGHT)
        if fig is not None:
            sweeps.append((experiment, fig))
    if sweeps:
        out["figures"] = sweeps
    searched = [m for m in dict.fromkeys(table.loc[table.experiment == "search", "method"])]
    search = [(m, F.search_figure(table, m, (chosen or {}).get(m, {}).get("values"), height=SEARCH_HEIGHT))
              for m in searched]
    search = [(m, f) for m, f in search if f is not None]
    if search:
        out["search"] = search
    return out


def html_table(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table, every cell escaped; numbers right-aligned."""
    def cell(v, tag="td"):
        text = "" if v is None or (isinstance(v, float) and v != v) else str(v)
        numeric = bool(text) and text.lstrip("+-[").replace(".", "", 1)[:1].isdigit()
        return f"<{tag}{' class=n' if numeric and tag == 'td' else ''}>{html.escape(text)}</{tag}>"

    head = "<tr>" + "".join(cell(c, "th") for c in frame.columns) + "</tr>"
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f"<table>{head}{body}</table>"


_VERDICT_CLASS = {"supported": "ok", "contradicted": "bad"}

STYLE = ("<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:0 16px;color:#222}"
         "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
         "td.n{text-align:right;font-variant-numeric:tabular-nums}code{background:#f4f4f4;padding:1px 4px;"
         "word-break:break-all}.takeaway{border-left:4px solid #4a7;background:#f5faf6;padding:6px 14px}"
         ".ok{color:#17702f;font-weight:600}.bad{color:#b02020;font-weight:600}.other{font-weight:600}"
         "details{margin:6px 0}summary{cursor:pointer;font-weight:600}"
         ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:8px}</style>")


def _takeaway_html(claims: pd.DataFrame | None, transfer: pd.DataFrame | None) -> list[str]:
    """The page's first box: each claim's verdict, coloured, and each student's transfer."""
    e = html.escape
    items = []
    if claims is not None and not claims.empty:
        for r in claims.itertuples():
            cls = _VERDICT_CLASS.get(r.verdict, "other")
            items.append(f"<li><span class={cls}>{e(r.verdict)}</span> — {e(r.comparison)}: effect "
                         f"{points(r.effect)} pts, 95% CI [{points(r.ci_low)}, {points(r.ci_high)}], "
                         f"{int(r.n_seeds)} seed(s)</li>")
    items += [f"<li>{e(line[2:])}</li>" for line in transfer_takeaway(transfer)]
    return ["<div class=takeaway><h2>Takeaway</h2><ul>" + "".join(items) + "</ul></div>"] if items else []


def _figure_html(fig, toolbar: bool = True) -> str:
    """One figure at its set height, without its own copy of plotly.js (the page's head has it)."""
    height = int(fig.layout.height)
    body = fig.to_html(full_html=False, include_plotlyjs=False, default_height=f"{height}px",
                       config={"displaylogo": False, "responsive": True, "displayModeBar": toolbar})
    return f"<div class=figure style='height:{height}px'>{body}</div>"


def plan_html(info: dict, table: pd.DataFrame, claims: pd.DataFrame | None = None,
              transfer: pd.DataFrame | None = None, chosen: dict | None = None) -> str:
    """report.html, the self-contained export of results.md: what ran and the exact command, the
    takeaway, then each section's table beside its figure (claims, distillation transfer, the
    paper's sweeps), the search folded per method (small multiples), the per-experiment tables.
    Every figure has a set height; plotly.js is inlined once, in the page's head."""
    from plotly.offline import get_plotlyjs

    e = html.escape
    parts = [f"<h1>{e(info.get('title', 'fndkit report'))}</h1>",
             f"<p>{e(what_ran(info)).replace('`', '')}</p>",
             f"<p>Reproduce: <code>{e(str(info.get('command', '')))}</code></p>", f"<p><small>{e(NOTE)}</small></p>"]
    if table.empty:
        parts.append("<p>No run has finished yet.</p>")
    parts += _takeaway_html(claims, transfer)
    figures = plan_figures(table, claims, transfer, chosen) if not table.empty else {}
    figure = _figure_html

    if chosen:
        parts += ["<h2>Hyper-parameters chosen on validation</h2>",
                  "<p>On the student's validation half of the search seed; the test set is never read during "
                  "the search.</p>", html_table(_chosen_shown(chosen))]
    if claims is not None and not claims.empty:
        parts += ["<h2>Claims</h2>", "<p>BH over the claims; MDE: the smallest effect this design detects with "
                  "80% power.</p>", html_table(comparison_markdown(claims))]
        parts += [figure(f) for _, f in figures.get("claims", [])]
    if transfer is not None and not transfer.empty:
        parts += ["<h2>Distillation: gain over the XS N-pair student and share of the teacher's margin</h2>",
                  html_table(comparison_markdown(transfer))]
        parts += [figure(f) for _, f in figures.get("transfer", [])]
    if figures.get("figures"):
        parts.append("<h2>The paper's figures</h2>")
        parts += [f"<details open><summary>{e(name)}</summary>{figure(f)}</details>" for name, f in figures["figures"]]
    if figures.get("search"):
        parts += ["<h2>Search</h2>", "<p>Validation AUC of every point tried, one small figure per method "
                  "(★ the chosen point); open a method to see it.</p>", "<div class=grid>"]
        parts += [f"<details><summary>{e(name)}</summary>{figure(f, toolbar=False)}</details>"
                  for name, f in figures["search"]]
        parts.append("</div>")
    tables = experiment_tables(table) if not table.empty else {}
    if tables:
        parts.append("<h2>Per experiment (mean ± sd over seeds)</h2>")
        parts += [f"<details open><summary>{e(name)}</summary>{html_table(frame)}</details>"
                  for name, frame in tables.items()]
    script = f"<script type='text/javascript'>{get_plotlyjs()}</script>" if figures else ""
    if figures:  # a figure drawn inside a closed section takes its width when the section opens
        parts.append("<script>document.querySelectorAll('details').forEach(d => d.addEventListener('toggle', "
                     "() => d.querySelectorAll('.plotly-graph-div').forEach(g => Plotly.Plots.resize(g))));</script>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(info.get('title', 'fndkit'))}</title>"
            f"{STYLE}{script}</head><body>" + "\n".join(parts) + "</body></html>\n")


PLAN_FILES = {"csv": "results.csv", "md": "results.md", "html": "report.html", "claims": "claims.csv",
              "transfer": "transfer.csv", "chosen": "chosen.csv"}


def write_plan_report(folder: str | os.PathLike, info: dict, table: pd.DataFrame, claims: pd.DataFrame | None = None,
                      transfer: pd.DataFrame | None = None, chosen: dict | None = None) -> dict[str, Path]:
    """``results.csv``, ``results.md``, ``report.html``, and where given ``claims.csv``,
    ``transfer.csv``, ``chosen.csv`` (the tables the results notebook reads) in ``folder``
    (atomically); their paths by key of :data:`PLAN_FILES`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "results.csv", "md": folder / "results.md", "html": folder / "report.html"}
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    tables = (("claims", claims), ("transfer", transfer), ("chosen", chosen_frame(chosen) if chosen else None))
    for key, frame in tables:
        if frame is not None:
            paths[key] = folder / PLAN_FILES[key]
            with atomic_path(paths[key]) as tmp:
                frame.to_csv(tmp, index=False)
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(plan_markdown(info, table, claims, transfer, chosen) + "\n")
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(plan_html(info, table, claims, transfer, chosen))
    return paths


def read_plan_report(folder: str | os.PathLike) -> dict[str, pd.DataFrame | dict]:
    """What :func:`write_plan_report` wrote, read back: ``table`` (results.csv), ``claims``,
    ``transfer`` (empty frames where the plan had none) and ``chosen`` (a dict as the plan passed)."""
    folder = Path(folder)
    if not (folder / PLAN_FILES["csv"]).exists():
        raise FileNotFoundError(f"{folder} holds no {PLAN_FILES['csv']}: pass the folder a plan wrote its report to "
                                f"(e.g. outputs/paper/cpu-2c, or the distill plan's --root)")
    table = pd.read_csv(folder / PLAN_FILES["csv"], keep_default_na=False, na_values=[""],
                        dtype={"shown": str, "params": str, "protocol": str, "list": str, "experiment": str})
    table["experiment"] = table["experiment"].fillna("")
    out: dict = {"table": table}
    for key in ("claims", "transfer"):
        path = folder / PLAN_FILES[key]
        out[key] = pd.read_csv(path) if path.exists() else pd.DataFrame()
    if "paper_effect" in out["claims"]:
        out["claims"]["paper_effect"] = out["claims"]["paper_effect"].astype(object).where(
            out["claims"]["paper_effect"].notna(), None)
    path = folder / PLAN_FILES["chosen"]
    chosen = {}
    if path.exists():
        for r in pd.read_csv(path).itertuples():
            chosen[r.method] = {"values": json.loads(r.values), "val_auc": r.val_auc, "trials": r.trials,
                                "pruned": r.pruned, "seed": r.seed}
    out["chosen"] = chosen
    return out


def check_readme(path: str | os.PathLike, block: str = "results") -> tuple[str, int, int]:
    """The file's text and where its ``block`` lies; a missing file or block is a ValueError that
    says what to do (the plan verbs call this before any work, so that hours of training never end
    on it)."""
    path = Path(path).expanduser()
    start_mark, end_mark = README_BLOCKS[block]
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"--readme {str(path)!r} cannot be read ({exc.strerror}): give the README that "
                         f"holds the {block} block") from None
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {block} block: put the lines {start_mark!r} and {end_mark!r} "
                         f"where the results belong")
    return text, start, end


def update_readme(path: str | os.PathLike, markdown: str, block: str = "results") -> Path:
    """Replace what lies between the README block's two marker lines (:data:`README_BLOCKS`) by
    ``markdown`` (atomically); everything else in the file stays as it is."""
    path = Path(path).expanduser()
    text, start, end = check_readme(path, block)
    start_mark = README_BLOCKS[block][0]
    with atomic_path(path) as tmp:
        tmp.write_text(text[:start + len(start_mark)] + "\n" + markdown.rstrip() + "\n" + text[end:])
    return path
