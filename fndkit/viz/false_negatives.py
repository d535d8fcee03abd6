"""Figures of the false-negative lab (08_false_negatives and the ``fn_rate`` / ``fn_ablation``
experiments): plotly figures over the tables of :mod:`fndkit.stages.false_negatives` and
:mod:`fndkit.plans.lab`. Each takes a DataFrame and returns a figure; nothing is computed here."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TRUTH_COLOURS = {"true FN": "#d62728", "true negative": "#1f77b4"}


def d_distribution_figure(negatives: pd.DataFrame, alpha: float):
    """Histogram of d = α(r̂_i − r̂_ijk) for true false negatives against true negatives, with
    FND's boundary (d = 0: pulled left of it) and N-pair's strength (d = 1)."""
    df = negatives.assign(truth=negatives["is_fn"].map({True: "true FN", False: "true negative"}))
    fig = px.histogram(df, x="d", color="truth", barmode="overlay", histnorm="probability density",
                       nbins=80, color_discrete_map=TRUTH_COLOURS,
                       title=f"Teacher's d (α = {alpha:g}) for sampled negatives, by ground truth")
    fig.add_vline(x=0, line_dash="dash", annotation_text="d = 0: flagged left of it")
    fig.add_vline(x=1, line_dash="dot", annotation_text="d = 1: N-pair's push")
    fig.update_layout(height=380, xaxis_title="d (eq. 12)")
    return fig


def alpha_figure(table: pd.DataFrame):
    """Per α: the flags' precision / recall (flat: α cannot move them) and the share of pushes
    that α weakens (0 ≤ d < 1) or strengthens (d > 1), for true FNs and true negatives."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("flags (d < 0) against the truth",
                                                        "how α rescales the push"))
    first = table.drop_duplicates("alpha")
    fig.add_trace(go.Scatter(x=first["alpha"], y=first["flag_precision"], name="flag precision", mode="lines+markers"), 1, 1)
    fig.add_trace(go.Scatter(x=first["alpha"], y=first["flag_recall"], name="flag recall", mode="lines+markers"), 1, 1)
    for truth, part in table.groupby("truth", sort=False):
        colour = TRUTH_COLOURS.get(truth)
        fig.add_trace(go.Scatter(x=part["alpha"], y=part["weakened"], name=f"{truth}: 0 ≤ d < 1",
                                 mode="lines+markers", line={"color": colour, "dash": "dot"}), 1, 2)
        fig.add_trace(go.Scatter(x=part["alpha"], y=part["strengthened"], name=f"{truth}: d > 1",
                                 mode="lines+markers", line={"color": colour}), 1, 2)
    fig.update_xaxes(title_text="α")
    fig.update_yaxes(title_text="fraction", range=[0, 1])
    fig.update_layout(height=400, title="Flags and rescaling against α")
    return fig


def flag_pr_figure(pr: pd.DataFrame):
    """Precision against recall of "flag when r̂_i − r̂_ijk < t" over t; FND's t = 0 marked."""
    fig = px.line(pr.sort_values("recall"), x="recall", y="precision", markers=True,
                  hover_data=["threshold", "flagged_fraction"],
                  title="The teacher as a false-negative detector: moving its boundary")
    fnd = pr[pr["is_fnd"]]
    fig.add_trace(go.Scatter(x=fnd["recall"], y=fnd["precision"], mode="markers", name="FND (d < 0)",
                             marker={"size": 14, "symbol": "star", "color": "black"}))
    fig.update_layout(height=380, xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def strength_figure(strength: pd.DataFrame):
    """Flag precision / recall and the teacher's validation AUC against its training epochs."""
    df = strength.dropna(subset=["epoch"]).sort_values("epoch")
    fig = go.Figure()
    for col, name in (("precision", "flag precision"), ("recall", "flag recall"),
                      ("flagged_fraction", "flagged fraction"), ("val_auc", "teacher val AUC")):
        fig.add_trace(go.Scatter(x=df["epoch"], y=df[col], name=name, mode="lines+markers"))
    fig.update_layout(height=380, title="Flags against teacher strength (snapshots after each epoch)",
                      xaxis_title="teacher epochs", yaxis_title="value", yaxis_range=[0, 1.02])
    return fig


def calibration_figure(calibration: pd.DataFrame, threshold: float | None = None):
    """Teacher score against true affinity: mean ± std per equal-count bin of true affinity; the
    false-negative threshold as a vertical line."""
    fig = go.Figure(go.Scatter(x=calibration["true_affinity"], y=calibration["teacher_score"], mode="lines+markers",
                               error_y={"type": "data", "array": calibration["teacher_score_std"]},
                               name="teacher score"))
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", annotation_text="false-negative threshold")
    fig.update_layout(height=380, title="Calibration: the teacher's score against the true affinity",
                      xaxis_title="true affinity (generator)", yaxis_title="teacher score r̂ (cosine)")
    return fig


def gain_figure(summary: pd.DataFrame, x: str = "fn_rate", title: str = "Gain over N-pair"):
    """Gain in test AUC over N-pair (mean ± std over seeds) per method against ``x``; ``summary``
    has columns method, ``x``, gain_mean, gain_std (see :func:`fndkit.results.claims.compare`)."""
    fig = px.line(summary.sort_values(x), x=x, y="gain_mean", color="method", error_y="gain_std",
                  markers=True, title=title)
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(height=420, yaxis_title="test AUC − N-pair's", xaxis_title=x.replace("_", " "))
    return fig
