"""The pages a researcher shows: a plan's report.html (plotly.js once, figures of a set height,
numbers formatted by kind, the true wall time and the exact command, the takeaway first), the
figure functions' data (sweeps, search, claims with their MDE band, distillation transfer), the
CSV tables the results notebook reads, and the demo's report.md with its figures sharing one
plotly.min.js per run folder."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from fndkit.artifacts import write_json
from fndkit.results import report
from fndkit.results.collect import COLUMNS
from fndkit.viz import figures as F


# --------------------------------------------------------------------------------------------
# A small plan outcome in the one schema


def _row(experiment, method, stage, seed, shown, protocol, which, metric, value):
    return {"experiment": experiment, "method": method, "stage": stage, "run_dir": f"/r/seed{seed}", "seed": seed,
            "params": "{}", "shown": json.dumps(shown, sort_keys=True), "protocol": protocol, "list": which,
            "metric": metric, "value": value}


AUC = {  # (method, alpha) -> per-seed test AUC (random)
    ("fnd", 1.0): (0.60, 0.62), ("fnd", 2.0): (0.70, 0.66), ("fnd", 1.25): (0.64, 0.64),
    ("npair", None): (0.58, 0.60),
}


@pytest.fixture
def table():
    rows = []
    for (method, alpha), values in AUC.items():
        stage = f"student_{method}" if alpha in (None, 1.25) else f"student_fnd-alpha{alpha}"
        shown = {} if alpha is None else {"alpha": alpha}
        for seed, v in enumerate(values):
            rows.append(_row("fig4", method, stage, seed, shown, "random", "test", "auc", v))
            rows.append(_row("fig4", method, stage, seed, shown, "-", "-", "best_epoch", 2 + seed))
            rows.append(_row("fig4", method, stage, seed, shown, "-", "-", "params_inference", 507008))
    for method, points in (("fnd", {1.0: 0.55, 2.0: 0.57}), ("npair", {0.01: 0.63, 0.03: 0.61})):
        key = "alpha" if method == "fnd" else "lr"
        for x, v in points.items():
            rows.append(_row("search", method, f"search-{method}-{x}", 0, {key: x}, "-", "validation", "best_val_auc", v))
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.fixture
def claims():
    return pd.DataFrame([
        {"comparison": "FND beats N-pair", "a": "student_fnd", "b": "student_npair", "protocol": "random",
         "list": "test", "paper_effect": 0.02, "effect": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p": 0.01,
         "q": 0.02, "mde": 0.03, "n_seeds": 10, "n_users": 40, "verdict": "supported"},
        {"comparison": "FND-CL beats FND", "a": "contrastive", "b": "student_fnd", "protocol": "hard",
         "list": "test", "paper_effect": None, "effect": -0.01, "ci_low": -0.04, "ci_high": 0.02, "p": 0.4,
         "q": 0.4, "mde": 0.05, "n_seeds": 10, "n_users": 40, "verdict": "no difference larger than 4 shown"}])


@pytest.fixture
def transfer():
    rows = []
    for method, gain, share in (("XS_kd", 0.02, 0.4), ("XS_fnd", 0.01, 0.2), ("teacher", 0.05, 1.0)):
        for which, shift in (("test", 0.0), ("test_clean", 0.01)):
            rows.append({"comparison": method, "a": method, "b": "XS_npair", "protocol": "random", "list": which,
                         "paper_effect": None, "effect": gain + shift, "ci_low": gain + shift - 0.01,
                         "ci_high": gain + shift + 0.01, "p": 0.01, "q": 0.02, "mde": 0.02, "n_seeds": 10,
                         "n_users": 40, "verdict": "supported", "share": share})
    return pd.DataFrame(rows)


CHOSEN = {"fnd": {"values": {"alpha": 2.0}, "val_auc": 0.57, "trials": 2, "pruned": 0, "seed": 0},
          "npair": {"values": {"lr": 0.01}, "val_auc": 0.63, "trials": 2, "pruned": 1, "seed": 0}}
INFO = {"title": "t", "machine": "cpu-2c", "seeds": [0, 1], "scale": "tiny", "seconds": 1092.4, "workers": 2,
        "command": "python -m fndkit paper fig4 --root /r --seeds 0 1 --scale tiny"}


# --------------------------------------------------------------------------------------------
# Formatting


@pytest.mark.parametrize("metric, value, shown", [
    ("best_epoch", 2.0, "2"), ("best_epoch", 2.5, "2.5"), ("params_inference", 507008.0, "507,008"),
    ("auc", 2.0, "2.0000"), ("auc", 0.61234567, "0.6123"), ("epoch_seconds", 4.07, "4.1"), ("auc", None, "")])
def test_numbers_are_formatted_by_kind_not_by_value(metric, value, shown):
    assert report.fmt_value(metric, value) == shown


@pytest.mark.parametrize("seconds, shown", [(37.4, "37 s"), (1092, "18 min 12 s"), (7500, "2 h 05 min"), (0, "0 s")])
def test_wall_time_reads_as_a_duration(seconds, shown):
    assert report.wall_time(seconds) == shown


# --------------------------------------------------------------------------------------------
# The figure functions' data


def test_sweep_figure_means_sds_and_reference_lines(table):
    fig = F.sweep_figure(table, "fig4", height=300)
    assert fig.layout.height == 300
    (fnd,) = [t for t in fig.data if t.name == "fnd"]
    assert list(fnd.x) == [1.0, 1.25, 2.0]  # sorted on a numeric axis
    assert list(fnd.y) == pytest.approx([0.61, 0.64, 0.68])
    assert list(fnd.error_y.array) == pytest.approx([pd.Series(AUC["fnd", a]).std() for a in (1.0, 1.25, 2.0)])
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert [s.y0 for s in lines] == pytest.approx([0.59])  # N-pair, run once beside the grid
    assert F.sweep_figure(table, "fig7") is None


def test_search_figure_stars_the_chosen_point(table):
    fig = F.search_figure(table, "npair", chosen={"lr": 0.01}, height=200)
    (trace,) = fig.data
    assert list(trace.x) == [0.01, 0.03] and list(trace.y) == pytest.approx([0.63, 0.61])
    assert list(trace.marker.symbol) == ["star", "circle"]
    assert fig.layout.xaxis.type == "log" and fig.layout.height == 200
    assert F.search_figure(table, "bpr") is None


def test_claims_figure_intervals_and_mde_band(claims):
    fig = F.claims_figure(claims)
    effect = next(t for t in fig.data if t.name == "effect (95% CI)")
    assert list(effect.x) == pytest.approx([5.0, -1.0])
    assert list(effect.error_x.array) == pytest.approx([4.0, 3.0])       # ci_high − effect, in points
    assert list(effect.error_x.arrayminus) == pytest.approx([4.0, 3.0])  # effect − ci_low
    bands = sorted(v for s in fig.layout.shapes if s.type == "rect" for v in (s.x0, s.x1))
    assert bands == pytest.approx([-5.0, -3.0, 3.0, 5.0])  # ± MDE around zero, per claim
    lo, hi = fig.layout.xaxis.range
    assert lo <= -9.0 and hi >= 9.0  # every interval and band inside the axis
    paper = next(t for t in fig.data if t.name == "paper")
    assert list(paper.x) == pytest.approx([2.0])  # only the claim that states a paper effect
    assert fig.layout.height > 0
    assert F.claims_figure(claims.iloc[:0]) is None


def test_transfer_figure_gain_with_interval_and_share(transfer):
    fig = F.transfer_figure(transfer)
    gains = [t for t in fig.data if t.type == "scatter"]
    shares = [t for t in fig.data if t.type == "bar"]
    assert [t.name for t in gains] == ["test (random)", "test_clean (random)"]
    assert list(gains[0].x) == pytest.approx([2.0, 1.0, 5.0])
    assert list(gains[1].error_x.array) == pytest.approx([1.0, 1.0, 1.0])
    assert list(shares[0].x) == pytest.approx([40.0, 20.0, 100.0])
    assert list(fig.layout.yaxis.ticktext) == ["XS_kd", "XS_fnd", "teacher"]
    assert gains[0].y[0] > gains[0].y[1] > gains[0].y[2]  # first method on top
    assert fig.layout.height >= F.PLAN_FIGURE_HEIGHT


def test_comparison_figure_bars():
    frame = pd.DataFrame({"model": ["teacher", "student_fnd"] * 2, "protocol": ["random"] * 2 + ["hard"] * 2,
                          "AUC": [0.7, 0.6, 0.65, 0.62], "NDCG (lpae)": [0.4, 0.3, 0.35, 0.33]})
    fig = F.comparison_figure(frame)
    auc = [t for t in fig.data if t.name == "AUC"]
    assert sorted(v for t in auc for v in t.y) == pytest.approx([0.6, 0.62, 0.65, 0.7])
    assert fig.layout.height == F.PLAN_FIGURE_HEIGHT


# --------------------------------------------------------------------------------------------
# A plan's pages


def _figure_heights(page: str) -> list[int]:
    """The set height of each figure's box, checked against the height its layout asks for."""
    boxes = re.findall(r"<div class=figure style='height:(\d+)px'>(.*?)</script>", page, flags=re.S)
    for height, body in boxes:
        assert f'"height":{height}' in body
    return [int(h) for h, _ in boxes]


