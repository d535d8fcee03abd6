"""User-outfit space (fndkit.viz.projection) and the explorer's wiring without a browser.

Flags are checked against closed-form values and against a naive per-outfit teacher loop; PCA
against numpy's SVD; gathering and t-SNE for determinism; every bad input for its message.
UMAP (35 s of numba compilation on first use) runs only with --runslow.
"""

import base64
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from fndkit.data.sampling import attach_candidates, positive_hashes
from fndkit.data.schema import outfit_hashes
from fndkit.data.synthetic import make_dataset
from fndkit.evaluate import image_fn_for
from fndkit.models.recommender import OutfitRecommender
from fndkit.stages import StageError
from fndkit.viz import projection as P


@pytest.fixture(scope="module")
def ds():
    return attach_candidates(make_dataset("tiny", seed=0), seed=0)


def _model(ds, seed):
    torch.manual_seed(seed)
    return OutfitRecommender("cnn-small", n_users=ds.n_users, dim=16, heads=2).eval()


@pytest.fixture(scope="module")
def models(ds):
    return {"teacher": _model(ds, 0), "student": _model(ds, 1)}


@pytest.fixture(scope="module")
def space(ds, models):
    # shown model = the student, so the teacher's flags must come from the teacher, not the shown one
    return P.gather_space(ds, models["student"], [1, 3], teacher=models["teacher"],
                          student=models["student"], n_negatives=12, alpha=2.0, seed=5)


# --------------------------------------------------------------------------------------------
# flags on hand-made scores


def test_positive_boundary_and_flags_closed_form():
    r_hat = P.positive_boundary(np.array([0.2, 0.4, -0.1]), np.array([0, 0, 1]), n_users=3)
    np.testing.assert_allclose(r_hat[:2], [0.3, -0.1])
    assert np.isnan(r_hat[2])  # a user without positives has no boundary
    scores = np.array([0.5, 0.1, 0.0, 0.35])
    boundary = np.array([0.3, 0.3, -0.1, 0.3])
    is_negative = np.array([True, True, True, False])
    flags = P.false_negative_flags(scores, boundary, alpha=2.0, is_negative=is_negative)
    np.testing.assert_allclose(flags["d_weight"], [-0.4, 0.4, -0.2, -0.1])
    assert flags["inside_boundary"].tolist() == [True, False, True, True]
    # a positive above the boundary is inside it, but only negatives are false negatives
    assert flags["flagged_false_negative"].tolist() == [True, False, True, False]


def test_flags_reject_bad_alpha_and_shapes():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        P.false_negative_flags(np.zeros(2), np.zeros(2), alpha=0.0, is_negative=np.ones(2, bool))
    with pytest.raises(ValueError, match="must both be"):
        P.false_negative_flags(np.zeros(2), np.zeros(3), alpha=1.0, is_negative=np.ones(2, bool))


def test_farthest_point_order_on_hand_made_vectors():
    v = np.array([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [0.0, 1.0]])
    assert P.farthest_point_order(v, start=0, k=3) == [0, 2, 3]
    assert P.farthest_point_order(v, start=1, k=10) == [1, 2, 3, 0]


def test_flag_counts_on_hand_made_frame():
    frame = pd.DataFrame({
        "kind": ["user", "positive", "negative", "negative", "held_out", "held_out"],
        "user": [4, 4, 4, 4, 4, 4],
        "flagged_false_negative": [False, False, True, False, True, False],
        "is_held_out_positive": [False, False, False, False, True, True],
        "truth_positive": pd.array([pd.NA, True, True, True, False, True], dtype="boolean"),
        "positive_boundary": [0.25] * 6,
    })
    c = P.flag_counts(frame)["4"]
    assert c == {"positives": 1, "negatives": 2, "held_out_shown": 2, "flagged": 2, "flagged_held_out": 1,
                 "flagged_truth_positive": 1, "truth_positive_negatives": 3, "positive_boundary": 0.25}
    frame["truth_positive"] = pd.array([pd.NA] * 6, dtype="boolean")
    assert P.flag_counts(frame)["4"]["flagged_truth_positive"] is None


# --------------------------------------------------------------------------------------------
# gather


