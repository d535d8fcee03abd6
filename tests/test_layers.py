"""The package's imports go one way: config/artifacts → data → models → losses/objectives →
train/evaluate/coldstart/rundir → stages → viz/results/progress → plans.execute (the executor) →
plans.study / plans.search → plan builders (chain, paper, lab, distill, bench, run) → the command
line, with no circles: nothing below the plan builders imports them, and results never import a plan.

Every ``import`` statement counts, function-local ones too: hiding an upward import inside a
function is still an upward import. Third-party imports are not checked.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fndkit"

LAYERS = [
    {"fndkit", "fndkit.config", "fndkit.artifacts", "fndkit.repro", "fndkit.distributed"},
    {"fndkit.data"},
    {"fndkit.models"},
    {"fndkit.losses", "fndkit.augment", "fndkit.metrics", "fndkit.objectives", "fndkit.baselines",
     "fndkit.distillation"},
    {"fndkit.train", "fndkit.evaluate", "fndkit.coldstart", "fndkit.rundir", "fndkit.feeding",
     "fndkit.pretrain"},
    {"fndkit.stages"},
    {"fndkit.viz", "fndkit.results", "fndkit.progress"},  # results: read stage folders, never a plan
    {"fndkit.plans.execute"},                         # Job, the stage kinds, run_plan, Local
    {"fndkit.plans.study", "fndkit.plans.search"},    # the study storage as a dispatcher; search as a transformer
    {"fndkit.plans", "fndkit.plans.chain", "fndkit.plans.paper", "fndkit.plans.lab", "fndkit.plans.distill",
     "fndkit.bench", "fndkit.run"},  # plan builders and benches
    {"fndkit.cli", "fndkit.__main__"},                # the command line
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if module == name or (name != "fndkit" and module.startswith(name + ".")):
                best = i
    if best is None and module == "fndkit":
        return 0
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py; add it to one")
    return best


def imports_of(path: Path) -> set[str]:
    """fndkit modules imported anywhere in ``path`` (absolute names)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fndkit"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "fndkit":
                continue
            for alias in node.names:  # `from . import x` may name a submodule rather than a symbol
                sub = PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))
                found.add(f"{target}.{alias.name}" if sub.with_suffix(".py").exists() or sub.is_dir() else target)
    return found - {me}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: {m for m in imports_of(p) if m in MODULES} for name, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    mine = layer_of(module)
    upward = sorted(m for m in GRAPH[module] if layer_of(m) > mine)
    assert not upward, f"{module} (layer {mine}) imports {upward} from a higher layer"


def test_no_import_cycles():
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in GRAPH[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    # a package's __init__ importing its own submodules is not a circle
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") or c[0].startswith(m + ".")
                                         for m in c)]
    assert not real, "import cycles: " + "; ".join(" -> ".join(c) for c in real)


def test_layers_catch_an_upward_import(tmp_path):
    """The checker itself: a data module importing the trainer is flagged."""
    fake = PACKAGE / "data" / "_layer_probe.py"
    assert not fake.exists()
    fake.write_text("from ..train import fit\n")
    try:
        assert "fndkit.train" in imports_of(fake)
        assert layer_of("fndkit.train") > layer_of(module_name(fake))
    finally:
        fake.unlink()
