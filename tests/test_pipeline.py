"""The chain runner: executed copies, a clear failure naming notebook and cell, no silent overwrite.

The chain is a plan of jobs run by :func:`fndkit.plans.execute.run_plan` as notebooks; these tests run the
cheapest real job (00_data at tiny scale) through papermill."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from fndkit.plans.execute import Job, params_for
from fndkit.cli import main as cli_main
from fndkit.plans.chain import PipelineError, default_chain, run_chain

pytestmark = pytest.mark.notebook


def data_job(**values) -> Job:
    return Job(params_for("data", scale="tiny", **values), label="00_data")


def test_runs_and_refuses_to_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    record = run_chain(run_dir, [data_job()], progress=False)
    assert record["status"] == "finished"
    assert json.loads((run_dir / "data" / "metrics.json").read_text())["stats"]["users"] > 0
    assert (run_dir / "notebooks" / "00_data.ipynb").exists()
    assert (run_dir / "report.md").exists()
    assert record["steps"][0]["parameters"]["run_dir"] == str(run_dir)
    with pytest.raises(PipelineError, match="finished run.*--force"):
        run_chain(run_dir, [data_job(seed=1)], progress=False)
    assert json.loads((run_dir / "data" / "dataset.json").read_text())["meta"]["data_config"]["seed"] == 0
    run_chain(run_dir, [data_job(seed=1)], force=True, progress=False, via="process")  # no kernel needed
    assert json.loads((run_dir / "data" / "dataset.json").read_text())["meta"]["data_config"]["seed"] == 1


def test_failure_names_notebook_and_cell(tmp_path):
    bad = Job(params_for("data", scale="nope"), label="00_bad")
    with pytest.raises(PipelineError, match=r"00_data\.ipynb failed in cell \[\d\] \(`params = .*ConfigError: scale='nope'"):
        run_chain(tmp_path / "run", [bad], progress=False)
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert record["status"] == "failed" and record["failed"]["step"] == "00_bad"
    assert record["failed"]["executed_copy"].endswith("notebooks/00_bad.ipynb")


def test_cli_rejects_unknown_step(capsys):
    assert cli_main(["chain", "--only", "99_nothing"]) == 2
    assert "unknown step" in capsys.readouterr().err


def test_default_chain_starts_with_data_and_orders_by_prerequisites():
    chain = default_chain("tiny", run_dir="/tmp/somewhere")
    assert chain[0].kind == "data" and chain[0].params.scale == "tiny"
    assert all(job.params.run_dir == "/tmp/somewhere" for job in chain)
    assert [j.label for j in chain][:5] == ["00_data", "01_autoencoder", "02_teacher", "03_student_fnd",
                                           "03_student_npair"]


def test_console_shows_progress_without_kernel_warnings(tmp_path):
    """What `make demo` prints: a ✓ line per notebook and none of the kernel's transport warnings
    (the kernel writes to the runner's stderr, so the runner runs in a child process here)."""
    code = ("import sys; from fndkit.plans.execute import Job, params_for; from fndkit.plans.chain import run_chain; "
            f"run_chain({str(tmp_path / 'run')!r}, [Job(params_for('data', scale='tiny'), label='00_data')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "without encryption" not in out.stderr and "IPKernelApp" not in out.stderr
    assert out.stderr.splitlines()[-1].startswith("✓ 00_data ")
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [s["label"] for s in record["steps"]] == ["00_data"] and "training" not in record["steps"][0]


@pytest.mark.parametrize("own", [None, "ACTIVE"])
def test_kernels_wait_passively_unless_told_otherwise(monkeypatch, own):
    """Spinning OpenMP threads crawl on a busy 2-core machine: the kernels get
    OMP_WAIT_POLICY=PASSIVE, a value of the user's own is kept, and the runner's environment is
    left as it was."""
    from fndkit.plans.execute import kernel_environment

    if own is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", own)
    with kernel_environment():
        seen = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                              capture_output=True, text=True).stdout.strip()
    assert seen == (own or "PASSIVE")
    assert os.environ.get("OMP_WAIT_POLICY") == own


@pytest.mark.slow  # Local(2) against Local(1): also test_search's worker-count test, in the default run
def test_chain_with_two_workers_writes_what_one_worker_writes(tmp_path):
    """The students side by side (two workers) give the same metrics as one after another, for the
    same seeds and a fixed number of threads per job. Their prerequisites are trained once and
    copied (a copied run folder's finished stages are reused, as the search's tests rely on too)."""
    prerequisites, students = ("00_data", "01_autoencoder", "02_teacher"), ("03_student_fnd", "03_student_npair")
    base = tmp_path / "base"
    jobs = [j for j in default_chain("tiny", run_dir=base) if j.label in prerequisites]
    assert run_chain(base, jobs, progress=False, via="process", workers=1, threads=1)["status"] == "finished"
    metrics = {}
    for workers in (1, 2):
        run_dir = tmp_path / f"w{workers}"
        shutil.copytree(base, run_dir, ignore=shutil.ignore_patterns("pipeline.json", "report.md"))
        jobs = [j for j in default_chain("tiny", run_dir=run_dir) if j.label in prerequisites + students]
        record = run_chain(run_dir, jobs, progress=False, via="process", workers=workers, threads=1)
        assert record["status"] == "finished" and len(record["steps"]) == len(jobs)
        metrics[workers] = {s: {k: v for k, v in json.loads((run_dir / s / "metrics.json").read_text()).items()
                                if k in ("test", "test_clean", "best_val_auc", "best_epoch")}
                            for s in ("student_fnd", "student_npair")}  # the teacher: the copied one
    assert metrics[1] == metrics[2]


def test_demo_chain_trains_with_its_tour_budget():
    """make demo's teacher and students get the demo's chain budget as their notebooks' `epochs`
    (the presets' budgets stay for every other plan); tiny keeps the presets' own."""
    from fndkit.config import SCALE_PRESETS
    from fndkit.plans.chain import default_chain

    budget = SCALE_PRESETS["demo"]["chain_epochs"]
    assert budget < SCALE_PRESETS["demo"]["teacher_epochs"]
    trained = {"02_teacher", "03_student_fnd", "03_student_npair", "04_contrastive"}
    for demo, tiny in zip(default_chain("demo"), default_chain("tiny")):
        epochs = demo.params.notebook_parameters().get("epochs")
        if demo.label in trained:
            assert epochs == budget and tiny.params.notebook_parameters()["epochs"] is None, demo.label
        else:  # the other stages keep their own (the autoencoder's 10)
            assert epochs == type(demo.params)().notebook_parameters().get("epochs"), demo.label
