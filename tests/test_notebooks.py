"""The notebook chain runs end to end on tiny data with papermill, gives the seeded metrics it gave
before the library was reshaped, works from notebooks/ with relative paths, and stops clearly on
bad input.

One module-scoped run folder is filled by the chain once; the other tests reuse it.
"""

import json
import os
import shutil
import subprocess
import sys

import papermill as pm
import pytest

from fndkit.plans.chain import default_chain, run_chain
from fndkit.plans.execute import NOTEBOOK_DIR

pytestmark = pytest.mark.notebook

# Seeded metrics of the tiny chain (seed 0), per CPU: the float kernels torch picks depend on the
# processor's vector unit and on the number of threads (measured 2026-12-07: the teacher's random
# AUC is 0.6325 / 0.6307 with 1 / 2 threads on AVX512, 0.6305 with AVX2 kernels, 0.6229 with the
# default ones; FND's flags, and so the FND student, follow the teacher). So the pins are kept per
# (torch's CPU capability, threads). "reference" are the values recorded on the project's first
# machines (before issue 10, unchanged by every refactor since); "AVX512/2" were recorded on the
# 2-core AVX512 box on 2026-12-07 (the code of issue 28; the reference machine's values reproduce
# the N-pair student to the digit there, so the model code is unchanged). A change to sampling,
# training, evaluation or the generator moves them; update them only for a change meant to move them.
PINS = {
    "reference": {
        "chain": {("teacher", "random"): 0.6322126795162508, ("teacher", "hard"): 0.6119341458805745,
                  ("student_fnd", "random"): 0.6076535336356765, ("student_fnd", "hard"): 0.6814037226001511,
                  ("student_npair", "random"): 0.6228747165532879, ("student_npair", "hard"): 0.5931481481481482,
                  ("contrastive", "random"): 0.5706763983371126, ("contrastive", "hard"): 0.6612363945578231},
        "flags": {"flagged_fraction": 0.161865234375, "flag_precision": 0.3900081061282789,
                  "flag_recall": 0.3006461872497354},
        "cold": {("teacher", "avg", 1): 0.59872, ("teacher", "w-avg", 1): 0.57839, ("teacher", "avg", 5): 0.65871,
                 ("teacher", "w-avg", 5): 0.62527, ("teacher", "population", 5): 0.62809},
        "lab": {"sampled_negatives": 584, "true_fn_fraction": 0.24486301369863014,
                "flagged_fraction": 0.16095890410958905, "flag_precision": 0.40425531914893614,
                "flag_recall": 0.26573426573426573},
    },
    "AVX512/2": {
        "chain": {("teacher", "random"): 0.630650321239607, ("teacher", "hard"): 0.6133230347694635,
                  ("student_fnd", "random"): 0.5687436696900983, ("student_fnd", "hard"): 0.6595446900982616,
                  ("student_npair", "random"): 0.6228747165532879, ("student_npair", "hard"): 0.5931481481481482,
                  ("contrastive", "random"): 0.5725282501889645, ("contrastive", "hard"): 0.6619586167800454},
        "flags": {"flagged_fraction": 0.1663818359375, "flag_precision": 0.3867232191408374,
                  "flag_recall": 0.3063947715841271},
        "cold": {("teacher", "avg", 1): 0.5887317054820286, ("teacher", "w-avg", 1): 0.5714905071645977,
                 ("teacher", "avg", 5): 0.6566984388732998, ("teacher", "w-avg", 5): 0.6240277877532779,
                 ("teacher", "population", 5): 0.6333035328323487},
        "lab": {"sampled_negatives": 584, "true_fn_fraction": 0.24486301369863014,
                "flagged_fraction": 0.15924657534246575, "flag_precision": 0.40860215053763443,
                "flag_recall": 0.26573426573426573},
    },
}


def machine() -> str:
    import torch

    return f"{torch.backends.cpu.get_cpu_capability()}/{torch.get_num_threads()}"


def pins(kind: str) -> dict:
    """This machine's pins; a machine without a record is checked against the reference, and its
    failure says which key to record."""
    return PINS.get(machine(), PINS["reference"])[kind]


def pinned_message(what) -> str:
    return f"{what} on {machine()} (pins recorded for {sorted(PINS)}; a new machine: record its values under its key)"


TOL = 2e-3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny_run")
    record = run_chain(run_dir, default_chain("tiny"), progress=False)
    assert record["status"] == "finished"
    return run_dir


def read(run_dir, stage):
    return json.loads((run_dir / stage / "metrics.json").read_text())


def test_chain_gives_pinned_metrics(tiny_run):
    data = read(tiny_run, "data")
    assert data["stats"]["users"] == 6 and data["stats"]["outfits"] == 210
    assert data["false_negative_fraction_random_mixtures"] == pytest.approx(0.23083333333333333, abs=1e-9)
    for (stage, protocol), auc in pins("chain").items():
        assert read(tiny_run, stage)["test"][protocol]["auc"] == pytest.approx(auc, abs=TOL), \
            pinned_message((stage, protocol))
    for stage in ("student_fnd", "contrastive"):  # FND-CL reads the same teacher flags as FND
        for key, value in pins("flags").items():
            assert read(tiny_run, stage)[key] == pytest.approx(value, abs=TOL), pinned_message((stage, key))
    assert read(tiny_run, "autoencoder")["reconstruction_mse_held_out"] == pytest.approx(0.08896, abs=1e-3)