def test_report_html_plotly_once_set_heights_takeaway_first(table, claims, transfer):
    page = report.plan_html(INFO, table, claims, transfer, CHOSEN)
    signature = get_plotlyjs()[:300]
    assert page.count(signature) == 1  # plotly.js inlined once, for every figure
    assert "<script src=" not in page and page.count("<script type='text/javascript'>") == 1
    heights = _figure_heights(page)
    assert len(heights) == page.count("Plotly.newPlot(") == 5  # claims, transfer, fig4, two searches
    assert set(heights) <= {report.FIGURE_HEIGHT, report.SEARCH_HEIGHT} | {
        int(F.claims_figure(claims).layout.height), int(F.transfer_figure(transfer).layout.height)}
    assert sum(heights) < 2500
    assert page.count("<details><summary>") == 2  # the search folded, one section per method
    # the takeaway before every table, with each claim's verdict
    body = page[page.index("<body>"):]
    top = body.index("<h2>Takeaway</h2>")
    takeaway = body[top:body.index("</div>", top)]
    assert top < body.index("<table>") and top < body.index("<div class=figure")
    assert "<span class=ok>supported</span> — FND beats N-pair" in takeaway
    assert "no difference larger than 4 shown</span> — FND-CL beats FND" in takeaway
    assert "XS_kd − N-pair (random, test): +2.00 pts" in takeaway and "40% of the teacher&#x27;s margin" in takeaway
    assert "the teacher&#x27;s margin over N-pair (random, test): +5.00 pts" in takeaway and "100%" not in takeaway
    assert "18 min 12 s" in page and "python -m fndkit paper fig4 --root /r --seeds 0 1 --scale tiny" in page


