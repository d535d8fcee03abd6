"""The chain runner: executed copies, a clear failure naming notebook and cell, no silent overwrite."""

import json
import os
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from fndkit.pipeline import PipelineError, Step, default_chain, main, run_chain

pytestmark = pytest.mark.notebook


def write_notebook(path, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nb.cells[0]
    params.metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return str(path)


@pytest.fixture
def notebooks(tmp_path):
    good = write_notebook(tmp_path / "good.ipynb", [
        new_code_cell('run_dir = "x"\nvalue = 1'),
        new_code_cell("from pathlib import Path\nPath(run_dir, 'out.txt').write_text(str(value))"),
    ])
    bad = write_notebook(tmp_path / "bad.ipynb", [
        new_code_cell('run_dir = "x"'),
        new_code_cell("x = 1"),
        new_code_cell("raise ValueError('alpha=-1 must be > 0')"),
    ])
    return good, bad


def test_runs_and_refuses_to_overwrite(tmp_path, notebooks):
    good, _ = notebooks
    run_dir = tmp_path / "run"
    record = run_chain(run_dir, [Step(good, "good", {"value": 7})], progress=False)
    assert record["status"] == "finished"
    assert (run_dir / "out.txt").read_text() == "7"
    assert (run_dir / "notebooks" / "good.ipynb").exists()
    assert (run_dir / "report.md").exists()
    with pytest.raises(PipelineError, match="finished run.*--force"):
        run_chain(run_dir, [Step(good, "good", {"value": 8})], progress=False)
    assert (run_dir / "out.txt").read_text() == "7"
    run_chain(run_dir, [Step(good, "good", {"value": 8})], force=True, progress=False)
    assert (run_dir / "out.txt").read_text() == "8"


def test_failure_names_notebook_and_cell(tmp_path, notebooks):
    good, bad = notebooks
    with pytest.raises(PipelineError, match=r"bad\.ipynb failed in cell \[\d\] \(`raise ValueError.*ValueError: alpha=-1"):
        run_chain(tmp_path / "run", [Step(good, "good"), Step(bad, "bad")], progress=False)
    # the good step's work stays; the run is not marked finished
    assert (tmp_path / "run" / "out.txt").exists()
    assert '"failed"' in (tmp_path / "run" / "pipeline.json").read_text()


def test_cli_rejects_unknown_step(capsys):
    assert main(["--only", "99_nothing"]) == 2
    assert "unknown step" in capsys.readouterr().err


def test_default_chain_starts_with_data():
    chain = default_chain("tiny")
    assert chain[0].notebook == "00_data" and chain[0].parameters == {"scale": "tiny"}


def test_console_shows_progress_without_kernel_warnings(tmp_path, notebooks):
    """What `make demo` prints: a ✓ line per notebook and none of the kernel's transport warnings
    (the kernel writes to the runner's stderr, so the runner runs in a child process here)."""
    good, _ = notebooks
    code = ("import sys; from fndkit.pipeline import Step, run_chain; "
            f"run_chain({str(tmp_path / 'run')!r}, [Step({good!r}, 'good', {{'value': 3}})])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "without encryption" not in out.stderr and "IPKernelApp" not in out.stderr
    assert out.stderr.splitlines()[-1].startswith("✓ good ")
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [s["label"] for s in record["steps"]] == ["good"] and "training" not in record["steps"][0]


@pytest.mark.parametrize("own", [None, "ACTIVE"])
def test_kernels_wait_passively_unless_told_otherwise(tmp_path, monkeypatch, own):
    """Spinning OpenMP threads crawl on a busy 2-core machine: the kernels get
    OMP_WAIT_POLICY=PASSIVE, a value of the user's own is kept, and the runner's environment is
    left as it was."""
    if own is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", own)
    nb = write_notebook(tmp_path / "env.ipynb", [
        new_code_cell('run_dir = "x"'),
        new_code_cell("import os\nfrom pathlib import Path\n"
                      "Path(run_dir, 'env.txt').write_text(os.environ.get('OMP_WAIT_POLICY', 'unset'))"),
    ])
    run_chain(tmp_path / "run", [Step(nb, "env")], progress=False)
    assert (tmp_path / "run" / "env.txt").read_text() == (own or "PASSIVE")
    assert os.environ.get("OMP_WAIT_POLICY") == own
