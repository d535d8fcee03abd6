"""The paper's plans through the one outcome path: `paper --quick` runs every experiment on tiny data
(so the builders cannot rot), the results come out of `collect` in the one schema, the pages carry
the claims with interval, MDE and verdict, a second call trains nothing, a failure is named."""

import json

import pandas as pd
import pytest

from fndkit import cli
from fndkit.plans import paper as P
from fndkit.plans.execute import run_plan
from fndkit.results import claims as C
from fndkit.results import collect, report

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    # every experiment of the paper, at the paper's values (the search has tests/test_search.py; the
    # lab's jobs run end to end in tests/test_fnlab.py); in-process jobs, two workers
    code = cli.main(["paper", *P.EXPERIMENTS, "--quick", "--no-search", "--root", str(root),
                     "--device", "cpu", "--workers", "2", "--no-progress"])
    folder = next(root.glob("*/plan.json")).parent
    return root, folder, code, pd.read_csv(folder / "results.csv")


def test_quick_sweep_fills_every_experiment(quick):
    root, folder, code, results = quick
    assert code == 0
    assert list(results.columns) == collect.COLUMNS
    assert set(results.experiment) == set(P.EXPERIMENTS) | {"prerequisites"}
    # a stage shared by experiments is one job: Fig. 4's α = 1.25 run is Table 2's FND row
    auc = results[(results.metric == "auc") & (results.protocol == "random") & (results.list == "test")]
    t2 = auc[(auc.experiment == "table2") & (auc.method == "fnd")]
    f4 = auc[(auc.experiment == "fig4") & (auc.shown == json.dumps({"alpha": 1.25}))]
    assert t2.stage.tolist() == f4.stage.tolist() == ["student_fnd"] and t2.value.tolist() == f4.value.tolist()
    record = json.loads((folder / "plan.json").read_text())
    stages = [(j["run_dir"], j["stage"]) for j in record["jobs"]]
    assert len(stages) == len(set(stages)) and {j["status"] for j in record["jobs"]} == {"done"}
    # the hard protocol: trained with half hard negatives, scored on hard candidates
    cfg = json.loads((folder / "seed0" / "student_fnd-hard" / "config.json").read_text())
    assert cfg["train"]["hard_fraction"] == 0.5 and cfg["train"]["val_split"] == "val_student"
    cold = results[results.list == "cold"]
    assert {"w-avg", "avg"} <= {json.loads(p)["strategy"] for p in cold.shown}
    t5 = results[(results.experiment == "table5") & (results.metric == "params")].set_index("method").value
    assert t5["teacher"] > t5["S"]
    # the test list and the clean list (true false negatives removed) side by side
    assert {"test", "test_clean", "validation"} <= set(results.list)


def test_paper_plans_the_labs_experiments_in_their_own_folders(tmp_path):
    """`paper fn_rate` adds the false-negative lab's jobs (run end to end by tests/test_fnlab.py)
    under <machine>/fnlab/, beside the paper's seed folders, after the paper's own jobs."""
    sweep = P.Sweep(tmp_path, seeds=(0,), quick=True, device="cpu", machine="m")
    jobs = P.plan(["table2", "fn_rate"], sweep)
    lab = [j for j in jobs if j.experiment == "fn_rate"]
    assert {"npair", "oracle-drop", "oracle-pull"} <= {j.method for j in lab}
    assert all(str(sweep.folder / "fnlab") in j.run_dir for j in lab)
    assert jobs[-len(lab):] == lab and all(j.experiment != "fn_rate" for j in jobs[:-len(lab)])


def test_pages_carry_claims_with_interval_mde_and_verdict(quick, tmp_path):
    _, folder, _, results = quick
    md = (folder / "results.md").read_text()
    assert "`python -m fndkit paper" in md and "--quick" in md and "**Claims**" in md
    assert "single seed: not a verdict" in md and "MDE (pts)" in md and "95% CI (pts)" in md
    npair = results.query("experiment == 'table2' and method == 'npair' and protocol == 'random' and "
                          "list == 'test' and metric == 'auc'")["value"].item()
    row = next(line for line in md.splitlines() if line.startswith("| npair | student_npair |"))
    assert f"{npair:.4f}" in row
    html = (folder / "report.html").read_text()
    assert html.count("plotly.js v") <= 1 and "fig4" in html and "Claims" in html and "single seed" in html
    readme = tmp_path / "README.md"
    start, end = report.README_BLOCKS["results"]
    readme.write_text(f"# x\n\n{start}\nold numbers\n{end}\n\n## after\n")
    report.update_readme(readme, md)
    text = readme.read_text()
    assert "old numbers" not in text and md.strip() in text and text.endswith(end + "\n\n## after\n")
    report.update_readme(readme, "second")  # the block is replaced, not appended
    assert readme.read_text().count(start) == 1 and md not in readme.read_text()
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="has no results block"):
        report.update_readme(readme, md)


def test_second_call_trains_nothing(quick):
    root, folder, _, results = quick
    trained = sorted(folder.rglob("checkpoint.pt"))
    before = {p: p.stat().st_mtime_ns for p in trained}
    sweep = P.Sweep(root, seeds=(0,), quick=True, device="cpu", machine=folder.name)
    jobs = [cli._smoke(j, type("A", (), {"epochs": None, "quick": True})()) for j in P.plan(["table2", "fig4"], sweep)]
    out = run_plan(jobs, progress=False)
    assert not out.failed and {p: p.stat().st_mtime_ns for p in trained} == before
    again = collect.collect(jobs)
    first = results[results.experiment == "table2"].set_index(["stage", "protocol", "list", "metric"]).value
    second = again[again.experiment == "table2"].set_index(["stage", "protocol", "list", "metric"]).value
    pd.testing.assert_series_equal(first.sort_index(), second.sort_index(), check_dtype=False)


