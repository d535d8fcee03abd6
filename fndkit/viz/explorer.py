"""Interactive explorer of the teacher's user-outfit space (paper §4.9, Fig. 8): widget wiring only.

Everything computed comes from :mod:`fndkit.viz.projection`; this module draws it.

* :class:`SpaceExplorer` — controls (users, t-SNE / UMAP / PCA, perplexity, neighbours, Redraw),
  the plotly picture and a details panel that shows the hovered or clicked outfit's item images,
  teacher and student scores, its false-negativeness d (eq. 12) and, on the built-in benchmark,
  its true affinity.
* :func:`outfit_gallery` — a user's top-k recommended outfits among their test candidates, with
  thumbnails.
* :func:`space_figure` / :func:`export_static` — the same picture as a plain plotly figure and a
  self-contained HTML file (plus PNG where Chromium is installed) for runs without a live kernel.

Why no ``go.FigureWidget``: in plotly 6+ it needs the ``anywidget`` package, which this
environment does not ship. The figure is instead shown through plotly's own JupyterLab renderer
(``application/vnd.plotly.v1+json``) inside an ``ipywidgets.Output`` and replaced on every redraw;
a small script beside it forwards plotly's hover and click events to a hidden ``ipywidgets.Text``,
whose value change reaches Python like any widget edit.
"""

from __future__ import annotations

import html
import io
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import ipywidgets as w
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from ..artifacts import atomic_path
from ..config import check_int
from ..data.schema import OutfitDataset
from ..repro import seed_everything
from ..rundir import EXPLORER, RunFolder
from ..stages.params import StageParams
from . import projection as P
from .figures import save_figure
from .pictures import outfit_strip

USER_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2",
                "#8c564b", "#bcbd22", "#7f7f7f")
METHOD_LABELS = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


# --------------------------------------------------------------------------------------------
# the picture


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def _truthy(v: Any) -> bool:
    """True for True / np.True_, False for False and for a missing value (pd.NA, None)."""
    return v is not None and v is not pd.NA and bool(v)


def _hover(row: pd.Series) -> str:
    if row["kind"] == "user":
        return f"<b>user {row['user']}</b><br>positive boundary r̂ = {_fmt(row['positive_boundary'])}"
    lines = [f"<b>{row['kind'].replace('_', '-')} outfit of user {row['user']}</b>",
             f"items {row['items']}",
             f"teacher score {_fmt(row['teacher_score'])} (r̂ = {_fmt(row['positive_boundary'])})",
             f"d (eq. 12) = {_fmt(row['d_weight'])}"
             + (" → inside the positive boundary" if row["inside_boundary"] else "")]
    if not np.isnan(row["student_score"]):
        lines.append(f"student score {_fmt(row['student_score'])}")
    if not np.isnan(row["true_affinity"]):
        lines.append(f"true affinity {_fmt(row['true_affinity'])}"
                     + (" (ground truth: would like it)" if _truthy(row["truth_positive"]) else ""))
    return "<br>".join(lines)


def _outfit_groups(frame: pd.DataFrame) -> list[tuple[str, pd.Series, dict]]:
    """(legend name, row mask, marker style) per outfit kind, drawn in this order."""
    kind, flagged = frame["kind"], frame["flagged_false_negative"]
    thin = {"width": 0.5, "color": "white"}
    return [
        ("training positive", kind == "positive", {"symbol": "square", "size": 8, "line": thin}),
        ("negative (random mixture)", (kind == "negative") & ~flagged,
         {"symbol": "square-open", "size": 7, "opacity": 0.75}),
        ("negative inside the positive boundary (d < 0)", (kind == "negative") & flagged,
         {"symbol": "diamond", "size": 11, "line": {"width": 2, "color": "black"}}),
        ("held-out positive among negatives", (kind == "held_out") & ~flagged,
         {"symbol": "star", "size": 12, "line": {"width": 0.5, "color": "grey"}}),
        ("held-out positive inside the boundary (d < 0)", (kind == "held_out") & flagged,
         {"symbol": "star", "size": 14, "line": {"width": 2, "color": "black"}}),
    ]