def test_gathered_points_per_user(ds, space):
    f = space.frame
    train, test = ds.outfits_of("train"), ds.outfits_of("test")
    assert f.loc[f.kind == "user", "user"].tolist() == [1, 3]
    for u in (1, 3):
        mine = f[(f.user == u) & (f.kind != "user")]
        assert sorted(mine.loc[mine.kind == "positive", "outfit"]) == sorted(train[ds.outfit_user[train] == u])
        assert sorted(mine.loc[mine.kind == "held_out", "outfit"]) == sorted(test[ds.outfit_user[test] == u])
        assert (mine.kind == "negative").sum() == 12
    assert len(space.vectors) == len(f) == len(space.items)
    np.testing.assert_allclose(np.linalg.norm(space.vectors, axis=1), 1.0, atol=1e-5)
    # items column round-trips, and random mixtures are nobody's positive, drawn from train items
    rows = np.stack([P.parse_items(t) for t in f.loc[f.kind != "user", "items"]])
    np.testing.assert_array_equal(rows, space.items[f.kind.to_numpy() != "user"])
    negatives = space.items[(f.kind == "negative").to_numpy()]
    assert not np.isin(outfit_hashes(negatives), positive_hashes(ds)).any()
    train_items = ds.outfit_items[train]
    assert np.isin(negatives, train_items[train_items >= 0]).all()
    assert f.is_held_out_positive.tolist() == (f.kind == "held_out").tolist()


def test_gathered_flags_match_naive_teacher_loop(ds, models, space):
    teacher, student = models["teacher"], models["student"]
    f = space.frame
    outfits = f[f.kind != "user"]

    def naive(model, users, items):
        # the model's own forward (eq. 9, no item cache): an independent path to the same scores
        with torch.no_grad():
            return model(torch.as_tensor(np.array(users)), torch.as_tensor(np.array(items)),
                         image_fn_for(model, ds, "cpu")).numpy()

    items = space.items[outfits.point.to_numpy()]
    users = outfits.user.to_numpy()
    teacher_scores = naive(teacher, users, items)
    np.testing.assert_allclose(outfits.teacher_score, teacher_scores, atol=1e-5)
    np.testing.assert_allclose(outfits.student_score, naive(student, users, items), atol=1e-5)
    np.testing.assert_allclose(outfits.model_score, outfits.student_score, atol=1e-6)
    train = ds.outfits_of("train")
    for u in (1, 3):
        mine = train[ds.outfit_user[train] == u]
        r_hat = naive(teacher, [u] * mine.size, ds.outfit_items[mine]).mean()  # eq. 11
        rows = outfits[outfits.user == u]
        np.testing.assert_allclose(rows.positive_boundary, r_hat, atol=1e-5)
        np.testing.assert_allclose(rows.d_weight, 2.0 * (r_hat - rows.teacher_score), atol=1e-5)  # eq. 12
    flagged = (outfits.teacher_score > outfits.positive_boundary) & (outfits.kind != "positive")
    assert outfits.flagged_false_negative.tolist() == flagged.tolist()
    np.testing.assert_allclose(outfits.true_affinity, ds.truth.true_affinity(users, items))
    assert outfits.truth_positive.astype(bool).tolist() == ds.truth.is_false_negative(users, items).tolist()


def test_gather_is_seeded_per_user(ds, models):
    t = models["teacher"]
    a = P.gather_space(ds, t, [1, 3], n_negatives=8, seed=0).frame
    b = P.gather_space(ds, t, [1, 3], n_negatives=8, seed=0).frame
    pd.testing.assert_frame_equal(a, b)
    c = P.gather_space(ds, t, [1, 3], n_negatives=8, seed=1).frame
    assert a.loc[a.kind == "negative", "items"].tolist() != c.loc[c.kind == "negative", "items"].tolist()
    # another user added: user 3's negatives are the same draws
    d = P.gather_space(ds, t, [0, 3], n_negatives=8, seed=0).frame
    assert (a.loc[(a.user == 3) & (a.kind == "negative"), "items"].tolist()
            == d.loc[(d.user == 3) & (d.kind == "negative"), "items"].tolist())


def test_default_users_are_three_distinct_trained_users(ds, models):
    users = P.default_users(ds, models["teacher"])
    assert len(set(users)) == 3 and set(users) <= set(P.eligible_users(ds).tolist())
    assert users == P.default_users(ds, models["teacher"])