def test_report_html_formats_integers_as_integers(table):
    page = report.plan_html(INFO, table)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    assert "2.0000" not in cells and "507008.0000" not in cells
    assert "2.5" in cells  # the mean best epoch over two seeds (2 and 3)
    assert "0.6800 ± 0.0283" in cells  # an AUC: 4 places ± sd


def test_plan_report_writes_the_tables_the_notebook_reads(tmp_path, table, claims, transfer):
    paths = report.write_plan_report(tmp_path, INFO, table, claims, transfer, CHOSEN)
    assert {k: p.name for k, p in paths.items()} == report.PLAN_FILES
    back = report.read_plan_report(tmp_path)
    pd.testing.assert_frame_equal(back["table"], table, check_dtype=False)
    pd.testing.assert_frame_equal(back["claims"].drop(columns="paper_effect"), claims.drop(columns="paper_effect"),
                                  check_dtype=False)
    assert list(back["claims"]["paper_effect"]) == [0.02, None]
    pd.testing.assert_frame_equal(back["transfer"].drop(columns="paper_effect"),
                                  transfer.drop(columns="paper_effect"), check_dtype=False)
    assert back["chosen"] == CHOSEN
    # a plan without claims writes no claims.csv, and reads back an empty frame
    other = tmp_path / "other"
    paths = report.write_plan_report(other, INFO, table)
    assert set(paths) == {"csv", "md", "html"} and report.read_plan_report(other)["claims"].empty
    with pytest.raises(FileNotFoundError, match="holds no results.csv"):
        report.read_plan_report(tmp_path / "nowhere")