def test_failed_run_names_run_and_notebook(quick, tmp_path):
    """As a notebook: the error names the run, the notebook, the cell and the bad value."""
    root, folder, _, _ = quick
    sweep = P.Sweep(root, seeds=(0,), quick=True, device="cpu", machine=folder.name)
    bad = P.stage_job(sweep, 0, "student", "student_x", loss="npair", lr=-1.0)
    out = run_plan([bad], via="notebook", progress=False, on_failure="continue")
    assert len(out.failed) == 1
    assert "seed0/student_x: 03_student.ipynb failed in cell" in out.failed[0][1] and "lr=-1" in out.failed[0][1]
    assert (sweep.seed_dir(0) / "notebooks" / "student_x.ipynb").exists()


def test_two_jobs_for_one_stage_folder_are_refused(tmp_path):
    sweep = P.Sweep(tmp_path, quick=True, machine="m")
    a = P.stage_job(sweep, 0, "student", "student_x", loss="npair")
    b = P.stage_job(sweep, 0, "student", "student_x", loss="bpr")
    with pytest.raises(P.ExperimentError, match=r"two different jobs fill .*student_x \(.*loss: 'npair' / 'bpr'"):
        P.one_job_per_stage([a, b])


def test_claims_recover_a_known_difference_with_seeds_as_replicates():
    """Per-user AUCs of two stages over 4 seeds with a true +2 point difference: the comparison is
    supported; the same data with one seed is no verdict."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for user in range(60):
            base = rng.normal(0.8, 0.05)
            for stage, shift in (("student_fnd", 0.02), ("student_npair", 0.0)):
                rows.append({"experiment": "table2", "method": stage, "stage": stage, "run_dir": f"r/seed{seed}",
                             "seed": seed, "shown": "{}", "protocol": "random", "list": "test", "user": user,
                             "value": base + shift + rng.normal(0, 0.01)})
    users = pd.DataFrame(rows)
    comp = [C.Comparison("FND beats N-pair", "student_fnd", "student_npair", paper_effect=0.01)]
    out = C.compare(users, comp).iloc[0]
    assert out.effect == pytest.approx(0.02, abs=0.004) and out.ci_low > 0 and out.verdict == "supported"
    assert out.n_seeds == 4 and out.n_users == 240 and out.mde < 0.01
    one = C.compare(users[users.seed == 0], comp).iloc[0]
    assert one.verdict.startswith("single seed")


def test_unknown_experiment_is_named(tmp_path, capsys):
    assert cli.main(["paper", "fig99", "--root", str(tmp_path)]) == 2
    assert "unknown experiment(s) fig99" in capsys.readouterr().err



def test_table2_rows_follow_the_methods_a_sweep_names(tmp_path):
    """The ``search`` verb's methods become Table 2's rows: the table's own in its order, then a
    method outside it (a distillation loss) as a row of its own; none named: every row."""
    named = P.Sweep(tmp_path, quick=True, machine="m", methods=("rrd", "fnd", "npair"))
    assert P.table2_methods(named) == ["npair", "fnd", "rrd"]
    jobs = [j for j in P.plan(["table2"], named) if j.kind == "student"]
    assert [(j.method, j.params.loss) for j in jobs] == [("npair", "npair"), ("fnd", "fnd"), ("rrd", "rrd")]
    every = P.table2_methods(P.Sweep(tmp_path, quick=True, machine="m"))
    assert every[:5] == ["npair", "bpr", "fnd", "fnd-cl", "kd"] and "rrd" not in every


def test_table3_claim_finds_a_verdict_plans_cold_start_rows(tmp_path):
    """A verdict plan's cold start scores the first seed's replicas (``student_fnd-seed0``): its rows
    count as ``student_fnd``, so Table 3's claim is judged (one seed: no verdict) instead of dropped."""
    from fndkit.rundir import RunFolder

    sweep = P.Sweep(tmp_path, seeds=(0, 1), quick=True, machine="m", shared=True, verdict=True,
                    methods=P.VERDICT_METHODS)
    (cold,) = [j for j in P.plan(["table3"], sweep) if j.kind == "cold_start"]
    assert "student_fnd-seed0" in cold.params.models
    rows = [{"model": model, "strategy": strategy, "n_interactions": 5, "auc_mean": auc,
             "per_user_auc": {str(u): auc + 0.001 * u for u in range(8)}}
            for model in ("teacher", "student_fnd-seed0") for strategy, auc in (("avg", 0.80), ("w-avg", 0.82))]
    RunFolder(cold.run_dir).write_metrics(cold.stage, {"rows": rows})
    table, users = collect.collect([cold]), collect.collect_users([cold])
    assert set(table.method) == set(users.method) == {"teacher", "student_fnd"}
    (claim,) = [c for c in P.CLAIMS if c.experiment == "table3"]
    out = C.compare(users, [claim]).iloc[0]
    assert out.effect == pytest.approx(0.02) and out.n_seeds == 1 and out.verdict.startswith("single seed")
