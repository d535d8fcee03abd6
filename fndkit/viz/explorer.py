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
whose value change reaches Python like any widget edit. A click also sends where it fell, and
:func:`pick_point` opens the marker drawn on top there (plotly's own pick prefers the smaller of
overlapping markers, so in a zoomed-out picture a click on a flagged diamond opened a neighbour).

``explorer/metrics.json`` keeps every method's latest run under ``by_method`` (a PCA run keeps the
t-SNE run's counts); :meth:`SpaceExplorer.snapshot` is the picture as static output, what a
notebook reopened without its kernel shows.
"""

from __future__ import annotations

import base64
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
DETAILS_HINT = "<i>hover over or click a point to inspect it</i>"


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


def drawn_markers(fig) -> pd.DataFrame:
    """Every clickable marker of a :func:`space_figure` in drawing order (later ones lie on top):
    columns ``point`` (its ``customdata``), ``x``, ``y``, ``radius_px`` (half the marker size plus
    half its outline) and ``order``. Traces whose hover is skipped (the ground-truth rings) take
    no clicks and are left out."""
    rows = []
    for trace in fig.data:
        if trace.hoverinfo == "skip" or trace.customdata is None:
            continue
        size = trace.marker.size if trace.marker.size is not None else 6
        line = trace.marker.line.width if trace.marker.line is not None and trace.marker.line.width else 0
        sizes = np.broadcast_to(np.asarray(size, dtype=float), (len(trace.x),))
        for point, x, y, diameter in zip(trace.customdata, trace.x, trace.y, sizes):
            rows.append((int(point), float(x), float(y), diameter / 2 + line / 2))
    markers = pd.DataFrame(rows, columns=["point", "x", "y", "radius_px"])
    markers["order"] = np.arange(len(markers))
    return markers


def pick_point(markers: pd.DataFrame, x: float, y: float, px_per_x: float, px_per_y: float,
               slack_px: float = 1.0) -> int | None:
    """The point a click at data coordinates (``x``, ``y``) hits: of the markers
    (:func:`drawn_markers`) whose drawn disc holds the click (``slack_px`` of tolerance), the one
    drawn on top, which is the one the user sees and meant. ``px_per_x`` / ``px_per_y``: the
    axes' pixels per data unit (plotly's ``_m``; the sign does not matter). None when no marker
    holds the click.

    plotly's own choice differs where markers overlap (a zoomed-out picture): its closest-point
    rule ranks a cursor inside a marker by ``1 - 3 / radius``, so the smaller marker wins, and a
    click on a large flagged diamond drawn over a small negative square opened the square.
    """
    if markers.empty:
        return None
    dx = (markers["x"].to_numpy() - x) * px_per_x
    dy = (markers["y"].to_numpy() - y) * px_per_y
    inside = np.hypot(dx, dy) <= markers["radius_px"].to_numpy() + slack_px
    if not inside.any():
        return None
    hit = markers[inside]
    return int(hit["point"].iloc[int(np.argmax(hit["order"].to_numpy()))])


def parse_pick(value: str) -> tuple[str, int, tuple[float, float, float, float] | None] | None:
    """What the page sent: ``how:point:time`` (hover) or ``click:point:time:x:y:mx:my`` (a click
    with its data coordinates and the axes' pixels per unit) → ``(how, point, cursor or None)``;
    None for anything else."""
    parts = str(value).split(":")
    try:
        how, point = parts[0], int(parts[1])
    except (IndexError, ValueError):
        return None
    cursor = None
    if len(parts) >= 7:
        try:
            cursor = tuple(float(v) for v in parts[3:7])
        except ValueError:
            cursor = None
        if cursor is not None and not all(np.isfinite(cursor)):
            cursor = None
    return how, point, cursor


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
  // where a click fell, in data coordinates, and the axes' pixels per data unit: Python picks
  // the marker drawn on top there (plotly's own pick prefers the smaller of overlapping markers)
  function cursor(gd, ev) {
    try {
      var e = ev.event, xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
      var box = gd.getBoundingClientRect();
      var c = [xa.p2d(e.clientX - box.left - xa._offset), ya.p2d(e.clientY - box.top - ya._offset),
               xa._m, ya._m];
      return c.every(isFinite) ? ":" + c.join(":") : "";
    } catch (err) {
      return "";
    }
  }
  function send(how, ev, gd) {
    var input = document.querySelector("." + pickClass + " input");
    if (!input || !ev || !ev.points || !ev.points.length) return;
    var point = ev.points[0].customdata;
    if (point === undefined || point === null) return;
    input.value = how + ":" + point + ":" + Date.now() + (how === "click" ? cursor(gd, ev) : "");
    input.dispatchEvent(new Event("input", {bubbles: true}));
  }
  function bindOne(gd) {
    gd.setAttribute("data-fndkit-bound", token);
    gd.on("plotly_click", function (ev) { send("click", ev, gd); });
    gd.on("plotly_hover", function (ev) { send("hover", ev, gd); });
  }
  function bind() {
    var plots = document.querySelectorAll("." + plotClass + " .js-plotly-plot");
    for (var i = 0; i < plots.length; i++) {
      var gd = plots[i];
      if (gd.layout && gd.layout.meta === token && typeof gd.on === "function") {
        if (gd.getAttribute("data-fndkit-bound") !== token) bindOne(gd);
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
        self.static_png: Path | None = None  # the PNG export of this picture, where one was written
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
        self.details_title = w.HTML(DETAILS_HINT)
        # hidden while it has no picture: an empty image widget shows a broken-image icon
        self.details_image = w.Image(format="png", layout=w.Layout(width="auto", display="none"))
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
        if space is not self.space:  # other users: the panel's outfit is not in the picture any more
            self.clear_details()
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
        self._markers = drawn_markers(fig)
        bundle = {"application/vnd.plotly.v1+json": json.loads(fig.to_json()),
                  "text/plain": f"<user-outfit space: {n_points} points; needs JupyterLab's plotly renderer>"}
        script = _BIND_SCRIPT % {"uid": self._uid, "token": token}
        self.plot.outputs = (
            {"output_type": "display_data", "data": bundle, "metadata": {}},
            {"output_type": "display_data", "data": {"text/html": script, "text/plain": ""}, "metadata": {}},
        )
        self.status.value = (f"{METHOD_LABELS[method]} of {n_points} points. "
                             + "; ".join(flag_summary(u, c) for u, c in P.flag_counts(self.frame).items()))

    # ---- details panel -------------------------------------------------------------------
    def _on_pick(self, change) -> None:
        picked = parse_pick(change["new"])
        if picked is None:
            return
        how, point, cursor = picked
        if cursor is not None:  # a click: the marker drawn on top where it fell (see pick_point)
            on_top = pick_point(self._markers, *cursor)
            point = point if on_top is None else on_top
        self.show_point(point, how=how)

    def _set_image(self, png: bytes | None) -> None:
        self.details_image.value = png or b""
        self.details_image.layout.display = None if png else "none"

    def clear_details(self) -> None:
        """Empty the details panel (back to its hint, no picture)."""
        self.details_title.value = DETAILS_HINT
        self._set_image(None)
        self.details_text.value = ""

    def show_point(self, point: int, how: str = "click") -> None:
        """Fill the details panel with row ``point`` of :attr:`frame`."""
        if not 0 <= point < len(self.frame):
            return
        row = self.frame.iloc[point]
        verb = "clicked" if how == "click" else "hovered"
        if row["kind"] == "user":
            c = P.flag_counts(self.frame).get(str(int(row["user"])), {})
            self.details_title.value = f"<b>user {row['user']}</b> ({verb})"
            self._set_image(None)
            flagged_negatives = c["flagged"] - c["flagged_held_out"] if c else None
            self.details_text.value = _table([
                ("positive boundary r̂ (eq. 11)", _fmt(row["positive_boundary"])),
                ("training positives shown", c.get("positives")),
                ("negatives inside the boundary", f"{flagged_negatives} of {c.get('negatives')}"),
                ("held-out positives inside it", f"{c.get('flagged_held_out')} of {c.get('held_out_shown')}"),
                ("flagged that the ground truth calls positive", _fmt(c.get("flagged_truth_positive")))])
            return
        self.details_title.value = (f"<b>{row['kind'].replace('_', '-')} outfit of user {row['user']}"
                                    f"</b> ({verb})")
        self._set_image(outfit_png(self.dataset, P.parse_items(row["items"])))
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

    def snapshot(self, png: str | Path | None = None) -> "StaticPicture":
        """The current picture as static output, for a notebook reopened without its kernel
        (where the live widget shows nothing): plotly's figure JSON, which JupyterLab draws
        without a kernel, plus ``png`` (default: the export :func:`run_explorer` wrote, where
        Chromium made one) for viewers without plotly."""
        png = Path(png) if png is not None else self.static_png
        return StaticPicture(self.figure(), png if png is not None and png.exists() else None,
                             f"{self.summary()} (static picture)")

    def summary(self) -> str:
        method = self.frame.attrs.get("method", "")
        return (f"user-outfit space, {METHOD_LABELS.get(method, method)} of {len(self.frame)} points, "
                f"users {', '.join(map(str, self.users))}")

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):  # instead of "VBox(children=…)" where the widget cannot be drawn
            bundle["text/plain"] = f"<{self.summary()}: a live widget, shown with a running kernel>"
        return bundle


@dataclass
class StaticPicture:
    """A figure shown as static output: plotly JSON, a PNG where there is one, a line of text."""

    figure: Any
    png: Path | None = None
    text: str = "user-outfit space"

    def _repr_mimebundle_(self, **kwargs):
        bundle = {"application/vnd.plotly.v1+json": json.loads(self.figure.to_json()),
                  "text/plain": f"<{self.text}>"}
        if self.png is not None:
            bundle["image/png"] = base64.b64encode(Path(self.png).read_bytes()).decode("ascii")
        return bundle


def flag_summary(user: Any, c: dict) -> str:
    """The status line's part for one user (``c``: :func:`projection.flag_counts`'s entry):
    sampled negatives and held-out positives inside the positive boundary, counted apart (a
    held-out positive is no negative), and how many of those flagged the ground truth calls
    positive where it is known."""
    negatives = c["flagged"] - c["flagged_held_out"]
    text = (f"user {user}: {negatives} of {c['negatives']} negatives and {c['flagged_held_out']} of "
            f"{c['held_out_shown']} held-out positives inside the boundary")
    if c.get("flagged_truth_positive") is not None:
        text += f" ({c['flagged_truth_positive']} of the {c['flagged']} flagged the ground truth calls positive)"
    return text


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
    # one writer; each projection method keeps its own result (space_<method>.* and its entry under
    # "by_method"): a PCA run and a t-SNE run on one folder leave both; the top level is the latest
    with run.claimed(EXPLORER):
        written = export_static(explorer.frame, run.path(EXPLORER, f"space_{params.method}"))
        explorer.static_png = next((p for p in written if p.suffix == ".png"), None)
        earlier = run.read_metrics(EXPLORER) if run.metrics_path(EXPLORER).exists() else {}
        metrics = keep_methods(earlier, metrics)
        run.write_metrics(EXPLORER, metrics)
    return explorer, metrics


def keep_methods(earlier: dict, latest: dict) -> dict:
    """``explorer/metrics.json`` after a run of ``latest["method"]``: the latest run's fields at
    the top (what the job returns) and under ``by_method`` every method's latest run, so a PCA
    run keeps the t-SNE run's counts (an older file without ``by_method`` counts as its method's)."""
    by_method = dict(earlier.get("by_method") or {})
    if not by_method and earlier.get("method"):
        by_method[earlier["method"]] = {k: v for k, v in earlier.items() if k != "by_method"}
    by_method[latest["method"]] = {k: v for k, v in latest.items() if k != "by_method"}
    return {**latest, "by_method": dict(sorted(by_method.items()))}


def execute(params: Params, progress: bool = True) -> dict:
    """06_explorer without a kernel: the export and the metrics (see :func:`run_explorer`)."""
    return run_explorer(params)[1]