def test_ground_truth_columns_stay_empty_without_truth(ds, models):
    import copy

    no_truth = copy.copy(ds)
    no_truth.truth = None
    f = P.gather_space(no_truth, models["teacher"], [2], n_negatives=4).frame
    assert f.truth_positive.isna().all() and f.true_affinity.isna().all()
    assert P.flag_counts(f)["2"]["flagged_truth_positive"] is None


@pytest.mark.parametrize("users,needle", [
    ([999], r"users \[999\] are not trained users"),
    ([-1], r"users \[-1\] are not trained users"),
    (["a"], "must be integer user ids"),
    ([], "users is empty"),
])
def test_unknown_users_are_refused(ds, models, users, needle):
    with pytest.raises(ValueError, match=needle):
        P.gather_space(ds, models["teacher"], users)


def test_cold_users_are_refused(ds, models):
    cold = int(ds.cold_users[0])
    with pytest.raises(ValueError, match=rf"users \[{cold}\] are not trained users"):
        P.gather_space(ds, models["teacher"], [cold])


# --------------------------------------------------------------------------------------------
# project


def test_pca_matches_numpy_svd():
    x = np.random.default_rng(0).normal(size=(30, 8)) * np.arange(1, 9)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:2].T
    ours = P.project(x, "pca")
    signs = np.sign((ours * ref).sum(0))  # principal axes are defined up to sign
    np.testing.assert_allclose(ours * signs, ref, atol=1e-8)


def test_tsne_is_deterministic_by_seed():
    x = np.random.default_rng(1).normal(size=(40, 6))
    a = P.project(x, "tsne", perplexity=5, seed=3)
    b = P.project(x, "tsne", perplexity=5, seed=3)
    assert a.shape == (40, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # UMAP compiles numba for ~35 s on first use: run with --runslow
def test_umap_is_deterministic_by_seed():
    x = np.random.default_rng(2).normal(size=(40, 6))
    a = P.project(x, "umap", n_neighbours=8, seed=0)
    np.testing.assert_array_equal(a, P.project(x, "umap", n_neighbours=8, seed=0))
    assert a.shape == (40, 2)


@pytest.mark.parametrize("kwargs,needle", [
    ({"method": "mds"}, "method='mds' is unknown; choose one of tsne, umap, pca"),
    ({"method": "tsne", "perplexity": 10}, r"perplexity=10 must be > 0 and smaller than the number of points \(10\)"),
    ({"method": "tsne", "perplexity": 0}, "perplexity=0 must be > 0"),
    ({"method": "umap", "n_neighbours": 10}, r"n_neighbours=10 must be an integer from 2 to .* \(9\)"),
    ({"method": "umap", "n_neighbours": 1}, "n_neighbours=1 must be an integer from 2"),
])
def test_bad_projection_parameters_say_what_to_change(kwargs, needle):
    x = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match=needle):
        P.project(x, **kwargs)


def test_degenerate_vectors_are_refused():
    with pytest.raises(ValueError, match="at least 3 points"):
        P.project(np.zeros((2, 4)), "pca")
    with pytest.raises(ValueError, match="NaN or infinite"):
        P.project(np.full((5, 4), np.nan), "pca")
    with pytest.raises(ValueError, match=r"must be \[n, d\]"):
        P.project(np.zeros(5), "pca")