def test_results_md_says_the_wall_time_and_command(table, claims):
    md = report.plan_markdown(INFO, table, claims, None, CHOSEN)
    assert "wall time 18 min 12 s" in md and f"`{INFO['command']}`" in md
    assert md.index("**Takeaway**") < md.index("**Claims**")
    assert "| 2 (1) |" in md  # trials (pruned) as integers


# --------------------------------------------------------------------------------------------
# Figures in a run folder: one plotly.min.js; the demo's report.md


def _run_folder(root, png=False):
    write_json(root / "data" / "dataset.json", {"preset": "tiny"})
    write_json(root / "data" / "metrics.json", {"stats": {"dataset": "synthetic-tiny", "users": 6}})
    for stage, auc in (("teacher", 0.7), ("student_fnd", 0.6)):
        ranking = {"auc": auc, "ndcg_lpae": auc - 0.2, "ndcg_standard": auc - 0.1}
        write_json(root / stage / "metrics.json", {
            "loss": "npair", "backbone": "cnn", "test": {"random": ranking, "hard": ranking},
            "params_inference": 507008, "epoch_seconds": 4.07, "best_epoch": 1, "epochs_run": 2})
        write_json(root / stage / "history.json", [{"epoch": 1, "loss": 3.0, "val_auc": 0.6},
                                                   {"epoch": 2, "loss": 2.9, "val_auc": 0.55}])
    (root / "explorer").mkdir()
    (root / "explorer" / "space_tsne.html").write_text("<html></html>")
    if png:
        (root / "explorer" / "space_tsne.png").write_bytes(b"\x89PNG\r\n")
    return root


def test_figures_share_one_plotly_js_per_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FNDKIT_PNG", "0")
    run = _run_folder(tmp_path / "run")
    fig = F.history_figure([{"epoch": 1, "loss": 1.0, "val_auc": 0.5}], "t")
    a = F.save_figure(fig, run / "teacher" / "training_curve")
    b = F.save_figure(fig, run / "explorer" / "space")
    assert [p.name for p in a + b] == ["training_curve.html", "space.html"]
    js = list(tmp_path.rglob("plotly.min.js"))
    assert js == [run / "plotly.min.js"] and js[0].read_text() == get_plotlyjs()
    for path in a + b:
        text = path.read_text()
        assert '<script charset="utf-8" src="../plotly.min.js"></script>' in text
        assert len(text) < 50_000  # not 4.8 MB of plotly.js per file
    # outside a run folder a figure carries plotly.js itself (it opens wherever it is copied)
    lone = F.save_figure(fig, tmp_path / "loose" / "figure")
    assert not (tmp_path / "loose" / "plotly.min.js").exists() and get_plotlyjs()[:300] in lone[0].read_text()


@pytest.mark.parametrize("png", [False, True])
def test_demo_report_links_its_figures(tmp_path, monkeypatch, png):
    monkeypatch.setenv("FNDKIT_PNG", "0")  # no Chromium export in a unit test: HTML figures
    run = _run_folder(tmp_path / "run", png=png)
    text = report.write_report(run).read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert [link for link in links if link.startswith("figures/")] == ["figures/comparison.html", "figures/teacher_training.html",
                         "figures/student_fnd_training.html"]
    assert all((run / link).exists() for link in links)
    assert ("![explorer space tsne](explorer/space_tsne.png)" in text) == png  # a static picture, embedded
    assert "[explorer space_tsne (interactive)](explorer/space_tsne.html)" in text
    assert "| 507,008 | 4.1 | 1 | 2 |" in text  # params, s/epoch, best epoch, epochs run: by kind
    assert (run / "plotly.min.js").exists() and not list((run / "figures").glob("*.js"))


