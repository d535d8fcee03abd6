"""Figures the notebooks show and save: training curves, autoencoder pictures, ``save_figure``
(HTML sharing one plotly.min.js per run folder, plus PNG where Chromium is installed), and a plan's
figures from the one results table (sweeps, search, claims, distillation transfer)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..artifacts import atomic_path, load_checkpoint
from ..models import autoencoder as ae
from ..rundir import AUTOENCODER, DATA, RunFolder
from .pictures import outfit_strip


def best_epoch(history: list[dict]) -> int | None:
    """The epoch whose weights ``checkpoint.pt`` keeps: the first with the highest validation AUC
    (:class:`fndkit.train.Checkpoint` saves only on a strict improvement); None without any."""
    scored = [h for h in history if h.get("val_auc") is not None]
    if not scored:
        return None
    return max(scored, key=lambda h: h["val_auc"])["epoch"]  # max keeps the first of equal ones


def history_figure(history: list[dict], title: str):
    """Training curve (plotly): loss (left axis) and validation AUC (right axis) per epoch, a
    dotted vertical line at the best epoch (the checkpoint kept), and where the objective flags
    false negatives (FND) the flagged fraction in a panel of its own below, on its own scale (a
    fraction near 0.003 is a flat line on the AUC's 0–1 axis)."""
    epochs = [h["epoch"] for h in history]
    flags = "flagged_fraction" in history[0]
    specs = [[{"secondary_y": True}]] + ([[{}]] if flags else [])
    fig = make_subplots(rows=len(specs), cols=1, specs=specs, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.7, 0.3] if flags else None)
    fig.add_trace(go.Scatter(x=epochs, y=[h["loss"] for h in history], name="train loss"), row=1, col=1)
    fig.add_trace(go.Scatter(x=epochs, y=[h["val_auc"] for h in history], name="val AUC"),
                  row=1, col=1, secondary_y=True)
    if flags:
        fig.add_trace(go.Scatter(x=epochs, y=[h["flagged_fraction"] for h in history],
                                 name="flagged false negatives", line={"dash": "dot"}), row=2, col=1)
        fig.update_yaxes(title_text="flagged fraction", tickformat=".2%", rangemode="tozero", row=2, col=1)
        fig.update_xaxes(title_text="epoch", row=2, col=1)
    else:
        fig.update_xaxes(title_text="epoch", row=1, col=1)
    best = best_epoch(history)
    if best is not None:
        auc = next(h["val_auc"] for h in history if h["epoch"] == best)
        fig.add_vline(x=best, line={"dash": "dot", "color": "grey", "width": 1}, row="all", col=1)
        fig.add_annotation(x=best, y=1, yref="paper", yanchor="bottom", showarrow=False,
                           text=f"best epoch {best} (val AUC {auc:.4f})", font={"size": 11})
    fig.update_layout(title=title, height=480 if flags else 380)
    fig.update_yaxes(title_text="loss", row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text="val AUC", row=1, col=1, secondary_y=True)
    return fig


def training_figure(run_dir, stage: str, title: str | None = None, save: bool = True):
    """The training curve of a stage folder (its history.json), saved as ``training_curve`` unless
    the saved one is already newer than the history (a reused stage's files stay as they were)."""
    run = RunFolder(run_dir)
    history = run.path(stage, "history.json")
    fig = history_figure(run.read_json(history), title or f"{stage} training")
    curve = run.path(stage, "training_curve.html")
    if save and not (curve.exists() and curve.stat().st_mtime_ns >= history.stat().st_mtime_ns):
        save_figure(fig, run.path(stage, "training_curve"))
    return fig


PNG_TIMEOUT_S = 90
PLOTLY_JS = "plotly.min.js"