def test_projection_is_cached_per_method_and_parameters(space, monkeypatch):
    P.clear_projection_cache()
    calls = []
    real = P.project
    monkeypatch.setattr(P, "project", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    a = P.space_frame(space, "pca", perplexity=5)
    b = P.space_frame(space, "pca", perplexity=30)  # PCA ignores perplexity: same entry
    assert len(calls) == 1
    np.testing.assert_array_equal(a[["x", "y"]], b[["x", "y"]])
    P.space_frame(space, "tsne", perplexity=5)
    P.space_frame(space, "tsne", perplexity=5)
    P.space_frame(space, "tsne", perplexity=8)
    assert [c[0] for c in calls] == ["pca", "tsne", "tsne"]
    assert list(a.columns) == list(P.FRAME_COLUMNS) and a.attrs["method"] == "pca"


# --------------------------------------------------------------------------------------------
# run folders and the gallery


def test_run_folder_without_data_or_teacher_says_what_to_run(ds, tmp_path):
    with pytest.raises(StageError, match="run notebooks/00_data.ipynb"):
        P.load_run_models(tmp_path / "empty")
    ds.save(tmp_path / "run" / "data")
    with pytest.raises(StageError, match=r"no trained model 'teacher'.*run notebooks/02_teacher.ipynb"):
        P.load_run_models(tmp_path / "run")


def test_top_k_outfits_ranks_the_users_candidates(ds, models):
    t = models["teacher"]
    table = P.top_k_outfits(ds, t, user=2, k=7)
    cand = ds.candidate_set("test", "random")
    rows = np.flatnonzero(cand.user == 2)
    from fndkit.evaluate import score_rows

    all_scores = np.sort(score_rows(t, ds, cand.user[rows], cand.items[rows]))[::-1]
    np.testing.assert_allclose(table.score, all_scores[:7], atol=1e-6)
    assert table["rank"].tolist() == list(range(1, 8))
    positives = {tuple(r) for r in cand.items[rows][cand.label[rows] == 1]}
    assert table.label.tolist() == [int(tuple(P.parse_items(s)) in positives) for s in table["items"]]
    with pytest.raises(ValueError, match="user 999 has no test/random candidates"):
        P.top_k_outfits(ds, t, user=999)


# --------------------------------------------------------------------------------------------
# the explorer's wiring (no browser: widget values are set from Python)


@pytest.fixture
def run_models(ds, models):
    return P.RunModels(ds, models["teacher"], models["teacher"], models["student"], "teacher",
                       "student_fnd", 1.25, {})


def test_explorer_redraws_on_user_change_and_reports_errors(run_models):
    from fndkit.viz.explorer import SpaceExplorer

    ex = SpaceExplorer(run_models, users=[1], method="pca", n_negatives=6)
    first = ex.plot.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    ex.users_select.value = (2,)
    second = ex.plot.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert ex.users == [2] and set(ex.frame.user) == {2}
    assert first["layout"]["meta"] != second["layout"]["meta"]
    ex.method_select.value = "tsne"
    ex.perplexity_slider.value = 99  # more than the points of one user
    assert "perplexity=99 must be &gt; 0 and smaller than the number of points" in ex.status.value
    assert ex.frame.attrs["method"] == "tsne"  # the last good picture stays
    ex._pick.value = f"click:{int(ex.frame.point[ex.frame.kind == 'negative'].iloc[0])}:1"
    assert "negative outfit of user 2" in ex.details_title.value
    assert ex.details_image.value[:4] == b"\x89PNG" and "eq. 12" in ex.details_text.value


def test_explorer_bad_method_and_perplexity_fail_at_once(run_models):
    from fndkit.viz.explorer import SpaceExplorer

    with pytest.raises(ValueError, match="method='mds' is unknown"):
        SpaceExplorer(run_models, users=[1], method="mds")
    with pytest.raises(ValueError, match="perplexity=500 must be > 0 and smaller"):
        SpaceExplorer(run_models, users=[1], perplexity=500)
    with pytest.raises(ValueError, match=r"users='\[3\]' must be a list of user ids"):
        SpaceExplorer(run_models, users="[3]")


def test_space_figure_draws_every_point_once_in_its_group(space):
    from fndkit.viz.explorer import space_figure

    frame = P.space_frame(space, "pca")
    fig = space_figure(frame)
    drawn, rings = {}, 0
    for trace in fig.data:
        if trace.hoverinfo == "skip":  # the ground-truth rings overlay points drawn elsewhere
            rings = len(trace.x)
            continue
        for point in trace.customdata:
            assert point not in drawn
            drawn[point] = trace.name
    assert sorted(drawn) == frame.point.tolist()
    for _, row in frame.iterrows():
        name = drawn[row.point]
        assert (name.startswith("user ")) == (row.kind == "user")
        assert ("(d < 0)" in name) == bool(row.flagged_false_negative)
        assert name.startswith("held-out") == (row.kind == "held_out")
    truth = (frame.kind != "positive") & frame.truth_positive.fillna(False).astype(bool)
    assert rings == int(truth.sum())


def test_export_static_writes_html_and_table(space, tmp_path):
    from fndkit.viz.explorer import export_static

    frame = P.space_frame(space, "pca")
    written = export_static(frame, tmp_path / "explorer" / "space_pca", png=False)
    html = (tmp_path / "explorer" / "space_pca.html").read_text()
    assert "plotly" in html.lower() and len(html) > 1_000_000  # plotly.js embedded: self-contained
    back = pd.read_csv(tmp_path / "explorer" / "space_pca.csv")
    np.testing.assert_allclose(back.x, frame.x)
    assert {p.suffix for p in written} >= {".html", ".csv"}


# --------------------------------------------------------------------------------------------
# the click → record mapping, the details panel, the status line, the kept metrics (issue 31)


def _markers(rows):
    """Markers as :func:`~fndkit.viz.explorer.drawn_markers` gives them, in drawing order."""
    frame = pd.DataFrame(rows, columns=["point", "x", "y", "radius_px"])
    frame["order"] = np.arange(len(frame))
    return frame


def test_pick_point_takes_the_marker_drawn_on_top_not_the_smaller_one():
    from fndkit.viz.explorer import pick_point

    # a small negative square (radius 3.5 px) drawn first, a large flagged diamond (6.5 px) over it
    markers = _markers([(7, 0.0, 0.0, 3.5), (4, 0.2, 0.0, 6.5)])
    # 20 px per unit: a click at x = 0.19 lies inside both (3.8 px from the square's centre, 0.2 px
    # from the diamond's); plotly's closest rule ranks a cursor inside a marker by 1 - 3 / radius
    # (0.14 for the square, 0.54 for the diamond) and so opened the square
    assert pick_point(markers, 0.19, 0.0, 20.0, -20.0) == 4
    assert pick_point(markers, -0.2, 0.0, 20.0, -20.0) == 7  # 8 px from the diamond: only the square holds it
    assert pick_point(markers, 0.0, 5.0, 20.0, -20.0) is None  # nothing there: the caller keeps plotly's
    assert pick_point(markers.iloc[:0], 0.0, 0.0, 1.0, 1.0) is None


def test_a_click_on_any_marker_maps_to_its_own_record(space):
    from fndkit.viz.explorer import drawn_markers, pick_point, space_figure

    frame = P.space_frame(space, "pca")
    markers = drawn_markers(space_figure(frame))
    assert sorted(markers.point) == frame.point.tolist()
    assert (frame.point.to_numpy() == np.arange(len(frame))).all()  # show_point reads frame.iloc[point]
    zoom = 1e7  # zoomed in so far that no two markers overlap
    for _, m in markers.iterrows():
        assert pick_point(markers, m.x, m.y, zoom, -zoom) == m.point
    # zoomed out until every marker covers the click: the one drawn last is the one seen
    last = int(markers.point.iloc[-1])
    assert all(pick_point(markers, m.x, m.y, 1e-9, 1e-9) == last for _, m in markers.iterrows())


def test_parse_pick():
    from fndkit.viz.explorer import parse_pick

    assert parse_pick("hover:12:1700") == ("hover", 12, None)
    assert parse_pick("click:3:1700:0.5:-1.25:40:-38.5") == ("click", 3, (0.5, -1.25, 40.0, -38.5))
    assert parse_pick("click:3:1700:NaN:0:1:1") == ("click", 3, None)
    assert parse_pick("click:x:1") is None and parse_pick("") is None


def test_explorer_click_details_placeholder_and_users_change(run_models):
    from fndkit.viz.explorer import DETAILS_HINT, SpaceExplorer

    ex = SpaceExplorer(run_models, users=[1], method="pca", n_negatives=6)
    assert ex.details_image.layout.display == "none" and ex.details_image.value == b""  # no broken icon
    outfits = ex.frame[ex.frame.kind != "user"]
    meant, plotly_said = outfits.iloc[0], outfits.iloc[1]
    # plotly reports a neighbour; the click's position names the marker the user clicked
    ex._pick.value = f"click:{int(plotly_said.point)}:1:{meant.x}:{meant.y}:1e7:-1e7"
    assert f"items</td><td>{meant['items']}" in ex.details_text.value
    assert ex.details_image.layout.display is None and ex.details_image.value[:4] == b"\x89PNG"
    user_row = ex.frame[ex.frame.kind == "user"].iloc[0]
    ex.show_point(int(user_row.point))
    assert ex.details_image.layout.display == "none"
    ex.show_point(int(meant.point))
    ex.users_select.value = (2,)  # other users: the panel's outfit left the picture
    assert ex.details_title.value == DETAILS_HINT and ex.details_text.value == ""
    assert ex.details_image.layout.display == "none"
    assert "held-out positives inside the boundary" in ex.status.value
    bundle = ex._repr_mimebundle_()
    assert "VBox" not in bundle["text/plain"] and "PCA of" in bundle["text/plain"]


def test_flag_summary_counts_held_out_positives_apart():
    from fndkit.viz.explorer import flag_summary

    counts = {"positives": 9, "negatives": 60, "held_out_shown": 2, "flagged": 9, "flagged_held_out": 1,
              "flagged_truth_positive": 3, "truth_positive_negatives": 4, "positive_boundary": 0.4}
    assert flag_summary(3, counts) == ("user 3: 8 of 60 negatives and 1 of 2 held-out positives inside the "
                                       "boundary (3 of the 9 flagged the ground truth calls positive)")
    assert "ground truth" not in flag_summary(3, {**counts, "flagged_truth_positive": None})


def test_explorer_metrics_keep_every_method():
    from fndkit.viz.explorer import keep_methods

    tsne = {"method": "tsne", "perplexity": 15, "per_user": {"1": {"flagged": 2}}}
    pca = {"method": "pca", "perplexity": 15, "per_user": {"1": {"flagged": 2}}}
    after_pca = keep_methods(tsne, pca)  # an older file without by_method: the t-SNE run is kept
    assert after_pca["method"] == "pca" and set(after_pca["by_method"]) == {"pca", "tsne"}
    assert after_pca["by_method"]["tsne"] == tsne and after_pca["by_method"]["pca"] == pca
    again = keep_methods(after_pca, {**tsne, "perplexity": 30})
    assert again["by_method"]["tsne"]["perplexity"] == 30 and again["by_method"]["pca"] == pca
    assert keep_methods({}, pca) == {**pca, "by_method": {"pca": pca}}


def test_snapshot_is_static_output(run_models, tmp_path):
    from fndkit.viz.explorer import SpaceExplorer

    ex = SpaceExplorer(run_models, users=[1], method="pca", n_negatives=6)
    bundle = ex.snapshot()._repr_mimebundle_()
    fig = bundle["application/vnd.plotly.v1+json"]
    assert sum(len(t["x"]) for t in fig["data"] if t.get("hoverinfo") != "skip") == len(ex.frame)
    assert "image/png" not in bundle  # no export written
    png = tmp_path / "space_pca.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    assert base64.b64decode(ex.snapshot(png)._repr_mimebundle_()["image/png"]) == png.read_bytes()


_FAKE_PAGE = """
var sent = null, handlers = {};
var input = {value: "", dispatchEvent: function () { sent = this.value; }};
var gd = {layout: {meta: "tok"},
          _fullLayout: {xaxis: {_offset: 80, _m: 50, p2d: function (p) { return (p - 10) / 50; }},
                        yaxis: {_offset: 60, _m: -40, p2d: function (p) { return (p - 400) / -40; }}},
          getBoundingClientRect: function () { return {left: 100, top: 20}; },
          getAttribute: function () { return null; }, setAttribute: function () {},
          on: function (name, fn) { handlers[name] = fn; }};
var document = {querySelector: function () { return input; }, querySelectorAll: function () { return [gd]; }};
function setTimeout() {}
function Event() {}
%s
handlers.plotly_click({points: [{customdata: 7}], event: {clientX: 300, clientY: 200}});
console.log(sent);
handlers.plotly_hover({points: [{customdata: 9}], event: {clientX: 300, clientY: 200}});
console.log(sent);
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page script")
def test_page_script_sends_the_click_in_data_coordinates(tmp_path):
    """The script beside the picture, run against a stand-in plotly page: a click 120 px right of
    the x axis' start and 120 px below the y axis' top, on axes of 50 and −40 px per unit whose
    pixel 10 / 400 is data 0, is sent at data (2.2, 7) with those scales; a hover sends no cursor."""
    from fndkit.viz.explorer import _BIND_SCRIPT, parse_pick

    body = (_BIND_SCRIPT % {"uid": "u1", "token": "tok"}).replace("<script>", "").replace("</script>", "")
    page = tmp_path / "page.js"
    page.write_text(_FAKE_PAGE % body)
    out = subprocess.run(["node", str(page)], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    how, point, cursor = parse_pick(out[0])
    assert (how, point) == ("click", 7) and cursor == pytest.approx((2.2, 7.0, 50.0, -40.0))
    assert parse_pick(out[1]) == ("hover", 9, None)