def test_chain_fills_contrastive_and_cold_start(tiny_run):
    fnd_cl = read(tiny_run, "contrastive")
    assert fnd_cl["params"] - fnd_cl["params_inference"] > 0  # the projection head, training only
    history = json.loads((tiny_run / "contrastive" / "history.json").read_text())
    assert all(h["loss_cl"] > 0 for h in history)
    cold = read(tiny_run, "cold_start")
    got = {(r["model"], r["strategy"], r["n_interactions"]): r["auc_mean"] for r in cold["rows"]}
    assert {m for m, _, _ in got} == {"teacher", "student_npair", "student_fnd", "contrastive"}
    for key, auc in pins("cold").items():
        assert got[key] == pytest.approx(auc, abs=TOL), pinned_message(key)
    # the population row ignores what the cold user revealed: flat in the number of outfits
    assert got[("teacher", "population", 1)] == pytest.approx(got[("teacher", "population", 5)], abs=0.01)
    report = (tiny_run / "report.md").read_text()
    assert "student_fnd" in report and "Cold start" in report
    for name in ("00_data", "01_autoencoder", "02_teacher", "03_student_fnd", "03_student_npair",
                 "04_contrastive", "05_cold_start", "06_explorer", "08_false_negatives"):
        assert (tiny_run / "notebooks" / f"{name}.ipynb").exists()


def test_false_negative_lab_reads_the_chain(tiny_run):
    lab = read(tiny_run, "false_negatives")
    for key, value in pins("lab").items():  # the teacher against the ground truth (08_false_negatives)
        assert lab[key] == pytest.approx(value, abs=TOL), pinned_message(key)
    # the teacher's snapshots (02_teacher's snapshot_epochs) and its best checkpoint
    assert [(r["epoch"], r["checkpoint"]) for r in lab["strength"]] == [(1, "snapshot"), (2, "snapshot"), (2, "best")]
    assert lab["strength"][-1]["precision"] == pytest.approx(lab["flag_precision"])
    gains = {(r["stage"], r["protocol"]): r["gain_over_npair"] for r in lab["students"]}
    assert gains[("student_npair", "random")] == 0.0
    expected = pins("chain")[("student_fnd", "random")] - pins("chain")[("student_npair", "random")]
    assert gains[("student_fnd", "random")] == pytest.approx(expected, abs=2 * TOL)
    data = read(tiny_run, "data")
    assert data["taste_breadth"] == 1.0 and set(data["true_affinity_auc"]) == {"random", "hard"}


@pytest.fixture
def project(tiny_run, tmp_path, monkeypatch):
    """A temporary project root (as a clone lays it out) whose outputs/demo is the tiny run."""
    shutil.copytree(tiny_run, tmp_path / "outputs" / "demo")
    monkeypatch.setenv("FNDKIT_PROJECT_ROOT", str(tmp_path))  # the kernel inherits it
    return tmp_path


def test_student_from_notebooks_folder_with_default_run_dir(project, tmp_path):
    """Issue 9: `cd notebooks && papermill 03_student.ipynb out.ipynb -p alpha 1.25` after a demo."""
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(NOTEBOOK_DIR / "03_student.ipynb"), str(out), parameters={"alpha": 1.25},
                        cwd=str(NOTEBOOK_DIR), progress_bar=False)
    text = out.read_text()
    assert f"run folder: {project / 'outputs' / 'demo'}" in text
    assert "reusing it" in text  # student_fnd at α 1.25 is the demo's own, finished run
    pm.execute_notebook(str(NOTEBOOK_DIR / "03_student.ipynb"), str(out), parameters={"alpha": 2.0},
                        cwd=str(NOTEBOOK_DIR), progress_bar=False)
    cfg = json.loads((project / "outputs" / "demo" / "student_fnd-alpha2" / "config.json").read_text())
    assert cfg["run_dir"] == str(project / "outputs" / "demo") and cfg["train"]["alpha"] == 2.0
    assert read(project / "outputs" / "demo", "student_fnd-alpha2")["loss"] == "fnd"
    assert not (NOTEBOOK_DIR / "outputs").exists()


def test_missing_run_folder_names_path_and_command(project, tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOK_DIR / "02_teacher.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"run_dir": "outputs/nothing"}, cwd=str(NOTEBOOK_DIR),
                            progress_bar=False)
    message = str(err.value)
    assert str(project / "outputs" / "nothing") in message and "make demo" in message
    assert "run notebooks/00_data.ipynb" in message


def _nbval(run_dir, notebooks):
    """``pytest --nbval-lax`` over executed copies, as a researcher runs it in CI."""
    env = {**os.environ, "FNDKIT_PNG": "0"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          *map(str, notebooks)], capture_output=True, text=True, cwd=run_dir, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_nbval_lax_on_executed_notebooks(tiny_run):
    """Researchers run nbval on papermill-prepared copies: the first notebook and the student pass it,
    and their cells marked NBVAL_CHECK_OUTPUT (seeded metrics) print the same again. Every notebook
    of the chain: the --runslow test below (about 65 s more)."""
    executed = sorted((tiny_run / "notebooks").glob("*.ipynb"))
    assert len(executed) == 9
    marked = [p.name for p in executed if "NBVAL_CHECK_OUTPUT" in p.read_text()]
    assert len(marked) >= 5, marked
    _nbval(tiny_run, [tiny_run / "notebooks" / f"{name}.ipynb" for name in ("00_data", "03_student_fnd")])


@pytest.mark.slow
def test_nbval_lax_on_every_executed_notebook(tiny_run):
    # 03_student_npair is 03_student_fnd's notebook with another loss: nbval re-runs one of the two
    _nbval(tiny_run, [p for p in sorted((tiny_run / "notebooks").glob("*.ipynb")) if p.stem != "03_student_npair"])
