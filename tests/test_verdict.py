"""A verdict plan end to end at tiny scale (`paper --verdict --quick`, its search narrowed by
--values): its pages and the results notebook it executes into its root, which nbval accepts. In a
file of its own so that the test processes share the load."""

import json

import pandas as pd
import pytest

from fndkit import cli

pytestmark = pytest.mark.notebook


def test_verdict_plan_executes_the_results_notebook(tmp_path):
    """`paper --verdict` (tiny: --quick, the search narrowed by --values) writes its pages and executes
    notebooks/09_results.ipynb on them into its root; nbval-lax passes on that executed copy."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = cli.main(["paper", "--verdict", "--quick", "--root", str(tmp_path), "--device", "cpu", "--no-progress",
                     "--values", "npair.lr=0.01", "bpr.tau=0.1", "fnd.alpha=1.25,2", "fnd-cl.lam=0.2",
                     "lpae-u.lr=0.01", "lpae-u.tau=0.3"])
    assert code == 0
    folder = next(tmp_path.glob("*/plan.json")).parent
    record = json.loads((folder / "plan.json").read_text())  # one record: the search's trials and the plan
    assert {bool(j["trial"]) for j in record["jobs"]} == {True, False} and not list(folder.glob("plan-*.json"))
    notebook = json.loads((folder / "09_results.ipynb").read_text())
    injected = next(c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert str(folder) in "".join(injected["source"])
    shown = json.dumps([o for c in notebook["cells"] if c["cell_type"] == "code" for o in c["outputs"]])
    claims = pd.read_csv(folder / "claims.csv")
    assert len(claims) and all(text[:25] in shown for text in claims.comparison)  # every claim rendered
    assert "application/vnd.plotly.v1+json" in shown and not list(folder.glob(".09_results.partial*"))
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          str(folder / "09_results.ipynb")], capture_output=True, text=True, cwd=folder, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_results_notebook_failure_names_the_folder_and_keeps_the_last_copy(tmp_path):
    from fndkit.plans.execute import JobError, execute_results_notebook

    (tmp_path / "09_results.ipynb").write_text("an earlier copy")
    with pytest.raises(JobError, match="holds no results.csv"):
        execute_results_notebook(tmp_path)
    assert (tmp_path / "09_results.ipynb").read_text() == "an earlier copy"