def space_figure(frame: pd.DataFrame, title: str | None = None, meta: Any = None):
    """The user-outfit space as a plotly figure (Fig. 8's layout).

    Users are ✕ markers in their own colour; outfits take their user's colour: training positives
    filled squares, negatives open squares, negatives the teacher places inside the user's positive
    boundary (d < 0) black-bordered diamonds, held-out positives stars (black-bordered when inside),
    and a gold ring marks every negative the ground truth calls positive. Each point's
    ``customdata`` is its ``point`` row.
    """
    users = list(frame.loc[frame["kind"] == "user", "user"])
    colour = {u: USER_COLOURS[i % len(USER_COLOURS)] for i, u in enumerate(users)}
    fig = go.Figure()
    outfits = frame[frame["kind"] != "user"]
    for name, mask, style in _outfit_groups(outfits):
        rows = outfits[mask]
        marker = {**style, "color": [colour[u] for u in rows["user"]]}
        fig.add_trace(go.Scatter(x=rows["x"].tolist(), y=rows["y"].tolist(), mode="markers", name=name,
                                 marker=marker, customdata=rows["point"].tolist(),
                                 hovertext=[_hover(r) for _, r in rows.iterrows()],
                                 hovertemplate="%{hovertext}<extra></extra>"))
    truth = outfits[(outfits["kind"] != "positive") & outfits["truth_positive"].fillna(False).astype(bool)]
    if len(truth):
        fig.add_trace(go.Scatter(x=truth["x"].tolist(), y=truth["y"].tolist(), mode="markers",
                                 name="ground truth: the user would like it",
                                 marker={"symbol": "circle-open", "size": 19, "color": "#e6a700",
                                         "line": {"width": 2}},
                                 hoverinfo="skip"))
    for u in users:
        row = frame[(frame["kind"] == "user") & (frame["user"] == u)]
        fig.add_trace(go.Scatter(x=row["x"].tolist(), y=row["y"].tolist(), mode="markers",
                                 name=f"user {u}", customdata=row["point"].tolist(),
                                 marker={"symbol": "x", "size": 18, "color": colour[u],
                                         "line": {"width": 1, "color": "black"}},
                                 hovertext=[_hover(r) for _, r in row.iterrows()],
                                 hovertemplate="%{hovertext}<extra></extra>"))
    attrs = frame.attrs
    method = attrs.get("method", "")
    detail = {"tsne": f", perplexity {attrs.get('perplexity')}",
              "umap": f", {attrs.get('n_neighbours')} neighbours"}.get(method, "")
    fig.update_layout(
        title=title or f"User-outfit space ({METHOD_LABELS.get(method, method)}{detail})",
        height=620, plot_bgcolor="white", hovermode="closest", meta=meta,
        legend={"itemsizing": "constant"}, margin={"l": 20, "r": 20, "t": 50, "b": 20})
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x")
    return fig


def export_static(frame: pd.DataFrame, path_stem: str | Path, title: str | None = None,
                  png: bool = True) -> list[Path]:
    """Write the picture as ``<stem>.html`` (self-contained, hover shows scores, d and true
    affinity), ``<stem>.png`` where Chromium is installed (via :func:`fndkit.viz.figures.save_figure`),
    and the table itself as ``<stem>.csv``. Returns the paths written."""

    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    written = save_figure(space_figure(frame, title), path_stem, png=png)
    with atomic_path(path_stem.with_suffix(".csv")) as tmp:
        frame.to_csv(tmp, index=False)
    return [*written, path_stem.with_suffix(".csv")]


def outfit_png(dataset: OutfitDataset, items: np.ndarray, scale: int = 3) -> bytes:
    """PNG bytes of one or more outfits (rows of item ids) side by side, enlarged ``scale``×."""

    strip = outfit_strip(dataset, np.atleast_2d(items))
    img = Image.fromarray(strip)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# the live explorer

