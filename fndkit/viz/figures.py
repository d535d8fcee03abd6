"""Figures the notebooks show and save: training curves, autoencoder pictures, and ``save_figure``
(self-contained HTML, plus PNG where Chromium is installed)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..artifacts import atomic_path, load_checkpoint, read_json
from ..models import autoencoder as ae
from ..rundir import AUTOENCODER, RunFolder
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

_PNG_EXPORT = """
import sys
import plotly.io as pio
fig = pio.from_json(open(sys.argv[1]).read())
fig.write_image(sys.argv[2], format="png")
"""


def save_figure(fig, path_stem: str | Path, png: bool = True) -> list[Path]:
    """Write ``<stem>.html`` (self-contained) and, where Chromium is installed, ``<stem>.png``.

    The PNG is rendered by kaleido's headless Chromium in a child process with a time limit
    (``PNG_TIMEOUT_S``): we saw that browser hang once with two exports running at the same time,
    and a picture must never stall a training chain. ``FNDKIT_PNG=0`` turns PNG export off.
    """
    path_stem = Path(path_stem)
    written = []
    with atomic_path(path_stem.with_suffix(".html")) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True)
    written.append(path_stem.with_suffix(".html"))
    if not (png and shutil.which("chromium") and os.environ.get("FNDKIT_PNG", "1") != "0"):
        return written
    target = path_stem.with_suffix(".png")
    with tempfile.TemporaryDirectory() as scratch:
        spec, rendered = Path(scratch) / "figure.json", Path(scratch) / "figure.png"
        spec.write_text(fig.to_json())
        proc = subprocess.Popen([sys.executable, "-c", _PNG_EXPORT, str(spec), str(rendered)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own group: Chromium's children die with it
        try:
            _, err = proc.communicate(timeout=PNG_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            err = f"no PNG after {PNG_TIMEOUT_S} s"
        if proc.returncode == 0 and rendered.exists():
            with atomic_path(target) as tmp:
                shutil.copyfile(rendered, tmp)
            written.append(target)
        else:  # the HTML is the artifact; the PNG is a convenience
            last = (err or "").strip().splitlines()[-1:] or ["unknown error"]
            print(f"PNG export of {path_stem.name} skipped: {last[0]}")
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
