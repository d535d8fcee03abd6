"""The experiments runner: `--quick` runs every experiment on tiny data (so the runner cannot rot),
writes a tidy results.csv and report.html, skips finished runs on a second call, and the paired
tests and claims read the runs they name."""

import json

import numpy as np
import pandas as pd
import pytest

from fndkit import experiments as X

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    # in-process jobs (no kernels): the notebook path of the same executor is covered below and
    # in tests/test_jobs.py
    sweep = X.Sweep(root, seeds=(0,), quick=True, device="cpu", machine="test-machine", via="process")
    # every experiment of the paper and the false-negative lab's fn_rate (fn_ablation reuses its
    # machinery and folders; tests/test_fnlab.py covers its runs)
    results = X.run_sweep([*X.EXPERIMENTS, "fn_rate"], sweep, progress=False)
    return sweep, results


def test_quick_sweep_fills_every_experiment(quick):
    sweep, results = quick
    assert set(results.experiment) == set(X.EXPERIMENTS) | {"fn_rate"}
    on_disk = pd.read_csv(sweep.folder / "results.csv")
    assert list(on_disk.columns) == ["experiment", "method", "stage", "parameters", "seed", "protocol",
                                     "metric", "value"]
    assert len(on_disk) == len(results)
    # a stage shared by experiments is trained once: Fig. 4's α = 1.25 run is Table 2's FND row
    t2 = results[(results.experiment == "table2") & (results.method == "fnd") & (results.metric == "auc")
                 & (results.protocol == "random")]
    f4 = results[(results.experiment == "fig4") & (results.parameters == json.dumps({"alpha": 1.25}))
                 & (results.metric == "auc") & (results.protocol == "random")]
    assert t2.stage.tolist() == f4.stage.tolist() == ["student_fnd"]
    assert t2.value.tolist() == f4.value.tolist()
    # the hard protocol: trained with half hard negatives, scored on hard candidates
    cfg = json.loads((sweep.seed_dir(0) / "student_fnd-hard" / "config.json").read_text())
    assert cfg["train"]["hard_fraction"] == 0.5 and cfg["train"]["val_split"] == "val_student"
    cold = results[results.experiment == "table3"]
    assert {"w-avg", "avg"} <= {json.loads(p)["strategy"] for p in cold[cold.protocol == "cold"].parameters}
    t5 = results[(results.experiment == "table5") & (results.metric == "params")]
    assert t5.set_index("method").value["teacher"] > t5.set_index("method").value["S"]
    ledger = json.loads((sweep.folder / "ledger.json").read_text())
    assert "seed0/student_fnd" in ledger and "seed0/teacher" in ledger
    # the false-negative lab: its own run folder per (taste breadth, seed), oracles beside N-pair
    lab = results[(results.experiment == "fn_rate") & (results.metric == "auc") & (results.protocol == "random")]
    assert {"npair", "oracle-drop", "oracle-pull"} <= set(lab.method)
    assert "fnlab/breadth1/seed0/teacher" in ledger


def test_report_has_figures_tables_tests_and_claims(quick):
    sweep, _ = quick
    html = (sweep.folder / "report.html").read_text()
    for needle in ("Claims", "Fig. 4", "Fig. 5", "Fig. 6", "Fig. 7", "table2", "Paired tests",
                   "FND beats the N-pair student", "fn_rate: gain in test AUC over N-pair"):
        assert needle in html, needle


def test_results_markdown_carries_the_tables_and_goes_into_the_readme_block(quick, tmp_path):
    sweep, results = quick
    md = (sweep.folder / "results.md").read_text()
    assert "Machine `test-machine`" in md and "--seeds 0 --quick" in md
    table = X.summary(results)
    npair = table[(table.experiment == "table2") & (table.method == "npair") & (table.protocol == "random")
                  & (table.metric == "auc")]["mean"].item()
    row = next(line for line in md.splitlines() if line.startswith("| npair |"))
    assert f"{npair:.4f}" in row  # Table 2's N-pair AUC, as the summary has it
    assert "**table3** (cold-start AUC" in md and "| w-avg |" in md
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{X.README_START}\nold numbers\n{X.README_END}\n\n## after\n")
    X.update_readme(readme, md)
    text = readme.read_text()
    assert "old numbers" not in text and md.strip() in text
    assert text.startswith("# x\n\n" + X.README_START) and text.endswith(X.README_END + "\n\n## after\n")
    X.update_readme(readme, "second")  # idempotent: the block is replaced, not appended
    assert readme.read_text().count(X.README_START) == 1 and "second" in readme.read_text() and md not in readme.read_text()
    readme.write_text("# no block\n")
    with pytest.raises(ValueError, match="has no results block"):
        X.update_readme(readme, md)