def figure_home(folder: str | Path) -> Path | None:
    """The run folder a figure saved in ``folder`` belongs to: ``folder`` itself or its nearest
    ancestor with ``data/dataset.json``; None outside any run folder."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / DATA / "dataset.json").exists():
            return candidate
    return None


def shared_plotlyjs(folder: str | Path) -> str | bool:
    """``include_plotlyjs`` for a figure saved in ``folder``: inside a run folder, the path (relative
    to ``folder``) of the run folder's one ``plotly.min.js``, written there once (again only when
    the installed plotly's differs); outside any run folder True (the file carries plotly.js itself,
    so a loose figure opens anywhere)."""
    from plotly.offline import get_plotlyjs

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    home = figure_home(folder)
    if home is None:
        return True
    js = home / PLOTLY_JS
    bundled = get_plotlyjs().encode()
    if not js.exists() or js.stat().st_size != len(bundled):
        with atomic_path(js) as tmp:
            tmp.write_bytes(bundled)
    return Path(os.path.relpath(js, folder)).as_posix()

_PNG_EXPORT = """
import sys
import plotly.io as pio
args = sys.argv[1:]
for spec, target in zip(args[::2], args[1::2]):
    pio.from_json(open(spec).read()).write_image(target, format="png")
"""


def save_figure(fig, path_stem: str | Path, png: bool = True) -> list[Path]:
    """Write ``<stem>.html`` and, where Chromium is installed, ``<stem>.png``.

    Inside a run folder the HTML loads plotly.js from the folder's one ``plotly.min.js``
    (:func:`shared_plotlyjs`, by a relative path, so the run folder can move): a figure file is a
    few kB, not 4.8 MB with its own copy of the library. Outside one it stays self-contained.

    The PNG is rendered by kaleido's headless Chromium in a child process with a time limit
    (``PNG_TIMEOUT_S``): we saw that browser hang once with two exports running at the same time,
    and a picture must never stall a training chain. ``FNDKIT_PNG=0`` turns PNG export off.
    """
    return save_figures([(fig, path_stem)], png=png)[0]


def save_figures(figures, png: bool = True) -> list[list[Path]]:
    """:func:`save_figure` for several ``(figure, path_stem)`` pairs, their PNG files rendered by
    one Chromium (one child process; the time limit grows with the count). Returns the paths
    written per pair."""
    figures = [(fig, Path(stem)) for fig, stem in figures]
    written: list[list[Path]] = []
    for fig, stem in figures:
        script = shared_plotlyjs(stem.parent)
        with atomic_path(stem.with_suffix(".html")) as tmp:
            fig.write_html(str(tmp), include_plotlyjs=script)
        written.append([stem.with_suffix(".html")])
    if not (png and figures and shutil.which("chromium") and os.environ.get("FNDKIT_PNG", "1") != "0"):
        return written
    limit = PNG_TIMEOUT_S + 10 * (len(figures) - 1)
    with tempfile.TemporaryDirectory() as scratch:
        args = []
        for i, (fig, _) in enumerate(figures):
            spec = Path(scratch) / f"figure{i}.json"
            spec.write_text(fig.to_json())
            args += [str(spec), str(Path(scratch) / f"figure{i}.png")]
        proc = subprocess.Popen([sys.executable, "-c", _PNG_EXPORT, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own group: Chromium's children die with it
        try:
            _, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            err = f"no PNG after {limit} s"
        for i, (_, stem) in enumerate(figures):
            rendered = Path(scratch) / f"figure{i}.png"
            if rendered.exists():  # the ones done before a failure are kept
                with atomic_path(stem.with_suffix(".png")) as tmp:
                    shutil.copyfile(rendered, tmp)
                written[i].append(stem.with_suffix(".png"))
        if proc.returncode != 0:  # the HTML is the artifact; the PNG is a convenience
            last = (err or "").strip().splitlines()[-1:] or ["unknown error"]
            missing = [stem.name for (_, stem), paths in zip(figures, written) if len(paths) == 1]
            print(f"PNG export of {', '.join(missing) or 'the figures'} skipped: {last[0]}")
    return written


def reconstruction_figure(run_dir: str | Path, n: int = 8, seed: int = 0):
    """Originals (top row) against reconstructions (bottom row) for held-out-like random items."""
    run = RunFolder(run_dir)
    ds = run.dataset()
    payload = load_checkpoint(run.path(AUTOENCODER, "checkpoint.pt"))
    model = ae.ConvAutoencoder.from_config(payload["config"]["model"])
    model.load_state_dict(payload["state_dict"])
    pool = np.load(run.path(AUTOENCODER, "pool_items.npy"))
    ids = np.random.default_rng(seed).choice(pool, size=min(n, pool.size), replace=False)
    with torch.no_grad():
        recon = model.eval()(ae.images_to_tensor(ds.images.get(ids)))
    recon = (recon.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    grid = np.concatenate([np.concatenate(list(ds.images.get(ids)), axis=1), np.concatenate(list(recon), axis=1)], axis=0)
    fig = px.imshow(grid, title="Items (top) and their reconstructions (bottom)")
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    return fig


def neighbours_figure(run_dir: str | Path, n_queries: int = 5, seed: int = 0):
    """For a few items (left column), their k latent neighbours of the same category."""
    run = RunFolder(run_dir)
    ds = run.dataset()
    neighbours = run.neighbours()
    pool = np.load(run.path(AUTOENCODER, "pool_items.npy"))
    queries = np.random.default_rng(seed).choice(pool, size=min(n_queries, pool.size), replace=False)
    rows = np.concatenate([queries[:, None], neighbours[queries]], axis=1)
    fig = px.imshow(outfit_strip(ds, rows), title="Query item (left) and its latent neighbours")
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    return fig


# ------------------------------------------------------------------------------------------------
# A plan's figures: pure functions of the one results table (fndkit.results.collect) or of the
# comparison tables (fndkit.results.claims); a DataFrame in, a plotly figure (or None) out.

PLAN_FIGURE_HEIGHT = 360
SMALL_FIGURE_HEIGHT = 260
ROW_HEIGHT = 34  # px per row of a comparison figure

# The paper's sweeps: experiment -> (the setting it varies, axis title, whether the axis is numeric)
SWEEPS = {"fig4": ("alpha", "α (false-negative threshold)", True),
          "fig6": ("size", "student size", False),
          "fig7": ("batch_size", "batch size", True)}


def points(table, experiment: str, metric: str = "auc", protocol: str = "random", which: str = "test"):
    """Mean, sd over seeds and seeds per (method, stage, shown) of one experiment's ``metric``;
    ``settings`` holds the shown settings as a dict."""
    part = table[(table.experiment == experiment) & (table.metric == metric) & (table.protocol == protocol)
                 & (table.list == which)]
    if part.empty:
        return pd.DataFrame(columns=["method", "stage", "shown", "mean", "sd", "seeds", "settings"])
    from ..results.collect import replicates_merged

    out = replicates_merged(part).groupby(["method", "stage", "shown"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"std": "sd", "count": "seeds"}).fillna({"sd": 0.0})
    out["settings"] = [json.loads(s) if s else {} for s in out["shown"]]
    return out


def sweep_figure(table, experiment: str, protocol: str = "random", height: int = PLAN_FIGURE_HEIGHT):
    """Test AUC against the setting an experiment varies (Fig. 4's α, Fig. 6's size, Fig. 7's batch
    size): one line per method, error bars one sd over seeds; methods run once beside the sweep
    (Fig. 4's N-pair and BPR) as dashed horizontal lines. None when the table has no such rows."""
    key, axis_title, numeric = SWEEPS[experiment]
    pts = points(table, experiment, protocol=protocol)
    if pts.empty:
        return None
    on_grid = pts["settings"].map(lambda s: key in s)
    grid, refs = pts[on_grid].copy(), pts[~on_grid]
    fig = go.Figure()
    if not grid.empty:
        grid["x"] = [s[key] for s in grid["settings"]]
        if numeric:
            grid["x"] = grid["x"].astype(float)
            grid = grid.sort_values("x", kind="stable")
        for method, part in grid.groupby("method", sort=False):
            fig.add_trace(go.Scatter(x=list(part["x"]), y=list(part["mean"]), name=method, mode="lines+markers",
                                     error_y={"type": "data", "array": list(part["sd"]), "visible": True},
                                     customdata=list(part["seeds"]),
                                     hovertemplate=f"{method}: {key}=%{{x}}<br>AUC %{{y:.4f}} "
                                                   f"(%{{customdata}} seed(s))<extra></extra>"))
    for r in refs.itertuples():
        fig.add_hline(y=r.mean, line={"dash": "dash", "width": 1, "color": "grey"},
                      annotation_text=f"{r.method} {r.mean:.4f}", annotation_position="top left")
    seeds = int(pts["seeds"].max())
    fig.update_layout(title=f"{experiment}: test AUC ({protocol} negatives) against {key}, "
                            f"mean ± sd over {seeds} seed(s)",
                      height=height, margin={"t": 50, "b": 40, "l": 60, "r": 20}, legend={"title": "method"})
    fig.update_xaxes(title_text=axis_title, type="linear" if numeric else "category")
    fig.update_yaxes(title_text="test AUC")
    return fig


def augmentation_figure(table, protocol: str = "random", height: int = PLAN_FIGURE_HEIGHT):
    """Fig. 5: FND-CL's test AUC (mean over seeds) for each pair of views, as a heat map. None
    without fig5 rows."""
    pts = points(table, "fig5", protocol=protocol)
    pts = pts[pts["settings"].map(lambda s: "view1" in s and "view2" in s)]
    if pts.empty:
        return None
    views = list(dict.fromkeys([s["view1"] for s in pts["settings"]] + [s["view2"] for s in pts["settings"]]))
    z = [[None] * len(views) for _ in views]
    for s, mean in zip(pts["settings"], pts["mean"]):
        z[views.index(s["view2"])][views.index(s["view1"])] = mean
    fig = go.Figure(go.Heatmap(x=views, y=views, z=z, colorscale="Viridis", colorbar={"title": "AUC"},
                               texttemplate="%{z:.4f}", hovertemplate="%{x} + %{y}: AUC %{z:.4f}<extra></extra>"))
    fig.update_layout(title=f"fig5: FND-CL test AUC ({protocol} negatives) per pair of views", height=height,
                      margin={"t": 50, "b": 40, "l": 80, "r": 20})
    fig.update_xaxes(title_text="first view")
    fig.update_yaxes(title_text="second view")
    return fig


def search_figure(table, method: str, chosen: dict | None = None, height: int = SMALL_FIGURE_HEIGHT):
    """One method's search: validation AUC of each point it tried (the searched setting on the x
    axis when there is one numeric setting, else the point's label), the chosen point starred."""
    pts = points(table, "search", metric="best_val_auc", protocol="-", which="validation")
    pts = pts[pts["method"] == method]
    if pts.empty:
        return None
    keys = sorted({k for s in pts["settings"] for k in s})
    numeric = len(keys) == 1 and all(isinstance(s.get(keys[0]), (int, float)) for s in pts["settings"])
    if numeric:
        x = [float(s[keys[0]]) for s in pts["settings"]]
    else:
        x = [", ".join(f"{k}={v}" for k, v in s.items()) for s in pts["settings"]]
    is_chosen = [bool(chosen) and all(s.get(k) == v for k, v in chosen.items()) for s in pts["settings"]]
    fig = go.Figure(go.Scatter(x=x, y=list(pts["mean"]), mode="markers", name="tried",
                               marker={"size": [14 if c else 8 for c in is_chosen],
                                       "symbol": ["star" if c else "circle" for c in is_chosen]},
                               hovertemplate="%{x}: val AUC %{y:.4f}<extra></extra>"))
    fig.update_layout(title=f"{method}: {len(pts)} tried" + (", ★ chosen" if any(is_chosen) else ""), height=height,
                      margin={"t": 40, "b": 40, "l": 60, "r": 20}, showlegend=False)
    log = numeric and keys[0] in ("lr", "weight_decay") and min(x) > 0
    fig.update_xaxes(title_text=keys[0] if numeric else "point", type="log" if log else None)
    fig.update_yaxes(title_text="val AUC")
    return fig


def wrap(text: str, width: int = 38) -> str:
    """``text`` broken into lines of at most ``width`` characters (at spaces) with ``<br>``."""
    lines, line = [], ""
    for word in str(text).split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join(lines + [line] if line else lines)


def _comparison_rows(frame):
    """Rows in display order (top to bottom) with their label."""
    rows = frame.reset_index(drop=True)
    labels = [wrap(f"{r.comparison} ({r.protocol}, {r.list})") for r in rows.itertuples()]
    return rows, labels


def claims_figure(claims, height: int | None = None):
    """Each claim's effect (AUC points, a − b) with its 95% interval; the band ± its minimum
    detectable effect shaded around zero (inside it the design cannot tell an effect from none); the
    paper's effect as an open diamond where it states one. None without claims."""
    if claims is None or len(claims) == 0:
        return None
    rows, labels = _comparison_rows(claims)
    y = list(range(len(rows)))[::-1]
    fig = go.Figure()
    for yi, r in zip(y, rows.itertuples()):
        if r.mde == r.mde:
            fig.add_shape(type="rect", x0=-100 * r.mde, x1=100 * r.mde, y0=yi - 0.4, y1=yi + 0.4,
                          fillcolor="lightgrey", opacity=0.5, line={"width": 0}, layer="below")
    effect = 100 * rows["effect"]
    fig.add_trace(go.Scatter(
        x=list(effect), y=y, mode="markers", name="effect (95% CI)", marker={"size": 9, "color": "black"},
        error_x={"type": "data", "symmetric": False, "array": list(100 * rows["ci_high"] - effect),
                 "arrayminus": list(effect - 100 * rows["ci_low"])},
        customdata=list(rows["verdict"]), hovertemplate="%{x:+.2f} pts<br>%{customdata}<extra></extra>"))
    if "paper_effect" in rows:
        paper = [(yi, 100 * float(v)) for yi, v in zip(y, rows["paper_effect"]) if v is not None and v == v]
        if paper:
            fig.add_trace(go.Scatter(x=[p for _, p in paper], y=[yi for yi, _ in paper], mode="markers",
                                     name="paper", marker={"symbol": "diamond-open", "size": 11}))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="± MDE (80% power)",
                             marker={"symbol": "square", "size": 12, "color": "lightgrey"}))
    fig.add_vline(x=0, line={"width": 1, "color": "grey"})
    reach = [abs(v) for v in (*100 * rows["ci_low"], *100 * rows["ci_high"], *100 * rows["mde"]) if v == v]
    reach = 1.1 * max(reach + [1.0])  # the axis shows every interval and every band, zero in the middle
    fig.update_yaxes(tickvals=y, ticktext=labels, range=[-0.6, len(rows) - 0.4])
    fig.update_xaxes(title_text="effect (AUC points, a − b)", zeroline=False, range=[-reach, reach])
    fig.update_layout(title="Claims: effect with 95% interval; shaded: ± minimum detectable effect",
                      height=height or max(SMALL_FIGURE_HEIGHT,
                                           120 + ROW_HEIGHT * sum(1 + s.count("<br>") for s in labels)),
                      margin={"t": 50, "b": 40, "l": 20, "r": 20}, legend={"orientation": "h", "y": -0.25})
    return fig


