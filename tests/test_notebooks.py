"""The notebook chain runs end to end on tiny data with papermill, and bad input stops clearly.

One module-scoped run folder is filled by the chain once; the other tests reuse it.
"""

import json
import subprocess
import sys

import papermill as pm
import pytest

from fndkit.pipeline import NOTEBOOK_DIR, default_chain, run_chain

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny_run")
    record = run_chain(run_dir, default_chain("tiny"), progress=False)
    assert record["status"] == "finished"
    return run_dir


def test_chain_fills_run_folder(tiny_run):
    data = json.loads((tiny_run / "data" / "metrics.json").read_text())
    assert data["stats"]["users"] > 0
    assert 0.0 <= data["false_negative_fraction_random_mixtures"] <= 1.0
    for stage in ("teacher", "student_fnd", "student_npair"):
        m = json.loads((tiny_run / stage / "metrics.json").read_text())
        assert 0.0 <= m["test"]["random"]["auc"] <= 1.0
        assert (tiny_run / stage / "checkpoint.pt").exists()
    fnd = json.loads((tiny_run / "student_fnd" / "metrics.json").read_text())
    assert 0.0 <= fnd["flagged_fraction"] <= 1.0
    report = (tiny_run / "report.md").read_text()
    assert "student_fnd" in report and "teacher" in report
    for name in ("00_data", "02_teacher", "03_student_fnd", "03_student_npair"):
        assert (tiny_run / "notebooks" / f"{name}.ipynb").exists()


def test_student_alpha_sweep_on_filled_run(tiny_run, tmp_path):
    pm.execute_notebook(str(NOTEBOOK_DIR / "03_student.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters={"run_dir": str(tiny_run), "alpha": 1.5}, progress_bar=False)
    m = json.loads((tiny_run / "student_fnd-alpha1.5" / "metrics.json").read_text())
    assert m["loss"] == "fnd"
    cfg = json.loads((tiny_run / "student_fnd-alpha1.5" / "config.json").read_text())
    assert cfg["train"]["alpha"] == 1.5


@pytest.mark.parametrize("notebook,params,needle", [
    ("03_student", {"alpha": -1.0}, "alpha=-1.0 must be > 0"),
    ("03_student", {"loss": "hinge"}, "loss='hinge' is unknown"),
    ("02_teacher", {"backbone": "resnet9000"}, "backbone='resnet9000' is unknown"),
])
def test_bad_parameters_stop_clearly(tiny_run, tmp_path, notebook, params, needle):
    with pytest.raises(pm.PapermillExecutionError, match=needle):
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{notebook}.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"run_dir": str(tiny_run), **params}, progress_bar=False)


def test_missing_data_folder_says_run_00(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="run notebooks/00_data.ipynb"):
        pm.execute_notebook(str(NOTEBOOK_DIR / "02_teacher.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"run_dir": str(tmp_path / "empty")}, progress_bar=False)


def test_other_dataset_in_run_dir_is_refused(tiny_run, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="already holds dataset"):
        pm.execute_notebook(str(NOTEBOOK_DIR / "00_data.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"run_dir": str(tiny_run), "scale": "tiny", "seed": 1},
                            progress_bar=False)


def test_nbval_lax_on_executed_copy(tiny_run):
    """Researchers run nbval on papermill-prepared copies; the data notebook must pass it."""
    executed = tiny_run / "notebooks" / "00_data.ipynb"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          str(executed)], capture_output=True, text=True, cwd=tiny_run)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