_BIND_SCRIPT = """<script>
(function () {
  var plotClass = "fndkit-plot-%(uid)s", pickClass = "fndkit-pick-%(uid)s", token = "%(token)s";
  var started = Date.now();
  function send(how, ev) {
    var input = document.querySelector("." + pickClass + " input");
    if (!input || !ev || !ev.points || !ev.points.length) return;
    var point = ev.points[0].customdata;
    if (point === undefined || point === null) return;
    input.value = how + ":" + point + ":" + Date.now();
    input.dispatchEvent(new Event("input", {bubbles: true}));
  }
  function bind() {
    var plots = document.querySelectorAll("." + plotClass + " .js-plotly-plot");
    for (var i = 0; i < plots.length; i++) {
      var gd = plots[i];
      if (gd.layout && gd.layout.meta === token && typeof gd.on === "function") {
        if (gd.getAttribute("data-fndkit-bound") !== token) {
          gd.setAttribute("data-fndkit-bound", token);
          gd.on("plotly_click", function (ev) { send("click", ev); });
          gd.on("plotly_hover", function (ev) { send("hover", ev); });
        }
        return;
      }
    }
    if (Date.now() - started < 60000) setTimeout(bind, 100);
  }
  bind();
})();
</script>"""


class SpaceExplorer:
    """Live picture of a model's user-outfit space with the teacher's false-negative flags.

    source: a run folder (str / Path) or a :class:`~fndkit.viz.projection.RunModels`.
    model: the stage whose space is shown ("teacher"); student: the stage giving the student
    score ("student_fnd"; skipped with a note when absent); users: ids, [] = three users picked
    as in Fig. 8 (:func:`~fndkit.viz.projection.default_users`); method: "tsne", "umap" or "pca".
    Bad parameters raise a clear ValueError here; later edits in the widgets show their error
    in the status line instead. ``frame`` is the current table (:func:`projection.space_frame`).
    """

    def __init__(self, source: Any, model: str = "teacher", student: str | None = "student_fnd",
                 users: Sequence[int] = (), method: str = "tsne", perplexity: int = 15,
                 n_neighbours: int = 15, n_negatives: int = 40, seed: int = 0,
                 device: str = "cpu"):
        if method not in P.METHODS:
            raise ValueError(f"method={method!r} is unknown; choose one of {', '.join(P.METHODS)}")
        for name, value, low in (("n_neighbours", n_neighbours, 2), ("n_negatives", n_negatives, 1)):
            check_int(name, value, low)
        self.models = (source if isinstance(source, P.RunModels)
                       else P.load_run_models(source, model=model, student=student, device=device))
        self.dataset = self.models.dataset
        self.n_negatives, self.seed, self.device = n_negatives, seed, device
        self._spaces: dict[tuple, P.SpaceData] = {}
        if isinstance(users, (str, int)):
            raise ValueError(f"users={users!r} must be a list of user ids, e.g. [3, 7] (with papermill: "
                             f"-y 'users: [3, 7]'); [] picks three users as in Fig. 8")
        users = list(users) or P.default_users(self.dataset, self.models.teacher)
        self.space = self._space(users)
        self.frame = P.space_frame(self.space, method, perplexity, n_neighbours, seed)
        self._uid = uuid.uuid4().hex[:12]
        self._revision = 0

        eligible = P.eligible_users(self.dataset)
        self.users_select = w.SelectMultiple(
            options=[(f"user {u}", int(u)) for u in eligible], value=tuple(self.space.users),
            rows=min(8, len(eligible)), description="users")
        self.users_select.add_class("fndkit-users")
        self.method_select = w.Dropdown(options=[(METHOD_LABELS[m], m) for m in P.METHODS],
                                        value=method, description="method")
        n_points = len(self.space.vectors)
        self.perplexity_slider = w.IntSlider(value=int(perplexity), min=2, max=max(100, int(perplexity)),
                                             description="perplexity", continuous_update=False)
        self.neighbours_slider = w.IntSlider(value=int(n_neighbours), min=2,
                                             max=max(100, int(n_neighbours)),
                                             description="neighbours", continuous_update=False)
        self.redraw_button = w.Button(description="Redraw", icon="refresh")
        self.status = w.HTML()
        self.plot = w.Output(layout=w.Layout(width="100%", min_height="620px"))
        self.plot.add_class(f"fndkit-plot-{self._uid}")
        self.plot.add_class("fndkit-plot")
        self._pick = w.Text(layout=w.Layout(display="none"))
        self._pick.add_class(f"fndkit-pick-{self._uid}")
        self.details_title = w.HTML("<i>hover over or click a point to inspect it</i>")
        self.details_image = w.Image(format="png", layout=w.Layout(width="auto"))
        self.details_text = w.HTML()
        details = w.VBox([self.details_title, self.details_image, self.details_text],
                         layout=w.Layout(width="340px", min_width="300px"))
        controls = w.HBox([self.users_select,
                           w.VBox([self.method_select, self.perplexity_slider, self.neighbours_slider]),
                           self.redraw_button])
        self.widget = w.VBox([controls, self.status, w.HBox([self.plot, details]), self._pick])
        self.widget.add_class("fndkit-explorer")

        for control in (self.users_select, self.method_select, self.perplexity_slider,
                        self.neighbours_slider):
            control.observe(lambda _change: self.redraw(), names="value")
        self.redraw_button.on_click(lambda _b: self.redraw())
        self._pick.observe(self._on_pick, names="value")
        self._show(n_points)

    # ---- computation ---------------------------------------------------------------------
    def _space(self, users: Sequence[int]) -> P.SpaceData:
        key = tuple(P.check_users(self.dataset, users))
        if key not in self._spaces:
            self._spaces[key] = P.run_space(self.models, users=list(key), n_negatives=self.n_negatives,
                                            seed=self.seed, device=self.device)
        return self._spaces[key]

    @property
    def users(self) -> list[int]:
        return list(self.space.users)

    def redraw(self) -> None:
        """Recompute from the controls (projections are cached) and replace the picture."""
        method = self.method_select.value
        self.perplexity_slider.disabled = method != "tsne"
        self.neighbours_slider.disabled = method != "umap"
        try:
            if not self.users_select.value:
                raise ValueError("pick at least one user")
            self.status.value = "<i>computing…</i>"
            space = self._space(self.users_select.value)
            frame = P.space_frame(space, method, self.perplexity_slider.value,
                                  self.neighbours_slider.value, self.seed)
        except ValueError as exc:
            self.status.value = f"<span style='color:#b00020'>⚠ {_escape(str(exc))}</span>"
            return
        self.space, self.frame = space, frame
        self._show(len(space.vectors))

    def figure(self, meta: Any = None):
        return space_figure(self.frame, meta=meta)

    def _show(self, n_points: int) -> None:
        method = self.frame.attrs["method"]
        self.perplexity_slider.disabled = method != "tsne"
        self.neighbours_slider.disabled = method != "umap"
        self._revision += 1
        token = f"{self._uid}-{self._revision}"
        fig = self.figure(meta=token)
        bundle = {"application/vnd.plotly.v1+json": json.loads(fig.to_json()),
                  "text/plain": f"<user-outfit space: {n_points} points; needs JupyterLab's plotly renderer>"}
        script = _BIND_SCRIPT % {"uid": self._uid, "token": token}
        self.plot.outputs = (
            {"output_type": "display_data", "data": bundle, "metadata": {}},
            {"output_type": "display_data", "data": {"text/html": script, "text/plain": ""}, "metadata": {}},
        )
        counts = P.flag_counts(self.frame)
        parts = []
        for u, c in counts.items():
            truth = (f", ground truth positive {c['flagged_truth_positive']}"
                     if c["flagged_truth_positive"] is not None else "")
            parts.append(f"user {u}: {c['flagged']} of {c['negatives'] + c['held_out_shown']} "
                         f"negatives inside the boundary (held-out positives {c['flagged_held_out']}"
                         f" of {c['held_out_shown']}{truth})")
        self.status.value = (f"{METHOD_LABELS[method]} of {n_points} points. " + "; ".join(parts))

    # ---- details panel -------------------------------------------------------------------
    def _on_pick(self, change) -> None:
        how, _, rest = str(change["new"]).partition(":")
        try:
            point = int(rest.split(":")[0])
        except ValueError:
            return
        self.show_point(point, how=how)

    def show_point(self, point: int, how: str = "click") -> None:
        """Fill the details panel with row ``point`` of :attr:`frame`."""
        if not 0 <= point < len(self.frame):
            return
        row = self.frame.iloc[point]
        verb = "clicked" if how == "click" else "hovered"
        if row["kind"] == "user":
            c = P.flag_counts(self.frame).get(str(int(row["user"])), {})
            self.details_title.value = f"<b>user {row['user']}</b> ({verb})"
            self.details_image.value = b""
            self.details_text.value = _table([
                ("positive boundary r̂ (eq. 11)", _fmt(row["positive_boundary"])),
                ("training positives shown", c.get("positives")),
                ("negatives inside the boundary", c.get("flagged")),
                ("… held-out positives", c.get("flagged_held_out")),
                ("… ground truth positive", _fmt(c.get("flagged_truth_positive")))])
            return
        self.details_title.value = (f"<b>{row['kind'].replace('_', '-')} outfit of user {row['user']}"
                                    f"</b> ({verb})")
        self.details_image.value = outfit_png(self.dataset, P.parse_items(row["items"]))
        self.details_text.value = _table([
            ("items", row["items"]),
            ("teacher score (eq. 9)", _fmt(row["teacher_score"])),
            ("positive boundary r̂_i", _fmt(row["positive_boundary"])),
            ("d = α(r̂_i − r̂_ijk) (eq. 12)", _fmt(row["d_weight"])),
            ("inside the boundary", _fmt(bool(row["inside_boundary"]))),
            (f"{self.models.student_name or 'student'} score", _fmt(row["student_score"])),
            ("held-out positive", _fmt(bool(row["is_held_out_positive"]))),
            ("true affinity", _fmt(row["true_affinity"])),
            ("ground truth: would like it", _fmt(row["truth_positive"]))])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _escape(text: str) -> str:
    return html.escape(text)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td style='padding-right:10px'>{_escape(str(k))}</td><td>{_escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table style='font-size:12px'>{body}</table>"


# --------------------------------------------------------------------------------------------
# the top-k gallery


class OutfitGallery:
    """A user's top-k outfits among their test candidates (:func:`projection.top_k_outfits`),
    one row of item thumbnails each, with score, student score, label and true affinity.

    The candidates are the fixed evaluation lists (one held-out positive : ten random mixtures per
    test outfit), so the gallery shows exactly what AUC and NDCG rank; scoring every possible
    mixture is out of reach (the pool is explosively large, paper §1).
    """

    def __init__(self, models: P.RunModels, user: int, k: int = 10, split: str = "test",
                 protocol: str = "random", device: str = "cpu"):
        self.models, self.split, self.protocol, self.device = models, split, protocol, device
        cand_users = np.unique(models.dataset.candidate_set(split, protocol).user)
        self.user_select = w.Dropdown(options=[(f"user {u}", int(u)) for u in cand_users],
                                      description="user")
        self.k_slider = w.IntSlider(value=k, min=1, max=max(50, k), description="top k",
                                    continuous_update=False)
        self.rows = w.VBox()
        self.widget = w.VBox([w.HBox([self.user_select, self.k_slider]), self.rows])
        self.widget.add_class("fndkit-gallery")
        self.table = self._render(int(user), int(k))
        self.user_select.value = int(user)
        self.user_select.observe(lambda _c: self._update(), names="value")
        self.k_slider.observe(lambda _c: self._update(), names="value")

    def _update(self) -> None:
        self.table = self._render(self.user_select.value, self.k_slider.value)

    def _render(self, user: int, k: int) -> pd.DataFrame:
        m = self.models
        table = P.top_k_outfits(m.dataset, m.model, user, k, self.split, self.protocol,
                                student=m.student, device=self.device)
        rows = []
        for _, r in table.iterrows():
            label = "<b style='color:#2ca02c'>held-out positive</b>" if r["label"] else "negative"
            text = (f"#{r['rank']} &nbsp; {m.model_name} score {_fmt(r['score'])}"
                    + (f" &nbsp; {m.student_name} {_fmt(r['student_score'])}" if m.student is not None else "")
                    + f"<br>{label}"
                    + (f" &nbsp; true affinity {_fmt(r['true_affinity'])}"
                       if not np.isnan(r["true_affinity"]) else ""))
            rows.append(w.HBox([w.Image(value=outfit_png(m.dataset, P.parse_items(r["items"]), scale=2),
                                        format="png"), w.HTML(text)]))
        self.rows.children = rows
        return table

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def outfit_gallery(source: Any, model: str = "teacher", user: int | None = None, k: int = 10,
                   student: str | None = "student_fnd", split: str = "test",
                   protocol: str = "random", device: str = "cpu") -> OutfitGallery:
    """Browse a user's top-``k`` outfits (see :class:`OutfitGallery`).

    source: a run folder, a :class:`~fndkit.viz.projection.RunModels` (e.g. ``explorer.models``),
    or an :class:`OutfitDataset` (then ``model`` must be a model object). user: None = the first
    user with candidates.
    """
    if isinstance(source, OutfitDataset):
        if isinstance(model, str):
            raise ValueError("with a dataset as source, pass the model object itself as model=, "
                             "or pass the run folder instead")
        models = P.RunModels(source, model, model, None, "model", None, P.DEFAULT_ALPHA, {})
    elif isinstance(source, P.RunModels):
        models = source
    else:
        models = P.load_run_models(source, model=model, student=student, device=device)
    if user is None:
        user = int(models.dataset.candidate_set(split, protocol).user.min())
    return OutfitGallery(models, int(user), k=k, split=split, protocol=protocol, device=device)


@dataclass(frozen=True)
class Params(StageParams):
    """notebooks/06_explorer's parameters cell."""

    kind: ClassVar[str] = "explorer"
    notebook: ClassVar[str] = "06_explorer"

    run_dir: str = "outputs/demo"
    model: str = "teacher"
    student: str | None = "student_fnd"
    users: list = field(default_factory=list)
    method: str = "tsne"
    perplexity: int = 15
    n_neighbours: int = 15
    n_negatives: int = 40
    seed: int = 0


def run_explorer(params: Params) -> tuple[SpaceExplorer, dict]:
    """06_explorer for ``params``: the explorer, its static export (HTML and PNG) and
    ``explorer/metrics.json`` (the flag counts per user); returns the explorer and the metrics."""
    seed_everything(params.seed)
    run = RunFolder(params.run_dir)
    explorer = SpaceExplorer(run, model=params.model, student=params.student, users=params.users,
                             method=params.method, perplexity=params.perplexity,
                             n_neighbours=params.n_neighbours, n_negatives=params.n_negatives, seed=params.seed)
    metrics = {"model": params.model, "student": explorer.models.student_name, "alpha": explorer.models.alpha,
               "method": params.method, "perplexity": params.perplexity, "n_neighbours": params.n_neighbours,
               "n_negatives": params.n_negatives, "seed": params.seed, "users": explorer.users,
               "per_user": P.flag_counts(explorer.frame)}
    # one writer; each projection method keeps its own result (space_<method>.* and its entry in
    # "methods"): a PCA run and a t-SNE run on one folder leave both; the top level is the latest
    with run.claimed(EXPLORER):
        export_static(explorer.frame, run.path(EXPLORER, f"space_{params.method}"))
        earlier = run.read_metrics(EXPLORER).get("methods", {}) if run.metrics_path(EXPLORER).exists() else {}
        metrics["methods"] = {**earlier, params.method: {k: v for k, v in metrics.items() if k != "methods"}}
        run.write_metrics(EXPLORER, metrics)
    return explorer, metrics


def execute(params: Params, progress: bool = True) -> dict:
    """06_explorer without a kernel: the export and the metrics (see :func:`run_explorer`)."""
    return run_explorer(params)[1]