def transfer_figure(transfer, height: int | None = None):
    """Distillation: per student (and the teacher, the margin itself) the gain over the N-pair
    student in AUC points with its 95% interval (left) and the share of the teacher's margin it
    takes (right), one colour per (protocol, list). None without rows."""
    if transfer is None or len(transfer) == 0:
        return None
    methods = list(dict.fromkeys(transfer["comparison"]))
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.6, 0.4], horizontal_spacing=0.03,
                        subplot_titles=("gain over N-pair (AUC points, 95% CI)", "share of the teacher's margin"))
    series = list(dict.fromkeys(zip(transfer["protocol"], transfer["list"])))
    colors = px.colors.qualitative.Plotly
    for i, (protocol, which) in enumerate(series):
        part = transfer[(transfer["protocol"] == protocol) & (transfer["list"] == which)]
        part = part.set_index("comparison").reindex(methods).dropna(subset=["effect"])
        offset = ((len(series) - 1) / 2 - i) * 0.6 / max(len(series), 1)  # the first series on top
        y = [len(methods) - 1 - methods.index(m) + offset for m in part.index]
        name, color = f"{which} ({protocol})", colors[i % len(colors)]
        effect = 100 * part["effect"]
        fig.add_trace(go.Scatter(
            x=list(effect), y=y, mode="markers", name=name, legendgroup=name, marker={"color": color, "size": 8},
            error_x={"type": "data", "symmetric": False, "array": list(100 * part["ci_high"] - effect),
                     "arrayminus": list(effect - 100 * part["ci_low"])},
            hovertemplate="%{x:+.2f} pts<extra>" + name + "</extra>"), row=1, col=1)
        share = part["share"] if "share" in part else None
        if share is not None:
            fig.add_trace(go.Bar(x=list(100 * share), y=y, orientation="h", name=name, legendgroup=name,
                                 showlegend=False, marker={"color": color}, width=0.6 / max(len(series), 1),
                                 hovertemplate="%{x:.0f}%<extra>" + name + "</extra>"), row=1, col=2)
    ticks = list(range(len(methods)))[::-1]
    fig.update_yaxes(tickvals=ticks, ticktext=methods, range=[-0.6, len(methods) - 0.4], row=1, col=1)
    fig.add_vline(x=0, line={"width": 1, "color": "grey"}, row=1, col=1)
    fig.add_vline(x=100, line={"width": 1, "color": "grey", "dash": "dot"}, row=1, col=2)
    fig.update_xaxes(title_text="AUC points", row=1, col=1)
    fig.update_xaxes(title_text="% of teacher − N-pair", row=1, col=2)
    fig.update_layout(title="Distillation: what each student takes from the teacher",
                      height=height or max(PLAN_FIGURE_HEIGHT, 140 + 2 * ROW_HEIGHT * len(methods)),
                      margin={"t": 70, "b": 40, "l": 20, "r": 20}, legend={"orientation": "h", "y": -0.2})
    return fig


def comparison_figure(frame, height: int = PLAN_FIGURE_HEIGHT):
    """The demo's teacher-vs-students comparison (:func:`fndkit.results.report.comparison_table`
    rows, one protocol per call, the ``protocol`` column added): test AUC and NDCG per model,
    grouped bars. None without rows."""
    if frame is None or len(frame) == 0:
        return None
    long = frame.melt(id_vars=["model", "protocol"], value_vars=[c for c in ("AUC", "NDCG (lpae)") if c in frame],
                      var_name="metric", value_name="value")
    fig = px.bar(long, x="model", y="value", color="metric", barmode="group", facet_col="protocol",
                 text_auto=".3f", title="Teacher against students: test ranking per negative protocol")
    fig.add_hline(y=0.5, line={"dash": "dot", "width": 1, "color": "grey"}, annotation_text="chance",
                  annotation_position="bottom right")
    fig.update_traces(textangle=0, textposition="outside", textfont_size=10)
    fig.update_layout(height=height, margin={"t": 60, "b": 40, "l": 60, "r": 20})
    fig.update_yaxes(title_text="", range=[0, 1.05])
    return fig