def test_second_call_skips_finished_runs(quick, monkeypatch):
    from fndkit import jobs

    sweep, results = quick
    calls = []
    monkeypatch.setattr(jobs, "execute_job", lambda *a, **k: calls.append(a))
    again = X.run_sweep(["table2", "fig4"], sweep, progress=False)
    assert calls == []
    assert again[again.experiment == "table2"].value.tolist() == \
        results[results.experiment == "table2"].value.tolist()


def test_paired_test_matches_scipy_on_the_runs_per_user_auc(quick):
    from scipy.stats import wilcoxon

    sweep, _ = quick
    tests = X.paired_tests(sweep)
    row = tests[(tests.a == "student_fnd") & (tests.b == "student_npair")].iloc[0]
    a = json.loads((sweep.seed_dir(0) / "student_fnd" / "per_user_auc.json").read_text())["random"]
    b = json.loads((sweep.seed_dir(0) / "student_npair" / "per_user_auc.json").read_text())["random"]
    d = np.array([a[u] - b[u] for u in sorted(a)])
    assert row.users == len(d) and row.mean_diff == pytest.approx(d.mean())
    if np.any(d != 0):
        assert row.wilcoxon_p == pytest.approx(wilcoxon(d).pvalue)


def test_failed_run_names_run_and_notebook(quick):
    """As a notebook (the sweep's finished prerequisites are skipped, so only the bad run starts):
    the error names the run, the notebook, the cell and the bad value."""
    sweep = X.Sweep(quick[0].root, seeds=(0,), quick=True, device="cpu", machine="test-machine", via="notebook")
    X.register_experiment("broken", lambda s, seed: [
        ("npair", {}, X.stage_job(s, seed, "student", "student_x", loss="npair", lr=-1.0))])
    try:
        with pytest.raises(X.ExperimentError, match=r"seed0/student_x: 03_student.ipynb failed in cell .*lr=-1"):
            X.run_sweep(["broken"], sweep, progress=False)
    finally:
        X.EXPERIMENTS.pop("broken")
    assert (sweep.seed_dir(0) / "notebooks" / "student_x.ipynb").exists()


def test_unknown_experiment_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment.*'fig99'"):
        X.run_sweep(["fig99"], X.Sweep(tmp_path, quick=True, machine="m"), progress=False)


def test_claim_verdicts_follow_the_numbers():
    table = pd.DataFrame([
        {"experiment": "table2", "method": "fnd", "parameters": "{}", "protocol": "random", "metric": "auc",
         "mean": 0.90, "std": 0.01, "count": 3},
        {"experiment": "table2", "method": "npair", "parameters": "{}", "protocol": "random", "metric": "auc",
         "mean": 0.88, "std": 0.01, "count": 3}])
    tests = pd.DataFrame([{"a": "student_fnd", "b": "student_npair", "protocol": "random", "wilcoxon_p": 0.01}])
    sweep = X.Sweep("/tmp/unused", quick=True, machine="m")
    verdicts = {c["claim"]: c["verdict"] for c in X.claims(table, tests, sweep)}
    assert verdicts["FND beats the N-pair student (Table 2, random negatives)"].startswith("supported (BH q")
    assert verdicts["FND-CL beats FND (Table 2)"] == "not run"
    tests.loc[0, "wilcoxon_p"] = 0.5
    verdicts = {c["claim"]: c["verdict"] for c in X.claims(table, tests, sweep)}
    assert verdicts["FND beats the N-pair student (Table 2, random negatives)"].startswith("direction only")