@pytest.mark.slow
def test_tiny_chain_report_links_its_figures(tmp_path, monkeypatch):
    from fndkit.plans.chain import default_chain, run_chain

    monkeypatch.setenv("FNDKIT_PNG", "0")
    run_chain(tmp_path / "run", default_chain("tiny"), progress=False, via="process")
    text = (tmp_path / "run" / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    for stage in ("teacher", "student_npair", "student_fnd", "contrastive"):
        assert f"figures/{stage}_training.html" in links
    assert "figures/comparison.html" in links and all((tmp_path / "run" / link).exists() for link in links)


def test_interval_table_is_the_t_interval_over_seeds(table):
    frame = report.interval_table(table, experiments=("fig4",))
    row = frame[frame.stage == "student_fnd-alpha2.0"].iloc[0]
    half = 12.706204736174707 * pd.Series([0.70, 0.66]).std() / 2 ** 0.5  # t(0.975, 1) · sd / √n
    assert row["mean"] == "0.6800" and row["seeds"] == 2 and row["settings"] == "alpha=2.0"
    assert row["95% CI"] == f"[{0.68 - half:.4f}, {0.68 + half:.4f}]"
    assert report.interval_table(table, metric="ndcg_lpae").empty


def test_replicates_in_one_run_folder_summarize_as_one_row_per_method(table):
    """A verdict plan's seeds share one run folder (stages ``student_fnd-seed<k>``): every table and
    figure summarizes them over seeds exactly as it does seeds in folders of their own."""
    from fndkit.stages import naming

    shared = table.assign(stage=[naming.replicate(st, s) if e == "fig4" else st
                                 for st, s, e in zip(table.stage, table.seed, table.experiment)],
                          run_dir="/r/seed0")
    assert shared.stage.nunique() > table.stage.nunique()
    for frames in (lambda t: report.experiment_tables(t)["fig4"], lambda t: report.interval_table(t),
                   lambda t: F.points(t, "fig4")):
        pd.testing.assert_frame_equal(frames(shared), frames(table))
    assert report.experiment_tables(shared)["fig4"]["seeds"].tolist() == [2, 2, 2, 2]
    assert naming.replicated_from("XS_npair-seed1", 1) == "XS_npair"
    assert naming.replicated_from("XS_npair-seed1", 2) == "XS_npair-seed1"  # another seed's name: as it is
    assert naming.replicated_from("teacher", 3) == "teacher" and naming.replicated_from("x-seed1", "") == "x-seed1"


@pytest.mark.notebook
def test_results_notebook_renders_a_plan_folder(tmp_path, monkeypatch, table, claims, transfer):
    """notebooks/09_results.ipynb, papermill-run on what write_plan_report wrote: every section
    shows (claims, choices, intervals, Fig. 4, transfer), nothing fails."""
    import os
    from pathlib import Path

    import papermill as pm

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    report.write_plan_report(tmp_path / "plan", INFO, table, claims, transfer, CHOSEN)
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(repo / "notebooks" / "09_results.ipynb"), str(out), parameters={"root": str(tmp_path / "plan")},
                        cwd=str(repo / "notebooks"), progress_bar=False)
    outputs = [o for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    plotly = [o["data"]["application/vnd.plotly.v1+json"] for o in outputs
              if "application/vnd.plotly.v1+json" in o.get("data", {})]
    titles = [p["layout"]["title"]["text"] for p in plotly]
    assert any(t.startswith("Claims") for t in titles) and any(t.startswith("fig4") for t in titles)
    assert any(t.startswith("Distillation") for t in titles)
    assert all(p["layout"]["height"] > 0 for p in plotly)  # every figure with its set height
    text = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "FND beats N-pair" in text and "alpha=2.0" in text and "XS_kd" in text
