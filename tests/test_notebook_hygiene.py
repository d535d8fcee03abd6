"""Committed notebooks: one `parameters` cell that papermill can read in full, no outputs."""

import ast
import json
from pathlib import Path

import papermill as pm
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
EXPECTED = ["00_data", "01_autoencoder", "02_teacher", "03_student", "04_contrastive", "05_cold_start",
            "06_explorer", "07_baselines", "08_false_negatives", "09_results"]
# Notebooks that run no stage (they read what a plan wrote): their parameters, and no Params class
READERS = {"09_results": ["root"]}
STAGE_NOTEBOOKS = [p for p in NOTEBOOKS if p.stem not in READERS]


def test_every_notebook_is_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_papermill_reads_fully(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    source = "".join(tagged[0]["source"])
    assigned = [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets]
    if path.stem in READERS:
        assert assigned == READERS[path.stem]
    else:
        assert {"run_dir", "seed"} <= set(assigned)
    # papermill silently drops a parameter whose line it cannot parse (e.g. '=' inside a comment)
    assert sorted(pm.inspect_notebook(str(path))) == sorted(assigned)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def _cell_defaults(path: Path) -> dict:
    nb = json.loads(path.read_text())
    source = "".join(next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))["source"])
    return {t.id: ast.literal_eval(node.value) for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets}


def _params_of(stem: str):
    from fndkit.plans.execute import KINDS
    found = [kind.params for kind in KINDS.values() if kind.params.notebook == stem]
    assert len(found) == 1, f"{stem} has {len(found)} Params classes"
    return found[0]


@pytest.mark.parametrize("path", STAGE_NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_the_stage_params(path):
    """The cell's names, order and defaults are the stage's Params fields: one schema."""
    cls = _params_of(path.stem)
    cell = _cell_defaults(path)
    assert list(cell) == cls.field_names()
    assert cell == cls.defaults()
    assert cls().to_dict() == cell


@pytest.mark.parametrize("path", STAGE_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_builds_params_from_its_cell(path):
    """The cell after the parameters builds the stage's Params from the notebook's globals, so a
    papermill parameter cannot be dropped on the way to the stage."""
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    at = next(i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", []))
    after = "".join(code[at + 1]["source"]) + "".join(code[at + 2]["source"])
    assert "Params.from_namespace(globals())" in after
