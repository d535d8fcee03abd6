"""Executed notebooks carry the run folder as the user gave it: an absolute run folder inside the
project goes into the notebook as the path relative to the project root (what `make demo`'s
``outputs/demo`` was before a plan builder resolved it), so a moved or copied checkout's notebooks
re-run against their own folder; it means the same folder from the kernels' working directory."""

import os

import nbformat
import pytest
from papermill.parameterize import parameterize_notebook

from fndkit.rundir import portable_path, resolve_path
from fndkit.stages.training import StudentParams


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    (root / "notebooks").mkdir(parents=True)
    (root / "fndkit").mkdir()
    (root / "outputs" / "demo").mkdir(parents=True)
    monkeypatch.setenv("FNDKIT_PROJECT_ROOT", str(root))
    return root.resolve()


def test_absolute_inside_the_project_becomes_relative_and_means_the_same_folder(project, monkeypatch):
    given = project / "outputs" / "demo"
    assert portable_path(given) == "outputs/demo"
    assert portable_path(f"{project}/outputs/./demo/") == "outputs/demo"
    monkeypatch.chdir(project / "notebooks")  # the kernels' working directory
    assert resolve_path(portable_path(given)) == given
    monkeypatch.chdir(project)
    assert resolve_path(portable_path(given)) == given


def test_relative_stays_as_given_outside_stays_absolute(project, tmp_path):
    assert portable_path("outputs/demo") == "outputs/demo"
    assert portable_path("../elsewhere/run") == "../elsewhere/run"
    outside = tmp_path / "elsewhere" / "run"
    assert portable_path(outside) == str(outside)
    assert portable_path(project) == str(project)  # the root itself: no folder name to keep


def test_stays_absolute_where_the_relative_form_would_mean_another_folder(project):
    (project / "notebooks" / "outputs" / "demo").mkdir(parents=True)  # shadows it from notebooks/
    assert portable_path(project / "outputs" / "demo") == str(project / "outputs" / "demo")


def test_papermill_injects_the_relative_run_dir(project):
    params = StudentParams(run_dir=str(project / "outputs" / "demo"), seed=3)
    values = params.notebook_parameters()
    assert values["run_dir"] == "outputs/demo"
    assert {k: v for k, v in values.items() if k != "run_dir"} == {
        k: v for k, v in params.to_dict().items() if k != "run_dir"}
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("run_dir = 'x'", metadata={"tags": ["parameters"]})])
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    notebook.metadata["papermill"] = {}
    injected = parameterize_notebook(notebook, values)
    source = next(c.source for c in injected.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'run_dir = "outputs/demo"' in source
    assert str(project) not in source
    assert os.fspath(project) not in values.values()
